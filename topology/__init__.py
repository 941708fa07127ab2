"""The system's shape, written once in Python and independent of any cloud: the tiers, the
ports, which tier may reach which port on which other, and the secrets a stack generates.
The app's processes and its environment contract are in `topology.app`.

Everything else reads these, or is checked against them:

- the Pulumi program (infra/) builds networks, firewalls and hosts from them;
- `python -m topology` writes Ansible's copy, ansible/group_vars/all/topology.yml, which a
  test keeps equal to it;
- devstack, fleet-health and the tests import them;
- files that cannot import them (docker-compose.yml, nginx/, Dockerfile.app, app/) are
  checked against them by tests/test_topology.py.

Standard library only: the Pulumi program's virtualenv and the installed fleet-health tool
import it without the app's dependencies.
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
    runs_app: bool = False  # runs containers of the app image (and so pulls it)


# Also the Ansible inventory's groups, in this order.
TIERS: dict[str, Tier] = {
    tier.name: tier
    for tier in (
        Tier("lb", public=True, description="nginx load balancer, the only public entry"),
        Tier("bastion", public=True, description="SSH jump host"),
        Tier("api", public=False, description="FastAPI under gunicorn", runs_app=True),
        Tier("workers", public=False, description="Celery workers (and beat on the first)", runs_app=True),
        Tier("data", public=False, description="MongoDB, Redis, RabbitMQ", data_volume=True),
    )
}
APP_TIERS = tuple(name for name, tier in TIERS.items() if tier.runs_app)


@dataclass(frozen=True)
class Rule:
    """`source` (a tier, ANYWHERE or ADMIN) may open TCP `port` (to `last_port`, for a range) on
    hosts of `target`."""

    source: str
    target: str
    port: int
    description: str
    last_port: int | None = None

    @property
    def ports(self) -> str:
        """`port`, or `port-last_port` for a range (as nft writes it)."""
        return f"{self.port}-{self.last_port}" if self.last_port else str(self.port)


# The API listens on this port in its container and on its host's private address.
API_PORT = 8000
# The ports the firewalls open: the load balancer's, SSH, the API's, and the data services'
# on the data nodes (published there from each container's own port).
PORTS = {
    "http": 80,
    "https": 443,
    "ssh": 22,
    "api": API_PORT,
    "mongodb": 27017,
    "redis": 6379,
    # Redis Sentinel on each data node of a Redis with replicas (REDIS_SENTINEL_MIN_NODES).
    "redis_sentinel": 26379,
    "rabbitmq": 5672,
    "rabbitmq_management": 15672,
    # A RabbitMQ cluster's nodes find each other through epmd and talk over Erlang distribution.
    "rabbitmq_epmd": 4369,
    "rabbitmq_cluster": 25672,
    # The CLI tools listen here (to RABBITMQ_CLI_LAST_PORT) for the other nodes' answers to a
    # cluster-wide command (list_queues).
    "rabbitmq_cli": 35672,
}
RABBITMQ_CLI_LAST_PORT = PORTS["rabbitmq_cli"] + 10  # RabbitMQ's own range: 11 ports

ACCESS: tuple[Rule, ...] = (
    Rule(ANYWHERE, "lb", PORTS["http"], "HTTP from the internet"),
    Rule(ANYWHERE, "lb", PORTS["https"], "HTTPS from the internet"),
    Rule("lb", "api", API_PORT, "API from the load balancer"),
    *(
        Rule(source, "data", PORTS[service], f"{name} from {source}")
        for source in APP_TIERS
        for service, name in (
            ("mongodb", "MongoDB"),
            ("redis", "Redis"),
            ("redis_sentinel", "Redis Sentinel"),
            ("rabbitmq", "RabbitMQ"),
        )
    ),
    Rule("data", "data", PORTS["mongodb"], "MongoDB replica set members"),
    Rule("data", "data", PORTS["redis"], "Redis replicas and Sentinels to the Redis servers"),
    Rule("data", "data", PORTS["redis_sentinel"], "Redis Sentinels to each other"),
    Rule("data", "data", PORTS["rabbitmq_epmd"], "RabbitMQ cluster peers (epmd)"),
    Rule("data", "data", PORTS["rabbitmq_cluster"], "RabbitMQ cluster peers (Erlang distribution)"),
    Rule(
        "data",
        "data",
        PORTS["rabbitmq_cli"],
        "RabbitMQ cluster peers to the CLI tools",
        last_port=RABBITMQ_CLI_LAST_PORT,
    ),
    Rule("bastion", "data", PORTS["rabbitmq_management"], "RabbitMQ management through the bastion"),
    Rule(ADMIN, "bastion", PORTS["ssh"], "SSH from the admin networks"),
    *(Rule("bastion", target, PORTS["ssh"], "SSH through the bastion") for target in TIERS if target != "bastion"),
)

# The stack's generated secrets (infra/secrets.py makes them, the lab too); the rollout
# needs every one (ansible: app_secrets.<name>).
SECRETS = (
    "mongo_root_password",
    "mongo_app_password",
    "redis_password",
    "redis_admin_password",
    "redis_sentinel_password",
    "rabbitmq_admin_password",
    "rabbitmq_password",
    "rabbitmq_erlang_cookie",
    "api_key",
)

# Redis's users (ACL rules). The app's (API, workers and beat: cache, results, beat's schedule)
# may not reconfigure, flush or inspect the server (@admin, @dangerous: CONFIG, FLUSHALL, KEYS,
# ACL, DEBUG, INFO ...); its password is `redis_password`. The default user is the operators'
# (health checks, `fleet health`, backups), with `redis_admin_password`. Compose, Ansible and
# the test stack each write these rules into their Redis configuration (a test checks).
REDIS_USERS = {
    "default": {"password": "redis_admin_password", "rules": "~* &* +@all"},
    "app": {"password": "redis_password", "rules": "~* &* +@all -@admin -@dangerous"},
}
REDIS_APP_USER = "app"

# MongoDB runs on the first `mongodb_members` data nodes (the stack's mongodbMembers; every one
# by default). From three members on they form this replica set; fewer run a single server.
MONGODB_REPLICA_SET = "rs0"
MONGODB_REPLICA_SET_MIN_MEMBERS = 3


# RabbitMQ runs on every data node from this many on (a cluster: quorum queues with a member on
# each node), else on the first: two nodes would stop together when either is lost.
RABBITMQ_CLUSTER_MIN_NODES = 3


def rabbitmq_hosts(data_hosts: list[str]) -> list[str]:
    """The data nodes that run RabbitMQ."""
    return data_hosts if len(data_hosts) >= RABBITMQ_CLUSTER_MIN_NODES else data_hosts[:1]


# Redis runs on every data node from this many on: the first starts as the primary, the others
# as its replicas, and a Sentinel on each node (a majority of them agree) promotes a replica when
# the primary is lost. Fewer data nodes run one Redis, on the first: two Sentinels could not
# outvote a lost node. The Sentinels know the primary by this name (the app's
# REDIS_SENTINEL_MASTER).
REDIS_SENTINEL_MIN_NODES = 3
REDIS_SENTINEL_MASTER = "app"


def redis_hosts(data_hosts: list[str]) -> list[str]:
    """The data nodes that run Redis (and, from REDIS_SENTINEL_MIN_NODES on, a Sentinel each)."""
    return data_hosts if len(data_hosts) >= REDIS_SENTINEL_MIN_NODES else data_hosts[:1]


def mongodb_replica_set(members: int) -> str:
    """The replica set that `members` MongoDB servers form, or "" for a single server."""
    return MONGODB_REPLICA_SET if members >= MONGODB_REPLICA_SET_MIN_MEMBERS else ""


# The release: the app image's version (Dockerfile.app's VERSION, compose's APP_VERSION and
# APP_IMAGE) and the Python project's (pyproject.toml reads it from here).
VERSION = "0.1.0"

# The official image of each service the stack runs beside the app, and the app's base image:
# compose's defaults (<NAME>_IMAGE), `make env`'s .env (scripts/envfile.py) and Ansible's
# default_images (topology.yml) take them from here, or are checked against them.
IMAGES = {
    "python": "python:3.11-slim",
    "mongodb": "mongo:7.0",
    "redis": "redis:7.2",
    "rabbitmq": "rabbitmq:3.13-management",
    "nginx": "nginx:1.30",
}
# Each one's variable in compose and the .env file.
IMAGE_VARIABLES = {"python": "PYTHON_IMAGE", "mongodb": "MONGO_IMAGE", "redis": "REDIS_IMAGE",
                   "rabbitmq": "RABBITMQ_IMAGE", "nginx": "NGINX_IMAGE"}  # fmt: skip
