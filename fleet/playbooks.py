"""The verbs that change the fleet (setup, deploy, rollback, maintain, lock, unlock): the playbooks under
ansible/, run with the repository's Ansible configuration and the deploy lock.

Every playbook that changes the fleet takes the deploy lock first (roles/deploy_lock) and gives
it back at its end, also when run as plain `ansible-playbook`. A playbook that fails keeps the
lock, since Ansible has no "finally" across plays; run from here, a failed run's own lock is
given back (the lock names its holder by the id passed here), and a lock held by another run is
left alone.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from fleet import QUIET_LIBRARIES
from fleet.inventory import REPO_ROOT, InventoryError, require

ANSIBLE_DIR = REPO_ROOT / "ansible"


def ansible_playbook() -> str:
    candidate = Path(sys.executable).parent / "ansible-playbook"
    if candidate.exists():
        return str(candidate)
    raise InventoryError("ansible-playbook is not installed (pip install ansible); `make venv` installs it")


def play(inventory: str, playbook: str, extra_vars: dict[str, object], quiet: bool = False) -> int:
    """ansible-playbook, its output shown as it comes (or kept back with `quiet`)."""
    require(inventory)
    command = [ansible_playbook(), "-i", inventory, str(ANSIBLE_DIR / playbook)]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    env = {**os.environ, **QUIET_LIBRARIES, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg")}
    output = subprocess.DEVNULL if quiet else None
    return subprocess.run(command, env=env, stdout=output, stderr=output).returncode


def run_id(kind: str) -> str:
    """Who runs what, unique to this run: the lock's holder."""
    return f"{kind}:{getpass.getuser()}@{socket.gethostname()}:{uuid.uuid4().hex[:8]}"


def locked(inventory: str, playbook: str, extra_vars: dict[str, object]) -> int:
    """A playbook that takes the deploy lock; if it fails, its own lock is given back."""
    lock_id = run_id(Path(playbook).stem)
    code = play(inventory, playbook, {**extra_vars, "deploy_lock_id": lock_id})
    if code != 0:
        play(inventory, "lock.yml", {"deploy_lock_action": "release", "deploy_lock_id": lock_id}, quiet=True)
    return code


def lock(inventory: str, message: str) -> int:
    """Hold the deploy lock until `unlock`: setup, deploy, rollback and maintain refuse to start meanwhile."""
    return play(
        inventory,
        "lock.yml",
        {"deploy_lock_action": "acquire", "deploy_lock_id": run_id("lock"), "deploy_lock_message": message},
    )


def unlock(inventory: str) -> int:
    """Free the deploy lock, whoever holds it."""
    return play(inventory, "lock.yml", {"deploy_lock_action": "release", "deploy_lock_force": True})
