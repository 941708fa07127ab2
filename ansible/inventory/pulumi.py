#!/usr/bin/env python3
"""Ansible dynamic inventory from a Pulumi stack's outputs.

    ansible-playbook -i ansible/inventory/pulumi.py ansible/site.yml

Where the outputs come from, first match wins:
  PULUMI_OUTPUTS_FILE   a file saved with `pulumi stack output --json --show-secrets > FILE`
  PULUMI_STACK          run `pulumi stack output --json --show-secrets --stack $PULUMI_STACK`
  (neither)             run it for the currently selected stack

With the local backend (`pulumi login --local`) the secrets are encrypted with the passphrase
given at `pulumi stack init`: Pulumi, run here without a terminal, reads it from
PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE) and cannot ask for it.

The stack's `ansible_inventory` output gives the groups (one per tier of topology/, and
behind_bastion with the ProxyJump settings); its `secrets` output, when shown, becomes
the `app_secrets` variable of every host. Standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


class InventoryError(Exception):
    pass


def stack_outputs() -> dict[str, Any]:
    path = os.environ.get("PULUMI_OUTPUTS_FILE")
    if path:
        try:
            return json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InventoryError(f"PULUMI_OUTPUTS_FILE={path}: no such file") from None
        except json.JSONDecodeError as exc:
            raise InventoryError(
                f"PULUMI_OUTPUTS_FILE={path}: not JSON ({exc}); save it with "
                "`pulumi stack output --json --show-secrets > FILE`"
            ) from None
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise InventoryError(
            "the pulumi CLI is not installed; install it, or set PULUMI_OUTPUTS_FILE "
            "to a file saved with `pulumi stack output --json --show-secrets`"
        )
    command = [pulumi, "stack", "output", "--json", "--show-secrets"]
    if os.environ.get("PULUMI_STACK"):
        command += ["--stack", os.environ["PULUMI_STACK"]]
    result = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        said = " ".join(result.stderr.split())
        if "passphrase" in said.lower():
            problem = (
                "PULUMI_CONFIG_PASSPHRASE is not the stack's passphrase"
                if "incorrect passphrase" in said.lower()
                else "the stack's secrets need its passphrase"
            )
            how = (
                "export PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE) as for `pulumi up`, then run again"
            )
            raise InventoryError(f"{problem}: {how} (pulumi said: {said})")
        raise InventoryError(f"`{' '.join(command[1:])}` failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def to_script_format(inventory: dict[str, Any], extra_vars: dict[str, Any]) -> dict[str, Any]:
    """Turn the YAML-shaped inventory (all → children → hosts) into Ansible's script format."""
    groups: dict[str, dict[str, Any]] = {}
    hostvars: dict[str, dict[str, Any]] = {}

    def walk(name: str, group: dict[str, Any]) -> None:
        entry = groups.setdefault(name, {"hosts": [], "vars": {}, "children": []})
        for host, variables in (group.get("hosts") or {}).items():
            entry["hosts"].append(host)
            hostvars.setdefault(host, {}).update(variables or {})
        entry["vars"].update(group.get("vars") or {})
        for child, body in (group.get("children") or {}).items():
            if child not in entry["children"]:
                entry["children"].append(child)
            walk(child, body or {})

    if "all" not in inventory:
        raise InventoryError("the ansible_inventory output has no 'all' group")
    walk("all", inventory["all"])
    groups["all"]["vars"].update(extra_vars)
    return {**groups, "_meta": {"hostvars": hostvars}}


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[1] == "--host":
        print("{}")  # every host's variables are in _meta
        return 0
    if len(argv) < 2 or argv[1] != "--list":
        print(f"usage: {argv[0]} --list | --host HOST", file=sys.stderr)
        return 2
    try:
        outputs = stack_outputs()
        if "ansible_inventory" not in outputs:
            raise InventoryError("the stack has no ansible_inventory output; run `pulumi up` first")
        secrets = outputs.get("secrets")
        extra = {"app_secrets": secrets} if isinstance(secrets, dict) else {}
        print(json.dumps(to_script_format(outputs["ansible_inventory"], extra), indent=2))
    except InventoryError as exc:
        print(f"pulumi inventory: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
