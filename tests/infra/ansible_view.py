"""What Ansible makes of a rendered inventory: the variables it gives each host, and what a task
on each host sees with the real playbook directory (ansible/, with its group_vars)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pulumi_harness import REPO_ROOT

BIN = Path(sys.executable).parent


def ansible_env(outputs: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PULUMI_OUTPUTS_FILE": str(outputs),
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible/ansible.cfg"),
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
        "PYTHONWARNINGS": "ignore",
    }


def supplied(outputs: Path) -> dict[str, dict]:
    """What the inventory alone gives each host (no playbook directory, so no group_vars)."""
    listed = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(REPO_ROOT / "ansible/inventory/pulumi.py"), "--list"],
        env=ansible_env(outputs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)["_meta"]["hostvars"]


def seen(outputs: Path, names: list[str], role: str | None = None) -> dict[str, dict]:
    """What a task on each host sees for `names`, asked of Ansible with the real playbook
    directory (ansible/, with its group_vars) and, given a role, that role's defaults as its
    tasks see them. debug runs on the controller: no host is contacted."""
    # Some are one host's only (public_ip, data_volume_id): the others answer null.
    pairs = ", ".join(f"'{name}': ({name} if {name} is defined else none)" for name in names)
    template = "{{ {" + pairs + "} | to_json }}"
    env = {
        **ansible_env(outputs),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
    }
    command = [
        str(BIN / "ansible"),
        "all",
        "-i",
        str(REPO_ROOT / "ansible/inventory/pulumi.py"),
        "--playbook-dir",
        str(REPO_ROOT / "ansible"),
        "-m",
        "ansible.builtin.debug",
        "-a",
        f"msg={template}",
    ]
    if role:
        command += ["-e", f"@{REPO_ROOT / 'ansible/roles' / role / 'defaults/main.yml'}"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    hosts = json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]
    return {host: json.loads(answer["msg"]) for host, answer in hosts.items()}
