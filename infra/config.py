"""The stack's configuration, read once and checked before any resource is declared.

Every problem found is reported together in one ConfigError, whose message says what to
change (`pulumi config set ...`).

Most keys are the same for every provider. The aws provider places hosts, so it reads their
sizes, zones, network and machine image; the hosts provider takes existing machines as they
are (`machines`), with the services around them that a cloud would give: a registry, an S3 API
for backups, and a certificate authority the hosts trust.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

import pulumi

from infra.providers import PROVIDERS
from topology import TIERS

SIZE_CLASSES = ("nano", "micro", "small", "medium", "large", "xlarge", "compute-large", "memory-large")
# Members of a MongoDB replica set: one, or an odd number so a majority can elect a primary.
DATA_COUNTS = (1, 3, 5, 7)
# Tiers that a production stack spreads over at least two availability zones.
SPREAD_TIERS = ("api", "workers", "data")
# The machine image: an image id, or the exact name of one of Debian's images (the same name
# in every region). Pinned per stack, so a new release of Debian replaces no host by itself.
AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")
AMI_NAME = re.compile(r"^debian-\d+-amd64-\d{8}-\d+$")
AMI_HOWTO = (
    "pin the machine image: `pulumi config set ami debian-12-amd64-YYYYMMDD-NNNN` (the newest name: "
    "`aws ec2 describe-images --owners 136693071363 --filters 'Name=name,Values=debian-12-amd64-*' "
    "--query 'sort_by(Images,&CreationDate)[-1].Name' --output text`), or an image id ami-..."
)


# Providers that create their hosts, and so choose their sizes, zones and machine image.
PLACING_PROVIDERS = ("aws",)
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
IMAGE_DELIVERIES = ("registry", "archive")
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class ConfigError(pulumi.RunError):
    """Bad stack configuration: shown to the user without a traceback."""


@dataclass(frozen=True)
class TierSize:
    """How many hosts of what size one tier has in this stack."""

    count: int
    size: str  # a provider-neutral size class (SIZE_CLASSES)
    root_gb: int = 20
    data_gb: int = 0


@dataclass(frozen=True)
class Machine:
    """An existing host (the hosts provider): its addresses, and a data node's data volume."""

    name: str
    tier: str
    private_ip: str
    public_ip: str | None = None  # the load balancer's and the bastion's
    zone: str = "default"
    data_volume: str | None = None  # the device, by a stable path (/dev/disk/by-id/...)


@dataclass(frozen=True)
class Registry:
    """A registry that takes a user and password (the hosts provider; AWS uses ECR)."""

    server: str
    username: str
    password: pulumi.Output[str]


@dataclass(frozen=True)
class ObjectStore:
    """An S3 API for the backups, other than AWS's (the hosts provider), with its own key."""

    endpoint: str
    bucket: str
    region: str
    access_key_id: str
    secret_access_key: pulumi.Output[str]


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    provider: str
    production: bool
    admin_cidrs: list[str]
    ssh_user: str
    app_image: str | None
    # aws: how many hosts of what size, where and on what they are made.
    tiers: dict[str, TierSize] = field(default_factory=dict)
    zones: list[str] = field(default_factory=list)
    vpc_cidr: str = ""
    ssh_public_key: str = ""
    nat_per_zone: bool = False
    ami: str = ""  # an image id (ami-...) or a Debian image name
    # hosts: the machines, and the services around them.
    machines: dict[str, list[Machine]] = field(default_factory=dict)
    registry: Registry | None = None
    object_store: ObjectStore | None = None
    ca_certificate: str | None = None  # PEM: the hosts trust it (the registry's, the ACME server's)
    # An address the load balancers share (keepalived moves it to a live one): where clients connect.
    lb_virtual_ip: str | None = None
    # Every provider.
    domain: str | None = None  # the API's name: certbot on the load balancer gets its certificate
    acme_email: str | None = None
    acme_directory: str | None = None  # the ACME server; Let's Encrypt when not set
    images: dict[str, str] = field(default_factory=dict)  # the data services' images, for a mirror
    image_delivery: str | None = None  # registry (pull) or archive (copied from the controller)
    ssh_private_key_file: str | None = None  # the controller's key for this stack's hosts
    ssh_known_hosts_file: str | None = None  # where the controller keeps their host keys
    # How many data nodes run MongoDB, the first ones: load() gives all of them (a replica set from
    # three) unless the stack's mongodbMembers says fewer.
    mongodb_members: int = 1
    backup_retention_days: int = 30  # MongoDB dumps and RabbitMQ definitions in the bucket
    snapshot_retention_count: int = 7  # daily snapshots of each data volume
    tags: dict[str, str] = field(default_factory=dict)

    def base_tags(self, tier: str | None = None) -> dict[str, str]:
        tags = {"project": self.project, "stack": self.stack, "managed-by": "pulumi", **self.tags}
        if tier:
            tags["tier"] = tier
        return tags


