"""The Ansible inventory the rollout uses, built from a Deployment (any provider) and the
stack's configuration.

Groups: the tiers (topology.TIERS). Every host but the bastion is reached through the
bastion, since only the load balancer and the bastion have public addresses. The SSH settings
travel in the inventory, so a controller with an empty known_hosts and no ssh configuration
reaches every host without a prompt: a new host key is accepted the first time and checked
ever after (StrictHostKeyChecking=accept-new), for the bastion too. The jump is a ProxyCommand
rather than ProxyJump because options given on the command line do not reach a ProxyJump host.
"""

from __future__ import annotations

import shlex
from typing import Any

import pulumi

from infra.config import StackConfig
from infra.providers import Deployment
from topology import TIERS

GROUPS = tuple(TIERS)


def ssh_options(private_key_file: str | None, known_hosts_file: str | None) -> list[str]:
    """The options every SSH connection of the stack takes, the jump's included."""
    options = ["-o", "StrictHostKeyChecking=accept-new"]
    if known_hosts_file:
        options += ["-o", f"UserKnownHostsFile={known_hosts_file}"]
    if private_key_file:
        options += ["-o", "IdentitiesOnly=yes", "-i", private_key_file]
    return options


def render(
    hosts: dict[str, list[dict[str, Any]]],
    *,
    bastion_address: str,
    ssh_user: str,
    app_image: str,
    lb_public_ip: str,
    admin_cidrs: list[str],
    private_key_file: str | None = None,
    known_hosts_file: str | None = None,
    extra_vars: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The inventory, from plain values: hosts per tier, each {name, zone, private_ip, public_ip,
    and a data node's data_volume_id or data_volume_device}."""
    children: dict[str, Any] = {}
    for group in GROUPS:
        members = {}
        for host in hosts[group]:
            address = host["public_ip"] if group == "bastion" else host["private_ip"]
            variables = {"ansible_host": address, "private_ip": host["private_ip"], "zone": host["zone"]}
            for optional in ("public_ip", "data_volume_id", "data_volume_device"):
                if host.get(optional):
                    variables[optional] = host[optional]
            members[host["name"]] = variables
        children[group] = {"hosts": members}
    options = ssh_options(private_key_file, known_hosts_file)
    jump = shlex.join(["ssh", "-W", "%h:%p", "-q", *options, f"{ssh_user}@{bastion_address}"])
    children["behind_bastion"] = {
        "children": {group: {} for group in GROUPS if group != "bastion"},
        "vars": {"ansible_ssh_common_args": shlex.join([*options, "-o", f"ProxyCommand={jump}"])},
    }
    variables = {
        "ansible_user": ssh_user,
        "ansible_ssh_common_args": shlex.join(options),
        "app_image": app_image,
        "lb_public_ip": lb_public_ip,
        "admin_cidrs": admin_cidrs,
        **(extra_vars or {}),
    }
    if private_key_file:
        variables["ansible_ssh_private_key_file"] = private_key_file
    return {"all": {"vars": variables, "children": children}}


def stack_vars(config: StackConfig) -> dict[str, Any]:
    """What every provider's stack hands Ansible from its configuration."""
    variables: dict[str, Any] = {
        "production": config.production,  # HTTPS only (roles/lb refuses otherwise)
        "mongodb_members": config.mongodb_members,  # the first data nodes run MongoDB
    }
    if config.domain:
        variables.update(tls_domain=config.domain, acme_email=config.acme_email)
    if config.acme_directory:
        variables["acme_directory"] = config.acme_directory
    if config.images:
        variables["images"] = config.images
    if config.image_delivery:
        variables["image_delivery"] = config.image_delivery
    return variables


def build(deployment: Deployment, config: StackConfig) -> pulumi.Output[dict[str, Any]]:
    """The inventory as a Pulumi output, once every address is known."""
    hosts = {
        tier: pulumi.Output.all(
            *[
                pulumi.Output.all(
                    name=h.name,
                    zone=h.zone,
                    private_ip=h.private_ip,
                    public_ip=h.public_ip,
                    data_volume_id=h.data_volume_id,
                    data_volume_device=h.data_volume_device,
                )
                for h in deployment.hosts[tier]
            ]
        )
        for tier in GROUPS
    }
    return pulumi.Output.all(
        hosts=pulumi.Output.all(**hosts),
        bastion=deployment.bastion_public_ip,
        lb=deployment.lb_public_ip,
        image=deployment.app_image,
        extra=pulumi.Output.all(**{**stack_vars(config), **deployment.inventory_vars}),
    ).apply(
        lambda args: render(
            {tier: list(members) for tier, members in args["hosts"].items()},
            bastion_address=args["bastion"],
            ssh_user=config.ssh_user,
            app_image=args["image"],
            lb_public_ip=args["lb"],
            admin_cidrs=config.admin_cidrs,
            private_key_file=config.ssh_private_key_file,
            known_hosts_file=config.ssh_known_hosts_file,
            extra_vars=args["extra"],
        )
    )
