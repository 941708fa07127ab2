"""One source of truth: the facts in topology/ (Python) and every file that repeats them.

Ansible's copy is generated (ansible/group_vars/all/topology.yml); the files that cannot be
generated or import Python (docker-compose.yml, nginx/, Dockerfile.app, app/, .env.example)
are checked here against the facts. No server is needed.
"""

from __future__ import annotations

from pathlib import Path

from topology import ansible as ansible_facts

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_ansible_copy_is_current():
    committed = ansible_facts.PATH.read_text()
    assert committed == ansible_facts.render(), (
        f"ansible/group_vars/all/topology.yml is stale: run {ansible_facts.COMMAND}"
    )
