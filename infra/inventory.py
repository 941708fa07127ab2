"""The Ansible inventory the rollout uses, built from a Deployment (any provider).

Groups: the tiers (topology.TIERS). Every host but the bastion is reached through the
bastion (ProxyJump), since only the load balancer and the bastion have public addresses.
"""

from __future__ import annotations

from typing import Any

import pulumi

from infra.providers import Deployment
from topology import TIERS

GROUPS = tuple(TIERS)


def render(
    hosts: dict[str, list[dict[str, Any]]],
    *,
    bastion_address: str,
    ssh_user: str,
    app_image: str,
    lb_public_ip: str,
    admin_cidrs: list[str],
    jump_options: str = "-o StrictHostKeyChecking=accept-new",
    extra_vars: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The inventory, from plain values: hosts per tier, each {name, zone, private_ip, public_ip}.

    Also used by the local lab (ansible/lab/lab.py), so both inventories have one shape.
    """
    children: dict[str, Any] = {}
    for group in GROUPS:
        members = {}
        for host in hosts[group]:
            address = host["public_ip"] if group == "bastion" else host["private_ip"]
            variables = {"ansible_host": address, "private_ip": host["private_ip"], "zone": host["zone"]}
            for optional in ("public_ip", "data_volume_id"):
                if host.get(optional):
                    variables[optional] = host[optional]
            members[host["name"]] = variables
        children[group] = {"hosts": members}
    children["behind_bastion"] = {
        "children": {group: {} for group in GROUPS if group != "bastion"},
        "vars": {"ansible_ssh_common_args": f"-o ProxyJump={ssh_user}@{bastion_address} {jump_options}".strip()},
    }
    variables = {
        "ansible_user": ssh_user,
        "app_image": app_image,
        "lb_public_ip": lb_public_ip,
        "admin_cidrs": admin_cidrs,
        **(extra_vars or {}),
    }
    return {"all": {"vars": variables, "children": children}}


def build(deployment: Deployment, ssh_user: str, admin_cidrs: list[str]) -> pulumi.Output[dict[str, Any]]:
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
        extra=pulumi.Output.all(**deployment.inventory_vars),
    ).apply(
        lambda args: render(
            {tier: list(members) for tier, members in args["hosts"].items()},
            bastion_address=args["bastion"],
            ssh_user=ssh_user,
            app_image=args["image"],
            lb_public_ip=args["lb"],
            admin_cidrs=admin_cidrs,
            extra_vars=args["extra"],
        )
    )
