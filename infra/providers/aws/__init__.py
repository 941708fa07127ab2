"""AWS: the topology as a VPC, security groups, EC2 instances with instance roles, an ECR
image, a backup bucket and snapshot schedules, and a network load balancer in front of several
load balancer hosts. One ComponentResource per concern."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.config import StackConfig
from infra.providers import Deployment
from infra.providers.aws.backups import BackupBucket, Snapshots
from infra.providers.aws.front_door import FrontDoor
from infra.providers.aws.hosts import Tier, machine_image
from infra.providers.aws.image import AppImage
from infra.providers.aws.network import Firewalls, Network
from topology import APP_TIERS, TIERS


def deploy(config: StackConfig) -> Deployment:
    network = Network("network", config)
    firewalls = Firewalls("firewalls", config, network)
    image = AppImage("app-image", config)
    backups = BackupBucket("backups", config)
    snapshots = Snapshots("snapshots", config)
    key = aws.ec2.KeyPair("admin", public_key=config.ssh_public_key, tags=config.base_tags())
    ami = machine_image(config)

    profiles = {"data": backups.writer.profile.name}
    if image.pull_role:
        profiles.update({tier: image.pull_role.profile.name for tier in APP_TIERS})
    tiers = {
        name: Tier(
            name,
            config,
            network,
            firewalls,
            ami,
            key,
            profile=profiles.get(name),
            data_volume_tags=snapshots.tag if TIERS[name].data_volume else None,
        )
        for name in TIERS
    }

    inventory_vars: dict[str, pulumi.Input] = {
        "aws_region": pulumi.Config("aws").require("region"),
        "backup_target": "s3",
        "backup_bucket": backups.bucket.id,
    }
    if image.registry is not None:
        # Hosts log in to ECR with their instance role (Debian's amazon-ecr-credential-helper).
        inventory_vars.update(registry_server=image.registry, registry_credential_helper="ecr-login")
    lb_public_ip, front_door = tiers["lb"].hosts[0].public_ip, None
    if len(tiers["lb"].instances) > 1:
        front = FrontDoor("front-door", config, network, [instance.id for instance in tiers["lb"].instances])
        addresses = [eip.public_ip for eip in front.addresses]
        lb_public_ip, front_door = addresses[0], {"dns_name": front.balancer.dns_name, "addresses": addresses}
    return Deployment(
        hosts={name: tier.hosts for name, tier in tiers.items()},
        lb_public_ip=lb_public_ip,
        front_door=front_door,
        bastion_public_ip=tiers["bastion"].hosts[0].public_ip,
        app_image=image.reference,
        inventory_vars=inventory_vars,
    )
