"""Hosts: a Tier of EC2 instances per tier of the topology, on a pinned machine image.

Data nodes keep their instance when the image moves (ignore_changes), and their data volume
is a separate, encrypted EBS volume that outlives the instance.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.config import AMI_ID, StackConfig
from infra.providers import Host
from infra.providers.aws.network import Firewalls, Network
from topology import TIERS

# Debian's official AMIs (https://wiki.debian.org/Cloud/AmazonEC2Image).
DEBIAN_OWNER = "136693071363"
INSTANCE_TYPES = {
    "nano": "t3.nano",
    "micro": "t3.micro",
    "small": "t3.small",
    "medium": "t3.medium",
    "large": "m6i.large",
    "xlarge": "m6i.xlarge",
    "compute-large": "c6i.large",
    "memory-large": "r6i.large",
}
# The data volume's device name as EC2 is asked for it. On Nitro instances it shows up as an
# NVMe device whose name varies; Ansible finds it by the volume id (its serial) instead.
DATA_DEVICE = "/dev/sdf"


def machine_image(config: StackConfig) -> pulumi.Output[str]:
    """The stack's pinned image id: given as is, or looked up by its exact Debian name."""
    if AMI_ID.match(config.ami):
        return pulumi.Output.from_input(config.ami)
    return aws.ec2.get_ami_output(
        owners=[DEBIAN_OWNER],
        filters=[
            aws.ec2.GetAmiFilterArgs(name="name", values=[config.ami]),
            aws.ec2.GetAmiFilterArgs(name="architecture", values=["x86_64"]),
        ],
    ).id


def cloud_init(hostname: str, config: StackConfig) -> str:
    """Prepare a host for Ansible: admin user with the key, python3, hostname, no passwords."""
    document = {
        "hostname": hostname,
        "preserve_hostname": False,
        "users": [
            {
                "name": config.ssh_user,
                "groups": ["sudo"],
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [config.ssh_public_key],
            }
        ],
        "disable_root": True,
        "ssh_pwauth": False,
        "package_update": True,
        "packages": ["python3", "python3-apt", "sudo"],
    }
    return "#cloud-config\n" + json.dumps(document, indent=2)


class Tier(pulumi.ComponentResource):
    """The hosts of one tier, spread round robin over the stack's zones."""

    def __init__(
        self,
        name: str,
        config: StackConfig,
        network: Network,
        firewalls: Firewalls,
        ami: pulumi.Input[str],
        key: aws.ec2.KeyPair,
        profile: pulumi.Input[str] | None = None,
        data_volume_tags: dict[str, str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("microservices:aws:Tier", name, None, opts)
        tier = TIERS[name]
        size = config.tiers[name]
        subnets = network.public_subnets if tier.public else network.private_subnets
        child = pulumi.ResourceOptions(parent=self)
        self.hosts: list[Host] = []
        self.instances: list[aws.ec2.Instance] = []
        for number in range(1, size.count + 1):
            zone = config.zones[(number - 1) % len(config.zones)]
            # A host starts once its subnet routes out (cloud-init's package update needs it).
            # Hosts that hold data are never replaced by a new image (or new first-boot data),
            # and a production stack will not delete them at all.
            instance_opts = pulumi.ResourceOptions(parent=self, depends_on=[network.routes[tier.public, zone]])
            if tier.data_volume:
                instance_opts = pulumi.ResourceOptions.merge(
                    instance_opts, pulumi.ResourceOptions(ignore_changes=["ami", "userData"], protect=config.production)
                )
            hostname = f"{config.stack}-{name}-{number}"
            tags = {**config.base_tags(name), "Name": hostname}
            instance = aws.ec2.Instance(
                hostname,
                ami=ami,
                instance_type=INSTANCE_TYPES[size.size],
                subnet_id=subnets[zone].id,
                vpc_security_group_ids=[firewalls.groups[name].id],
                key_name=key.key_name,
                iam_instance_profile=profile,
                associate_public_ip_address=tier.public,
                user_data=cloud_init(hostname, config),
                root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                    volume_size=size.root_gb, volume_type="gp3", encrypted=True, delete_on_termination=True
                ),
                # IMDSv2 with one hop: the host's own processes (the registry's credential
                # helper, the backup upload) get the role's credentials; its containers do not.
                metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                    http_tokens="required", http_endpoint="enabled", http_put_response_hop_limit=1
                ),
                volume_tags=tags,
                tags=tags,
                opts=instance_opts,
            )
            self.instances.append(instance)
            public_ip = None
            if tier.public:
                # An Elastic IP keeps the public address across stops and replacements.
                public_ip = aws.ec2.Eip(hostname, instance=instance.id, domain="vpc", tags=tags, opts=child).public_ip
            if tier.data_volume:
                volume = aws.ebs.Volume(
                    f"{hostname}-data",
                    availability_zone=zone,
                    size=size.data_gb,
                    type="gp3",
                    encrypted=True,
                    tags={**tags, "Name": f"{hostname}-data", "purpose": "data", **(data_volume_tags or {})},
                    opts=pulumi.ResourceOptions(parent=self, protect=config.production),
                )
                # A mounted volume will not detach from a running instance: stop it first, or a
                # `pulumi destroy` (or a replaced data node) waits on the detach until it fails.
                aws.ec2.VolumeAttachment(
                    f"{hostname}-data",
                    device_name=DATA_DEVICE,
                    volume_id=volume.id,
                    instance_id=instance.id,
                    stop_instance_before_detaching=True,
                    opts=child,
                )
            self.hosts.append(
                Host(hostname, name, zone, instance.private_ip, public_ip, volume.id if tier.data_volume else None)
            )
        self.register_outputs({"hosts": [h.name for h in self.hosts]})
