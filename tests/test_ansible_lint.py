"""The Ansible content passes ansible-lint (production profile) and every playbook parses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ANSIBLE_DIR = Path(__file__).resolve().parents[1] / "ansible"
BIN = Path(sys.executable).parent
PLAYBOOKS = sorted(p.name for p in ANSIBLE_DIR.glob("*.yml"))
# Named as well: ansible-lint follows a playbook's roles, but not a role that only another
# role includes (app_container).
ROLES = sorted(f"roles/{p.name}" for p in (ANSIBLE_DIR / "roles").iterdir() if p.is_dir())


def test_ansible_lint_production_profile_is_clean():
    result = subprocess.run(
        [str(BIN / "ansible-lint"), "--profile", "production", "--nocolor", *PLAYBOOKS, *ROLES],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Profile 'production' was required, and it passed" in result.stderr + result.stdout


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(playbook):
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "inventory/example.yml", "--syntax-check", playbook],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg")},
    )
    assert result.returncode == 0, result.stderr
