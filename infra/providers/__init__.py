"""Cloud providers: each module maps the topology (topology/) to one cloud's resources and
returns a `Deployment`. Adding a cloud means adding a module here and a line in PROVIDERS;
the topology, the secrets and the outputs stay as they are.

This package's own module imports nothing of infra/: the configuration (infra/config.py)
reads PROVIDERS from it, and each provider module reads the configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi


@dataclass
class Host:
    name: str
    tier: str
    zone: str
    private_ip: pulumi.Output[str]
    public_ip: pulumi.Output[str] | None = None
    data_volume_id: pulumi.Output[str] | None = None  # the data volume's id, which Ansible finds it by
    data_volume_device: str | None = None  # or its device, where the provider knows it (hosts)


@dataclass
class Deployment:
    """What every provider hands back: hosts per tier, the public entry points and the image."""

    hosts: dict[str, list[Host]]
    lb_public_ip: pulumi.Output[str]  # where clients connect: a load balancer's, or the front door's first
    bastion_public_ip: pulumi.Output[str]
    app_image: pulumi.Output[str]
    # Provider-specific variables for Ansible: the registry and how to log in to it, the backup target.
    inventory_vars: dict[str, pulumi.Input] = field(default_factory=dict)
    # A network load balancer in front of several load balancer hosts: {dns_name, addresses}.
    front_door: dict[str, pulumi.Input] | None = None


# Each module has `deploy(config: StackConfig) -> Deployment` (infra.program calls it).
# aws creates the hosts and the services around them; hosts takes existing machines as they are.
PROVIDERS = {"aws": "infra.providers.aws", "hosts": "infra.providers.hosts"}