def _cidr(value: Any, key: str, problems: list[str]) -> str | None:
    try:
        return str(ipaddress.ip_network(str(value), strict=True))
    except ValueError:
        problems.append(f"{key}: {value!r} is not a valid CIDR (for example 203.0.113.0/24)")
        return None


def _tiers(raw: Any, problems: list[str]) -> dict[str, TierSize]:
    if not isinstance(raw, dict):
        problems.append("tiers: expected a map of tier name to {count, size}")
        return {}
    unknown = sorted(set(raw) - set(TIERS))
    if unknown:
        problems.append(f"tiers: unknown tier(s) {', '.join(unknown)}; the tiers are {', '.join(TIERS)}")
    missing = [name for name in TIERS if name not in raw]
    if missing:
        problems.append(f"tiers: {', '.join(missing)} missing; every tier needs {{count, size}}")
    sizes = {}
    for name in TIERS:
        spec = raw.get(name)
        if not isinstance(spec, dict):
            continue
        count, size = spec.get("count"), spec.get("size")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            problems.append(f"tiers.{name}.count: expected a whole number, got {count!r}")
            continue
        if size not in SIZE_CLASSES:
            problems.append(f"tiers.{name}.size: {size!r} is not one of {', '.join(SIZE_CLASSES)}")
            continue
        sizes[name] = TierSize(
            count=count, size=size, root_gb=int(spec.get("rootGb", 20)), data_gb=int(spec.get("dataGb", 0))
        )
    return sizes


def _check_counts(
    tiers: dict[str, TierSize], zones: list[str], production: bool, problems: list[str], key: str = "tiers"
) -> None:
    """The hosts per tier; `key` names where they were given (tiers.*.count, or machines.*)."""

    def where(name: str) -> str:
        return f"{key}.{name}.count" if key == "tiers" else f"{key}.{name}"

    if "bastion" in tiers and tiers["bastion"].count != 1:
        problems.append(f"{where('bastion')}: must be 1, got {tiers['bastion'].count}")
    for name in ("lb", "api", "workers"):
        if name in tiers and tiers[name].count < 1:
            problems.append(f"{where(name)}: at least one {name} host is needed, got {tiers[name].count}")
    if "data" in tiers and tiers["data"].count not in DATA_COUNTS:
        problems.append(
            f"{where('data')}: {tiers['data'].count} data nodes cannot form a MongoDB replica set; use 1, 3 or 5"
        )
    if key != "tiers":
        return  # existing machines: their placement over zones is the operator's
    if "data" in tiers and tiers["data"].data_gb < 1:
        problems.append("tiers.data.dataGb: data nodes need a data volume of at least 1 GB")
    if production:
        if len(zones) < 2:
            problems.append(f"zones: a production stack spreads over at least 2 availability zones, got {len(zones)}")
        for name in SPREAD_TIERS:
            if name in tiers and 0 < tiers[name].count < 2 <= len(zones):
                problems.append(
                    f"tiers.{name}.count: {tiers[name].count} host cannot be spread over {len(zones)} zones; "
                    "a production stack needs at least 2"
                )


def _mongodb_members(raw: str | None, data_nodes: int, production: bool, problems: list[str]) -> int:
    """MongoDB runs on the first `mongodbMembers` data nodes (every one by default)."""
    if raw is None:
        return data_nodes
    if not raw.isdigit() or int(raw) not in DATA_COUNTS or int(raw) > data_nodes:
        counts = ", ".join(str(c) for c in DATA_COUNTS if c <= data_nodes)
        problems.append(
            f"mongodbMembers: {raw!r} cannot be; MongoDB runs on {counts} of the {data_nodes} data node(s) "
            "(1 is a single server, 3 or more a replica set)"
        )
        return data_nodes
    if production and int(raw) < 3 <= data_nodes:
        pulumi.log.warn(
            f"mongodbMembers: {raw}: MongoDB runs on one data node, so losing it stops every write; "
            f"remove the setting to make the {data_nodes} data nodes a replica set"
        )
    return int(raw)


