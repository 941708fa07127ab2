"""The Pulumi program: configuration → provider resources → outputs for the rollout."""

from __future__ import annotations

import importlib

import pulumi

from infra import config as stack_config
from infra import inventory
from infra.providers import PROVIDERS, Deployment
from infra.secrets import Secrets


def deploy(config: stack_config.StackConfig) -> Deployment:
    """Declare the stack's resources on its provider."""
    return importlib.import_module(PROVIDERS[config.provider]).deploy(config)


def run() -> None:
    config = stack_config.load()  # raises ConfigError before any resource is declared
    secrets = Secrets("secrets")
    deployment = deploy(config)

    pulumi.export(
        "hosts",
        {
            tier: [
                {"name": h.name, "zone": h.zone, "private_ip": h.private_ip, "public_ip": h.public_ip} for h in hosts
            ]
            for tier, hosts in deployment.hosts.items()
        },
    )
    pulumi.export("lb_public_ip", deployment.lb_public_ip)
    if deployment.front_door is not None:
        pulumi.export("front_door", deployment.front_door)
    pulumi.export("bastion_public_ip", deployment.bastion_public_ip)
    pulumi.export("ssh_user", config.ssh_user)
    pulumi.export("app_image", deployment.app_image)
    pulumi.export("secrets", secrets.as_output())
    pulumi.export("ansible_inventory", inventory.build(deployment, config))
