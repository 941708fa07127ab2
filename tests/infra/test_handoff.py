"""The handoff from Pulumi to Ansible: every variable the rendered inventory gives a host is the
value that host sees in a playbook run from ansible/ (its group_vars included). Playbook
group_vars outrank an inventory's variables, so a value there for a variable a provider sets
(production, the registry, TLS, the backup target ...) silently wins over the stack's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pulumi_harness import HOSTS_STACK, REPO_ROOT, STACKS, run_program, stack_config

BIN = Path(sys.executable).parent
# Each stack file as a user runs it, the production example with a domain for certbot, and the
# hosts provider's example with every service it can hand over.
CASES = {
    "dev": (STACKS["dev"], {}),
    "prod": (STACKS["prod"], {}),
    "prod-with-domain": (STACKS["prod"], {"domain": "api.example.com", "acmeEmail": "ops@example.com"}),
    # Existing machines, with the registry, object store, CA and ACME server a cloud would give.
    "hosts": (
        HOSTS_STACK,
        {
            "caCertificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            "acmeDirectory": "https://acme.example.com/dir",
            "imageDelivery": "registry",
        },
    ),
}


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


def seen(outputs: Path, names: list[str]) -> dict[str, dict]:
    """What a task on each host sees for `names`, asked of Ansible with the real playbook
    directory (ansible/, with its group_vars). debug runs on the controller: no host is contacted."""
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
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    hosts = json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]
    return {host: json.loads(answer["msg"]) for host, answer in hosts.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_every_variable_the_stack_hands_over_reaches_every_host(case, tmp_path):
    stack_file, overrides = CASES[case]
    result = run_program(case, stack_config(stack_file, overrides))
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(result.outputs))  # as `pulumi stack output --json --show-secrets`
    given = supplied(outputs)
    names = sorted({name for variables in given.values() for name in variables})
    # Every provider variable is among them (what the stack's provider hands over).
    assert set(result.outputs["ansible_inventory"]["all"]["vars"]) <= set(names)
    answers = seen(outputs, [*names, "app_environment"])
    assert set(answers) == set(given)
    shadowed = {
        f"{host}: {name}": f"inventory {variables[name]!r}, a task sees {answers[host][name]!r}"
        for host, variables in given.items()
        for name in variables
        if answers[host][name] != variables[name]
    }
    assert not shadowed, json.dumps(shadowed, indent=1)
    # The app calls itself production only where the stack is one, which serves HTTPS only.
    production = result.outputs["ansible_inventory"]["all"]["vars"].get("production")
    environments = {answer["app_environment"]["ENVIRONMENT"] for answer in answers.values()}
    assert environments == {"production" if production else "staging"}, environments
