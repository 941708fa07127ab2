"""The Ansible inventory the rollout uses, built from a Deployment (any provider).

Groups: lb, api, workers, data, bastion. Every host but the bastion is reached through the
bastion (ProxyJump), since only the load balancer and the bastion have public addresses.
"""

from __future__ import annotations

from typing import Any

import pulumi

from infra.providers import Deployment

GROUPS = {"lb": "lb", "api": "api", "workers": "workers", "data": "data", "bastion": "bastion"}


def build(deployment: Deployment, ssh_user: str) -> pulumi.Output[dict[str, Any]]:
    def render(args: dict[str, Any]) -> dict[str, Any]:
        bastion_ip = args["bastion"]
        children: dict[str, Any] = {}
        for tier, group in GROUPS.items():
            hosts = {}
            for host, private_ip, public_ip in args["hosts"][tier]:
                address = public_ip if tier == "bastion" else private_ip
                variables = {"ansible_host": address, "private_ip": private_ip, "zone": host.zone}
                if public_ip:
                    variables["public_ip"] = public_ip
                hosts[host.name] = variables
            children[group] = {"hosts": hosts}
        jump = f"-o ProxyJump={ssh_user}@{bastion_ip} -o StrictHostKeyChecking=accept-new"
        children["behind_bastion"] = {
            "children": {group: {} for tier, group in GROUPS.items() if tier != "bastion"},
            "vars": {"ansible_ssh_common_args": jump},
        }
        return {
            "all": {
                "vars": {"ansible_user": ssh_user, "app_image": args["image"], "lb_public_ip": args["lb"]},
                "children": children,
            }
        }

    hosts = {
        tier: pulumi.Output.all(*[pulumi.Output.all(h.private_ip, h.public_ip) for h in deployment.hosts[tier]]).apply(
            lambda pairs, tier=tier: [(h, *pair) for h, pair in zip(deployment.hosts[tier], pairs, strict=True)]
        )
        for tier in GROUPS
    }
    return pulumi.Output.all(
        hosts=pulumi.Output.all(**hosts),
        bastion=deployment.bastion_public_ip,
        lb=deployment.lb_public_ip,
        image=deployment.app_image,
    ).apply(render)