def _ip(value: Any, key: str, problems: list[str]) -> str | None:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        problems.append(f"{key}: {value!r} is not an IP address")
        return None


def _machines(raw: Any, problems: list[str]) -> dict[str, list[Machine]]:
    """The hosts provider's machines: {tier: [{name, privateAddress, address, zone, dataVolume}]}."""
    example = "machines: {api: [{name: api-1, privateAddress: 10.0.1.21}], ...}"
    if not isinstance(raw, dict):
        problems.append(f"machines: list the existing hosts per tier, e.g. {example}")
        return {}
    unknown = sorted(set(raw) - set(TIERS))
    if unknown:
        problems.append(f"machines: unknown tier(s) {', '.join(unknown)}; the tiers are {', '.join(TIERS)}")
    machines: dict[str, list[Machine]] = {}
    names: set[str] = set()
    for tier in TIERS:
        entries = raw.get(tier) or []
        if not isinstance(entries, list):
            problems.append(f"machines.{tier}: expected a list of hosts, e.g. {example}")
            continue
        machines[tier] = []
        for index, entry in enumerate(entries):
            key = f"machines.{tier}[{index}]"
            if not isinstance(entry, dict):
                problems.append(f"{key}: expected {{name, privateAddress, ...}}")
                continue
            name = str(entry.get("name") or "")
            if not NAME.match(name):
                problems.append(f"{key}.name: {name!r} is not a host name (lower-case letters, digits and -)")
            elif name in names:
                problems.append(f"{key}.name: {name} is listed twice")
            names.add(name)
            private_ip = _ip(entry.get("privateAddress"), f"{key}.privateAddress", problems)
            public_ip = None
            if TIERS[tier].public:
                public_ip = _ip(entry.get("address"), f"{key}.address", problems)
            data_volume = entry.get("dataVolume")
            if TIERS[tier].data_volume and not (isinstance(data_volume, str) and data_volume.startswith("/dev/")):
                problems.append(f"{key}.dataVolume: name the data volume's device, e.g. /dev/disk/by-id/...")
                data_volume = None
            if private_ip:
                machine = Machine(name, tier, private_ip, public_ip, str(entry.get("zone") or "default"), data_volume)
                machines[tier].append(machine)
    return machines


def _registry(config: pulumi.Config, problems: list[str]) -> Registry | None:
    raw = config.get_object("registry")
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw.get("server") or not raw.get("username"):
        problems.append("registry: give {server: registry.example.com[:port], username: ...}")
        return None
    if config.get("registryPassword") is None:
        problems.append("registryPassword: set it as a secret: `pulumi config set --secret registryPassword ...`")
        return None
    return Registry(str(raw["server"]), str(raw["username"]), config.require_secret("registryPassword"))


def _object_store(config: pulumi.Config, problems: list[str]) -> ObjectStore | None:
    raw = config.get_object("backupStore")
    if raw is None:
        return None
    wanted = ("endpoint", "bucket", "region", "accessKeyId")
    if not isinstance(raw, dict) or not all(raw.get(key) for key in wanted):
        problems.append("backupStore: give {endpoint: https://..., bucket: ..., region: ..., accessKeyId: ...}")
        return None
    if not str(raw["endpoint"]).startswith("https://"):
        problems.append(f"backupStore.endpoint: {raw['endpoint']!r} must be an https:// URL (backups leave the host)")
    if config.get("backupSecretAccessKey") is None:
        problems.append(
            "backupSecretAccessKey: set it as a secret: `pulumi config set --secret backupSecretAccessKey ...`"
        )
        return None
    return ObjectStore(
        str(raw["endpoint"]),
        str(raw["bucket"]),
        str(raw["region"]),
        str(raw["accessKeyId"]),
        config.require_secret("backupSecretAccessKey"),
    )


