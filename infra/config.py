"""The stack's configuration, read once and checked before any resource is declared.

Every problem found is reported together in one ConfigError, whose message says what to
change (`pulumi config set ...`).
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
class StackConfig:
    project: str
    stack: str
    provider: str
    production: bool
    zones: list[str]
    vpc_cidr: str
    admin_cidrs: list[str]
    ssh_public_key: str
    ssh_user: str
    tiers: dict[str, TierSize]
    nat_per_zone: bool
    app_image: str | None
    ami: str  # an image id (ami-...) or a Debian image name
    domain: str | None = None  # the API's name: certbot on the load balancer gets its certificate
    acme_email: str | None = None
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


def _check_counts(tiers: dict[str, TierSize], zones: list[str], production: bool, problems: list[str]) -> None:
    for name, fixed in (("lb", 1), ("bastion", 1)):
        if name in tiers and tiers[name].count != fixed:
            problems.append(f"tiers.{name}.count: must be {fixed}, got {tiers[name].count}")
    for name in ("api", "workers"):
        if name in tiers and tiers[name].count < 1:
            problems.append(f"tiers.{name}.count: at least one {name} host is needed, got {tiers[name].count}")
    if "data" in tiers:
        if tiers["data"].count not in DATA_COUNTS:
            problems.append(
                f"tiers.data.count: {tiers['data'].count} data nodes cannot form a MongoDB replica set; use 1, 3 or 5"
            )
        if tiers["data"].data_gb < 1:
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


def load(config: pulumi.Config | None = None) -> StackConfig:
    """Read and check the stack's configuration; raise one ConfigError listing every problem."""
    config = config or pulumi.Config()
    problems: list[str] = []

    production = config.get_bool("production") or False
    provider = config.get("provider") or "aws"
    if provider not in PROVIDERS:
        problems.append(f"provider: {provider!r} is not supported; choose one of {', '.join(PROVIDERS)}")

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

    domain = (config.get("domain") or "").strip().lower() or None
    acme_email = (config.get("acmeEmail") or "").strip() or None
    if domain and not re.fullmatch(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", domain):
        problems.append(f"domain: {domain!r} is not a DNS name (for example api.example.com)")
    if domain and not (acme_email and "@" in acme_email):
        problems.append(
            "acmeEmail: a domain needs the address Let's Encrypt writes to: `pulumi config set acmeEmail ops@...`"
        )

    retention = {}
    for key, low, high in (("backupRetentionDays", 1, 3650), ("snapshotRetentionCount", 1, 1000)):
        value = config.get(key)
        if value is None:
            continue
        if not value.isdigit() or not low <= int(value) <= high:
            problems.append(f"{key}: expected a whole number from {low} to {high}, got {value!r}")
            continue
        retention[key] = int(value)

    if problems:
        raise ConfigError(f"stack {pulumi.get_stack()!r} is misconfigured:\n  - " + "\n  - ".join(problems))
    return StackConfig(
        project=pulumi.get_project(),
        stack=pulumi.get_stack(),
        provider=provider,
        production=production,
        zones=zones,
        vpc_cidr=vpc_cidr,
        admin_cidrs=admin_cidrs,
        ssh_public_key=ssh_public_key,
        ssh_user=config.get("sshUser") or "admin",
        tiers=tiers,
        nat_per_zone=config.get_bool("natPerZone") if config.get("natPerZone") is not None else production,
        app_image=config.get("appImage") or None,
        ami=ami,
        domain=domain,
        acme_email=acme_email,
        backup_retention_days=retention.get("backupRetentionDays", 30),
        snapshot_retention_count=retention.get("snapshotRetentionCount", 7),
        tags=config.get_object("tags") or {},
    )
