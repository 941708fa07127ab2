"""`make env` (scripts/envfile.py): a .env of an older version keeps its values and gains what the
new version needs, so `make up` after an upgrade starts instead of stopping on a missing secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dotenv import dotenv_values

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "envfile.py"


def make_env(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "generate", "--file", str(path)], capture_output=True, text=True, timeout=30
    )


def test_an_older_env_file_gains_what_it_lacks_and_keeps_what_it_holds(tmp_path):
    env = tmp_path / ".env"
    assert make_env(env).returncode == 0
    assert env.stat().st_mode & 0o777 == 0o600
    first = dotenv_values(env)
    # The file of a version without the operators' Redis password.
    env.write_text("".join(line for line in env.read_text().splitlines(True) if "REDIS_ADMIN_PASSWORD" not in line))

    upgraded = make_env(env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "Added what this version needs: REDIS_ADMIN_PASSWORD." in upgraded.stderr
    now = dotenv_values(env)
    assert {name: now[name] for name in first if name != "REDIS_ADMIN_PASSWORD"} == {
        name: value for name, value in first.items() if name != "REDIS_ADMIN_PASSWORD"
    }
    assert len(now["REDIS_ADMIN_PASSWORD"]) >= 32 and now["REDIS_ADMIN_PASSWORD"] != first["REDIS_ADMIN_PASSWORD"]

    again = make_env(env)
    assert "Added" not in again.stderr and dotenv_values(env) == now
