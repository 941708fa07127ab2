"""The handoff from Pulumi to Ansible: every variable the rendered inventory gives a host is the
value that host sees in a playbook run from ansible/ (its group_vars included). Playbook
group_vars outrank an inventory's variables, so a value there for a variable a provider sets
(production, the registry, TLS, the backup target ...) silently wins over the stack's."""

from __future__ import annotations

import json

import pytest
from ansible_view import seen, supplied
from pulumi_harness import HOSTS_STACK, STACKS, run_program, stack_config

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
