"""The dependency locks (scripts/lock.py, `make lock`): every install is the tested one, a stale
lock is named with what to run, and the test virtualenv holds exactly what the lock pins."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from packaging.markers import Marker

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
import lock  # noqa: E402

# Where `make venv` puts the project itself (editable, for the fleet commands): not in a lock.
PROJECT = "microservices-system"


def locked_copy(tmp_path: Path) -> Path:
    """The lock script, its inputs and the locks, laid out as in the repository."""
    for lock_set in lock.LOCKS:
        for name in (lock_set.source, lock_set.output):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO_ROOT / name, tmp_path / name)
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO_ROOT / "scripts/lock.py", tmp_path / "scripts/lock.py")
    return tmp_path


def run_check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(root / "scripts/lock.py"), "check"], capture_output=True, text=True, timeout=60
    )


def test_the_committed_locks_are_current():
    result = run_check(REPO_ROOT)
    assert result.returncode == 0, result.stderr


def test_a_new_requirement_makes_the_locks_that_include_it_stale(tmp_path):
    root = locked_copy(tmp_path)
    with (root / "requirements.in").open("a") as source:
        source.write("rich\n")
    result = run_check(root)
    assert result.returncode == 1
    # The app's lock and the dev lock, which includes requirements.in; not the Pulumi program's.
    assert "requirements.txt is stale: requirements.in" in result.stderr
    assert "requirements-dev.txt is stale" in result.stderr and "infra/requirements.txt" not in result.stderr
    assert result.stderr.rstrip().endswith("run `make lock`, then commit the locks")


def test_a_comment_does_not_make_a_lock_stale(tmp_path):
    root = locked_copy(tmp_path)
    with (root / "requirements-dev.in").open("a") as source:
        source.write("\n# why a package is here\n")
    assert run_check(root).returncode == 0


def test_a_missing_lock_says_make_lock(tmp_path):
    root = locked_copy(tmp_path)
    (root / "infra/requirements.txt").unlink()
    result = run_check(root)
    assert result.returncode == 1 and "infra/requirements.txt is missing" in result.stderr
    assert "make lock" in result.stderr


def test_locks_that_disagree_on_a_version_are_refused(tmp_path):
    root = locked_copy(tmp_path)
    app_lock = root / "requirements.txt"
    app_lock.write_text(re.sub(r"^fastapi==\S+", "fastapi==0.0.1", app_lock.read_text(), flags=re.M))
    result = run_check(root)
    assert result.returncode == 1
    disagree = r"fastapi is locked at different versions: 0\.0\.1 in requirements\.txt, \S+ in requirements-dev"
    assert re.search(disagree, result.stderr)


@pytest.mark.parametrize("lock_set", lock.LOCKS, ids=lambda lock_set: lock_set.output)
def test_every_package_is_pinned_with_its_hashes(lock_set):
    text = (REPO_ROOT / lock_set.output).read_text()
    entries = re.split(r"\n(?=\S)", text)
    requirements = [entry for entry in entries if not entry.startswith("#")]
    assert requirements
    for entry in requirements:
        assert lock.PIN.match(entry), f"not pinned with ==: {entry.splitlines()[0]}"
        assert "--hash=sha256:" in entry, f"no hash: {entry.splitlines()[0]}"


def test_the_test_virtualenv_holds_exactly_the_lock():
    """`make venv` installs from the dev lock alone: every package at its locked version, and none
    that the lock does not name (a fresh virtualenv each time the lock changes)."""
    wanted = {}
    for entry in re.split(r"\n(?=\S)", (REPO_ROOT / "requirements-dev.txt").read_text()):
        match = lock.PIN.match(entry)
        if not match:
            continue
        marker = entry.splitlines()[0].partition(";")[2].rstrip(" \\").strip()
        if not marker or Marker(marker).evaluate():
            wanted[lock.normalize(match.group(1))] = match.group(2)
    installed = {
        lock.normalize(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
        if lock.normalize(dist.metadata["Name"]) != PROJECT
    }
    assert installed == wanted


def test_the_projects_own_warnings_fail_a_test_and_a_librarys_do_not():
    with pytest.raises(UserWarning, match="own"):
        warnings.warn_explicit("own", UserWarning, "fleet/sweep.py", 1, module="fleet.sweep")
    with pytest.warns(UserWarning, match="library"):
        warnings.warn_explicit("library", UserWarning, "asyncssh/misc.py", 1, module="asyncssh.crypto.misc")
