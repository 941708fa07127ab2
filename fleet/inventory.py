"""The fleet, read through Ansible itself (`ansible-inventory --list`), so the tool sees exactly
the hosts, addresses, users, keys and jump hosts the playbooks use: the Pulumi inventory, a
static file, or the lab's."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet import QUIET_LIBRARIES
from topology import (
    API_PORT,
    PORTS,
    REDIS_SENTINEL_MASTER,
    REDIS_SENTINEL_MIN_NODES,
    TIERS,
    mongodb_replica_set,
    rabbitmq_hosts,
    redis_hosts,
)
from topology.app import WORKER_QUEUES

REPO_ROOT = Path(__file__).resolve().parent.parent


class InventoryError(Exception):
    """The inventory cannot be read; the message says what to fix."""


@dataclass
class Target:
    name: str
    tiers: list[str]
    address: str
    port: int = 22
    user: str | None = None
    key: str | None = None
    ssh_configs: list[str] = field(default_factory=list)
    jump: str | None = None  # user@host[:port]
    known_hosts: str | None = None  # the inventory's UserKnownHostsFile (the jump's too)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def tier(self) -> str:
        return ",".join(self.tiers) or "-"


def ansible_inventory() -> str:
    for candidate in (Path(sys.executable).parent / "ansible-inventory", shutil.which("ansible-inventory")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise InventoryError("ansible-inventory is not installed (pip install ansible); it reads the inventory")


def require(inventory: str) -> None:
    if not Path(inventory).exists():
        raise InventoryError(f"inventory {inventory}: no such file")


def read(inventory: str) -> dict[str, Any]:
    """`ansible-inventory --list`, with the playbooks' group_vars (defaults such as the images)."""
    require(inventory)
    result = subprocess.run(
        [ansible_inventory(), "-i", inventory, "--list", "--playbook-dir", str(REPO_ROOT / "ansible")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **QUIET_LIBRARIES, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true", "ANSIBLE_NOCOLOR": "1"},
    )
    if result.returncode != 0:
        raise InventoryError(f"inventory {inventory} could not be read: {why_unreadable(result.stderr, inventory)}")
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise InventoryError(f"inventory {inventory}: ansible-inventory printed no JSON ({exc})") from None


def why_unreadable(stderr: str, inventory: str) -> str:
    """The line that says what to fix. Ansible tries every inventory plugin in turn and reports
    each failure; the one for the kind of file given is the useful one (a script's own message,
    the YAML error of a .yml), not a later attempt to read the file as INI."""
    lines = stderr.splitlines()
    marker = "Standard error from inventory script:"
    if marker in lines:
        own = []
        for line in lines[lines.index(marker) + 1 :]:
            if "[WARNING]" in line or (own and not line.strip()):
                break
            if line.strip():
                own.append(line.strip())
        if own:
            return " ".join(own)
    by_plugin = dict(re.findall(r"Failed to parse inventory with '(\w+)' plugin: (.+)", stderr))
    kind = "yaml" if inventory.endswith((".yml", ".yaml", ".json")) else "ini"
    kind = "script" if os.access(inventory, os.X_OK) else kind
    if by_plugin:
        return by_plugin.get(kind) or next(iter(by_plugin.values()))
    lines = [line.strip() for line in lines if line.strip()]
    return " ".join(lines[-3:]) or "unknown error"


def members(listing: dict[str, Any], group: str, seen: set[str] | None = None) -> list[str]:
    """The hosts of a group and of its children, in inventory order."""
    seen = seen if seen is not None else set()
    if group in seen or group not in listing:
        return []
    seen.add(group)
    hosts = list(listing[group].get("hosts", []))
    for child in listing[group].get("children", []):
        hosts += [h for h in members(listing, child, seen) if h not in hosts]
    return hosts


@dataclass
class SshOptions:
    configs: list[str] = field(default_factory=list)  # -F files
    jump: str | None = None  # user@host[:port], from -J, ProxyJump or a ProxyCommand of `ssh -W`
    key: str | None = None  # -i
    known_hosts: str | None = None  # UserKnownHostsFile


def ssh_options(hostvars: dict[str, Any]) -> SshOptions:
    """What fleet needs of Ansible's ssh arguments: config files, the jump host, a key and the
    known hosts file. The Pulumi inventory jumps with a ProxyCommand (`ssh -W %h:%p ... user@host`),
    whose own options are the host's; hand-written ones may use -J, ProxyJump or -F."""
    args = shlex.split(
        " ".join(str(hostvars.get(k, "")) for k in ("ansible_ssh_common_args", "ansible_ssh_extra_args"))
    )
    found = SshOptions()
    for index, arg in enumerate(args):
        value = args[index + 1] if index + 1 < len(args) else ""
        option = value if arg == "-o" else arg[2:] if arg.startswith("-o") else ""
        name, _, setting = option.partition("=")
        if arg == "-F":
            found.configs.append(value)
        elif arg == "-J":
            found.jump = value
        elif arg == "-i":
            found.key = value
        elif name.lower() == "proxyjump":
            found.jump = setting
        elif name.lower() == "userknownhostsfile":
            found.known_hosts = setting
        elif name.lower() == "proxycommand":
            found.jump = proxy_command_jump(setting) or found.jump
    return found


def proxy_command_jump(command: str) -> str | None:
    """user@host[:port] of a ProxyCommand that is `ssh -W %h:%p [options] user@host`."""
    words = shlex.split(command)
    if len(words) < 2 or Path(words[0]).name != "ssh" or "-W" not in words:
        return None
    port, destination, index = None, None, 1
    takes_value = set("BbcDEeFIiJLlmOopQRSWw")  # ssh's options that take an argument
    while index < len(words):
        word = words[index]
        if word.startswith("-") and len(word) == 2 and word[1] in takes_value:
            if word == "-p":
                port = words[index + 1] if index + 1 < len(words) else None
            index += 2
            continue
        if not word.startswith("-"):
            destination = word
        index += 1
    if destination is None:
        return None
    return f"{destination}:{port}" if port else destination


def load(inventory: str, backlog_warn: int = 1000) -> list[Target]:
    listing = read(inventory)
    hostvars: dict[str, dict[str, Any]] = listing.get("_meta", {}).get("hostvars", {})
    tier_hosts = {tier: members(listing, tier) for tier in TIERS}
    if not hostvars:
        raise InventoryError(f"inventory {inventory} has no hosts")
    # MongoDB runs on the first mongodb_members data nodes (the stack's mongodbMembers), as in
    # ansible/group_vars.
    data = tier_hosts["data"]
    mongodb_hosts = data[: int(hostvars[data[0]].get("mongodb_members", len(data)))] if data else []
    broker_hosts = rabbitmq_hosts(data)
    cache_hosts = redis_hosts(data)
    sentinel = REDIS_SENTINEL_MASTER if len(cache_hosts) >= REDIS_SENTINEL_MIN_NODES else ""
    first_worker = (tier_hosts["workers"] or [None])[0]
    first_lb = (tier_hosts["lb"] or [None])[0]
    api_addresses = [hostvars[h].get("private_ip", hostvars[h].get("ansible_host")) for h in tier_hosts["api"]]

    targets = []
    for name, variables in hostvars.items():
        tiers = [tier for tier in TIERS if name in tier_hosts[tier]]
        ssh = ssh_options(variables)
        images = {**(variables.get("default_images") or {}), **(variables.get("images") or {})}
        targets.append(
            Target(
                name=name,
                tiers=tiers,
                address=str(variables.get("ansible_host", name)),
                port=int(variables.get("ansible_port", 22)),
                user=variables.get("ansible_user"),
                key=variables.get("ansible_ssh_private_key_file") or ssh.key,
                ssh_configs=ssh.configs,
                jump=ssh.jump,
                known_hosts=ssh.known_hosts,
                facts={
                    "host": name,
                    "groups": tiers,
                    "private_ip": variables.get("private_ip", variables.get("ansible_host", name)),
                    "app_image": variables.get("app_image", ""),
                    "images": images,
                    "api_hosts": api_addresses,
                    "api_port": API_PORT,
                    "queues": list(WORKER_QUEUES),
                    "redis_member": name in cache_hosts,
                    "redis_nodes": len(cache_hosts),
                    "sentinel": sentinel if name in cache_hosts else "",
                    "sentinel_port": PORTS["redis_sentinel"],
                    "beat": name == first_worker,
                    "lock_host": name == first_lb,  # holds the deploy lock (roles/deploy_lock)
                    "state_dir": variables.get("app_state_dir", "/var/lib/microservices"),
                    "mongodb_member": name in mongodb_hosts,
                    "rabbitmq_member": name in broker_hosts,
                    "rabbitmq_management_port": PORTS["rabbitmq_management"],
                    "replica_set": mongodb_replica_set(len(mongodb_hosts)),
                    "vhost": variables.get("rabbitmq_vhost", "app"),
                    "backlog_warn": backlog_warn,
                },
            )
        )
    return targets
