"""Bring your own machines: hosts that already exist (on-premises machines, or a cloud without a
provider module here), listed per tier in the stack's `machines`. Nothing is created: the
Deployment names them, and the stack hands Ansible the services around them that a cloud would
give (a registry with a user and password, an S3 API for the backups, a certificate authority the
hosts trust), so `pulumi up` then `fleet setup` give them the same rollout as a cloud's hosts."""

from __future__ import annotations

import pulumi

from infra.config import StackConfig
from infra.providers import Deployment, Host


def deploy(config: StackConfig) -> Deployment:
    hosts = {
        tier: [
            Host(
                name=machine.name,
                tier=tier,
                zone=machine.zone,
                private_ip=pulumi.Output.from_input(machine.private_ip),
                public_ip=pulumi.Output.from_input(machine.public_ip) if machine.public_ip else None,
                data_volume_device=machine.data_volume,
            )
            for machine in machines
        ]
        for tier, machines in config.machines.items()
    }
    assert config.app_image is not None  # infra.config requires it of this provider
    inventory_vars: dict[str, pulumi.Input] = {}
    if config.registry is not None:
        inventory_vars.update(
            registry_server=config.registry.server,
            registry_username=config.registry.username,
            registry_password=config.registry.password,
        )
    if config.object_store is not None:
        store = config.object_store
        inventory_vars.update(
            backup_target="s3",
            backup_bucket=store.bucket,
            backup_s3_endpoint=store.endpoint,
            backup_s3_region=store.region,
            backup_s3_access_key_id=store.access_key_id,
            backup_s3_secret_access_key=store.secret_access_key,
        )
    if config.ca_certificate:
        inventory_vars["trusted_ca_certificate"] = config.ca_certificate
    lb_public_ip = hosts["lb"][0].public_ip
    if config.lb_virtual_ip:
        # keepalived on the load balancers (roles/lb) holds it on a live one: clients connect there.
        inventory_vars["lb_virtual_ip"] = config.lb_virtual_ip
        lb_public_ip = pulumi.Output.from_input(config.lb_virtual_ip)
    return Deployment(
        hosts=hosts,
        lb_public_ip=lb_public_ip,
        bastion_public_ip=hosts["bastion"][0].public_ip,
        app_image=pulumi.Output.from_input(config.app_image),
        inventory_vars=inventory_vars,
    )