def _placement(config: pulumi.Config, production: bool, problems: list[str]) -> dict[str, Any]:
    """The aws provider's keys: the hosts' sizes and zones, the network and the machine image."""
    zones = config.get_object("zones") or []
    if not zones or not isinstance(zones, list) or not all(isinstance(z, str) and z for z in zones):
        problems.append("zones: list the availability zones, e.g. `pulumi config set --path 'zones[0]' eu-central-1a`")
        zones = []
    elif len(set(zones)) != len(zones):
        problems.append("zones: a zone is listed twice")

    vpc_cidr = _cidr(config.get("vpcCidr") or "10.20.0.0/16", "vpcCidr", problems)
    if vpc_cidr and not 16 <= ipaddress.ip_network(vpc_cidr).prefixlen <= 20:
        problems.append(f"vpcCidr: {vpc_cidr} must be between /16 and /20 to hold a public and a private /24 per zone")
        vpc_cidr = None

    ssh_public_key = (config.get("sshPublicKey") or "").strip()
    if not ssh_public_key.startswith(("ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-")):
        problems.append(
            "sshPublicKey: set the admin SSH public key: "
            '`pulumi config set sshPublicKey "$(cat ~/.ssh/id_ed25519.pub)"`'
        )

    tiers = _tiers(config.get_object("tiers"), problems)
    _check_counts(tiers, zones, production, problems)

    ami = (config.get("ami") or "").strip()
    if not (AMI_ID.match(ami) or AMI_NAME.match(ami)):
        problems.append(f"ami: {ami!r} is not an image id or a Debian image name; " + AMI_HOWTO)

    nat_per_zone = config.get_bool("natPerZone") if config.get("natPerZone") is not None else production
    return {
        "zones": zones,
        "vpc_cidr": vpc_cidr,
        "ssh_public_key": ssh_public_key,
        "tiers": tiers,
        "ami": ami,
        "nat_per_zone": nat_per_zone,
    }


def _existing(config: pulumi.Config, production: bool, problems: list[str]) -> dict[str, Any]:
    """The hosts provider's keys: the machines, and the registry, object store and CA around them."""
    for key in ("tiers", "zones", "ami", "vpcCidr"):
        if config.get(key) is not None:
            problems.append(f"{key}: the hosts provider creates no hosts; list them under machines instead")
    machines = _machines(config.get_object("machines"), problems)
    if not config.get("appImage"):
        problems.append(
            "appImage: the hosts provider builds no image; push one (python -m infra.release push) and "
            "`pulumi config set appImage REGISTRY/microservices-app@sha256:...`"
        )
    counts = {tier: TierSize(count=len(hosts), size="") for tier, hosts in machines.items()}
    _check_counts(counts, [], production, problems, key="machines")
    lb_virtual_ip = None
    if config.get("lbVirtualAddress") is not None:
        lb_virtual_ip = _ip(config.get("lbVirtualAddress"), "lbVirtualAddress", problems)
        taken = {address for hosts in machines.values() for m in hosts for address in (m.private_ip, m.public_ip)}
        if lb_virtual_ip in taken:
            problems.append(
                f"lbVirtualAddress: {lb_virtual_ip} is a machine's own address; give a free one on the "
                "load balancers' network, which keepalived moves to a live load balancer"
            )
    ca_certificate = config.get("caCertificate")
    if ca_certificate is not None and "-----BEGIN CERTIFICATE-----" not in ca_certificate:
        problems.append(
            'caCertificate: expected a PEM certificate: `pulumi config set caCertificate -- "$(cat ca.pem)"`'
        )
    return {
        "machines": machines,
        "zones": sorted({m.zone for hosts in machines.values() for m in hosts}),
        "registry": _registry(config, problems),
        "object_store": _object_store(config, problems),
        "ca_certificate": ca_certificate,
        "lb_virtual_ip": lb_virtual_ip,
    }


