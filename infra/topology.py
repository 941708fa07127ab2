"""The system's shape, described once and independent of any cloud: the tiers, how many
hosts of what size each has per stack, and which tier may reach which port on which other.

Providers (infra/providers/) turn this into networks, firewalls and hosts; the tests check
every firewall rule a provider declares against `ACCESS` and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

ANYWHERE = "anywhere"  # the whole internet
ADMIN = "admin"  # the stack's admin CIDRs (config: adminCidrs)


@dataclass(frozen=True)
class Tier:
    name: str
    public: bool  # gets a public address and sits in a public subnet
    description: str
    data_volume: bool = False  # a separate encrypted volume for data


TIERS: dict[str, Tier] = {
    tier.name: tier
    for tier in (
        Tier("lb", public=True, description="nginx load balancer, the only public entry"),
        Tier("bastion", public=True, description="SSH jump host"),
        Tier("api", public=False, description="FastAPI under gunicorn"),
        Tier("workers", public=False, description="Celery workers (and beat on the first)"),
        Tier("data", public=False, description="MongoDB, Redis, RabbitMQ", data_volume=True),
    )
}


@dataclass(frozen=True)
class Rule:
    """`source` (a tier, ANYWHERE or ADMIN) may open TCP `port` on hosts of `target`."""

    source: str
    target: str
    port: int
    description: str


API_PORT = 8000
PORTS = {
    "http": 80,
    "https": 443,
    "ssh": 22,
    "api": API_PORT,
    "mongodb": 27017,
    "redis": 6379,
    "rabbitmq": 5672,
    "rabbitmq_management": 15672,
}

ACCESS: tuple[Rule, ...] = (
    Rule(ANYWHERE, "lb", 80, "HTTP from the internet"),
    Rule(ANYWHERE, "lb", 443, "HTTPS from the internet"),
    Rule("lb", "api", API_PORT, "API from the load balancer"),
    *(
        Rule(source, "data", port, f"{service} from {source}")
        for source in ("api", "workers")
        for service, port in (("MongoDB", 27017), ("Redis", 6379), ("RabbitMQ", 5672))
    ),
    Rule("data", "data", 27017, "MongoDB replica set members"),
    Rule("bastion", "data", 15672, "RabbitMQ management through the bastion"),
    Rule(ADMIN, "bastion", 22, "SSH from the admin networks"),
    *(Rule("bastion", target, 22, "SSH through the bastion") for target in ("lb", "api", "workers", "data")),
)


@dataclass(frozen=True)
class TierSize:
    count: int
    size: str  # a provider-neutral size class: nano, micro, small, medium, large, xlarge
    root_gb: int = 20
    data_gb: int = 0


def rules_into(tier: str) -> list[Rule]:
    return [rule for rule in ACCESS if rule.target == tier]