def load(config: pulumi.Config | None = None) -> StackConfig:
    """Read and check the stack's configuration; raise one ConfigError listing every problem."""
    config = config or pulumi.Config()
    problems: list[str] = []

    production = config.get_bool("production") or False
    provider = config.get("provider") or "aws"
    if provider not in PROVIDERS:
        problems.append(f"provider: {provider!r} is not supported; choose one of {', '.join(PROVIDERS)}")

    admin_cidrs = []
    raw_admin = config.get_object("adminCidrs")
    if not raw_admin or not isinstance(raw_admin, list):
        problems.append(
            "adminCidrs: list the networks allowed to SSH to the bastion, "
            "e.g. `pulumi config set --path 'adminCidrs[0]' 203.0.113.7/32`"
        )
    else:
        for index, value in enumerate(raw_admin):
            cidr = _cidr(value, f"adminCidrs[{index}]", problems)
            if cidr is None:
                continue
            if production and ipaddress.ip_network(cidr).prefixlen == 0:
                problems.append(
                    f"adminCidrs[{index}]: {cidr} opens SSH to the whole internet; "
                    "a production stack must name its admin networks"
                )
            admin_cidrs.append(cidr)

    hosts = _placement(config, production, problems) if provider in PLACING_PROVIDERS else {}
    if provider == "hosts":
        hosts = _existing(config, production, problems)
    elif provider in PROVIDERS:
        for key in ("machines", "registry", "backupStore", "caCertificate", "lbVirtualAddress"):
            if config.get(key) is not None:
                problems.append(f"{key}: only the hosts provider takes it (provider {provider} makes its own)")

    domain = (config.get("domain") or "").strip().lower() or None
    acme_email = (config.get("acmeEmail") or "").strip() or None
    acme_directory = (config.get("acmeDirectory") or "").strip() or None
    if domain and not re.fullmatch(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", domain):
        problems.append(f"domain: {domain!r} is not a DNS name (for example api.example.com)")
    if domain and not (acme_email and "@" in acme_email):
        problems.append(
            "acmeEmail: a domain needs the address Let's Encrypt writes to: `pulumi config set acmeEmail ops@...`"
        )
    if acme_directory and not acme_directory.startswith("https://"):
        problems.append(f"acmeDirectory: {acme_directory!r} must be an https:// URL (Let's Encrypt's: {LETS_ENCRYPT})")

    images = config.get_object("images") or {}
    if not isinstance(images, dict) or not all(isinstance(v, str) and v for v in images.values()):
        problems.append("images: map a data service to its image, e.g. {redis: mirror.example.com/redis:7.2}")
        images = {}
    image_delivery = config.get("imageDelivery")
    if image_delivery is not None and image_delivery not in IMAGE_DELIVERIES:
        problems.append(f"imageDelivery: {image_delivery!r} is not one of {', '.join(IMAGE_DELIVERIES)}")

    ssh_files = {}
    for key in ("sshPrivateKeyFile", "sshKnownHostsFile"):
        value = config.get(key)
        if value is not None and not value.startswith(("/", "~/")):
            problems.append(f"{key}: {value!r} must be an absolute path (or start with ~/)")
        ssh_files[key] = value

    retention = {}
    for key, low, high in (("backupRetentionDays", 1, 3650), ("snapshotRetentionCount", 1, 1000)):
        value = config.get(key)
        if value is None:
            continue
        if not value.isdigit() or not low <= int(value) <= high:
            problems.append(f"{key}: expected a whole number from {low} to {high}, got {value!r}")
            continue
        retention[key] = int(value)

    def count(tier: str) -> int:
        sized = hosts.get("tiers", {}).get(tier)
        return (sized.count if sized else 0) + len(hosts.get("machines", {}).get(tier, []))

    mongodb_members = _mongodb_members(config.get("mongodbMembers"), count("data"), production, problems)
    if problems:
        raise ConfigError(f"stack {pulumi.get_stack()!r} is misconfigured:\n  - " + "\n  - ".join(problems))
    return StackConfig(
        project=pulumi.get_project(),
        stack=pulumi.get_stack(),
        provider=provider,
        production=production,
        admin_cidrs=admin_cidrs,
        ssh_user=config.get("sshUser") or "admin",
        app_image=config.get("appImage") or None,
        domain=domain,
        acme_email=acme_email,
        acme_directory=acme_directory,
        images=images,
        image_delivery=image_delivery,
        ssh_private_key_file=ssh_files["sshPrivateKeyFile"],
        ssh_known_hosts_file=ssh_files["sshKnownHostsFile"],
        mongodb_members=mongodb_members,
        backup_retention_days=retention.get("backupRetentionDays", 30),
        snapshot_retention_count=retention.get("snapshotRetentionCount", 7),
        tags=config.get_object("tags") or {},
        **hosts,
    )
