#!/usr/bin/env python3
"""The dependency locks: every package of every install pinned, with its hashes.

Each lock is compiled by `uv pip compile` from the file that names the direct dependencies:

    requirements.in                -> requirements.txt                 the app image (API, worker, beat)
    infra/requirements.in          -> infra/requirements.txt           the Pulumi program (.venv-infra)
    requirements-dev.in            -> requirements-dev.txt             .venv: tests, tools, fleet, the lab's controller
    docker/local/secantus.in       -> docker/local/secantus.txt        the MongoDB stand-in image
    ansible/lab/cloud.in           -> ansible/lab/cloud.txt            the lab's S3 API (moto)

in that order: each later one is constrained (-c) by the earlier locks, so a package has one
version in every install. Every install runs pip with --require-hashes, so a package missing
from a lock, or a file that is not the one locked, stops it.

    scripts/lock.py check      a lock that is missing, stale or out of step is an error that says `make lock`
    scripts/lock.py compile    `make lock`: keep every pin the inputs allow, add what is new;
                               --upgrade takes the newest of everything, --upgrade-package NAME one package
    scripts/lock.py entry NAME a package's locked lines, for `pip install --require-hashes -r /dev/stdin`

Only the standard library: `check` runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The lock's compiler, in a virtualenv of its own (.venv-lock): `make lock` must work while the
# locks it writes are missing or stale, when .venv cannot be made from them.
UV_VERSION = "0.13.9"
TOOL_VENV = ROOT / ".venv-lock"
# Every install is CPython 3.11 (Debian 12, python:3.11-slim); --universal keeps the markers of
# other platforms, so a developer's laptop installs from the same lock.
PYTHON_VERSION = "3.11"
DIGEST_PREFIX = "# inputs sha256: "


@dataclass(frozen=True)
class Lock:
    source: str  # the direct dependencies, relative to the repository
    output: str  # the lock


LOCKS = (
    Lock("requirements.in", "requirements.txt"),
    Lock("infra/requirements.in", "infra/requirements.txt"),
    Lock("requirements-dev.in", "requirements-dev.txt"),
    Lock("docker/local/secantus.in", "docker/local/secantus.txt"),
    Lock("ansible/lab/cloud.in", "ansible/lab/cloud.txt"),
)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


class LockError(Exception):
    """A lock cannot be used; the message says what to run."""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path, seen: set[Path] | None = None) -> list[str]:
    """The requirement lines of an input, and of every file it includes with -r, without comments
    or blank lines: what decides the lock, so an edited comment does not make it stale."""
    seen = set() if seen is None else seen
    if path in seen:
        return []
    seen.add(path)
    lines = [f"# {path.relative_to(ROOT)}"]
    for raw in path.read_text().splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        lines.append(line)
        include = re.match(r"^(?:-r|--requirement)\s*=?\s*(\S+)$", line)
        if include:
            lines += requirement_lines((path.parent / include.group(1)).resolve(), seen)
    return lines


def inputs_digest(lock: Lock) -> str:
    return hashlib.sha256("\n".join(requirement_lines(ROOT / lock.source)).encode()).hexdigest()


def pins(lock: Lock) -> dict[str, frozenset[str]]:
    """Each package's versions in a lock (two where a marker splits them, as numpy by Python version)."""
    found: dict[str, set[str]] = {}
    for line in (ROOT / lock.output).read_text().splitlines():
        match = PIN.match(line)
        if match:
            found.setdefault(normalize(match.group(1)), set()).add(match.group(2))
    return {name: frozenset(versions) for name, versions in found.items()}


def check() -> None:
    """Every lock exists, was compiled from its inputs as they are now, and agrees with the others."""
    problems = []
    for lock in LOCKS:
        path = ROOT / lock.output
        if not path.exists():
            problems.append(f"{lock.output} is missing")
            continue
        recorded = next((line for line in path.read_text().splitlines() if line.startswith(DIGEST_PREFIX)), None)
        if recorded is None or recorded.removeprefix(DIGEST_PREFIX) != inputs_digest(lock):
            changed = f"{lock.source} (or a file it includes) changed since it was locked"
            problems.append(f"{lock.output} is stale: {changed}")
    if not problems:
        versions: dict[str, dict[str, frozenset[str]]] = {}
        for lock in LOCKS:
            for name, locked in pins(lock).items():
                versions.setdefault(name, {})[lock.output] = locked
        for name, where in sorted(versions.items()):
            if len(set(where.values())) > 1:
                listed = ", ".join(f"{' and '.join(sorted(locked))} in {output}" for output, locked in where.items())
                problems.append(f"{name} is locked at different versions: {listed}")
    if problems:
        listed = "\n".join(f"error: {problem}" for problem in problems)
        raise LockError(f"{listed}\nrun `make lock`, then commit the locks")


def uv() -> Path:
    binary = TOOL_VENV / "bin" / "uv"
    installed = subprocess.run([binary, "--version"], capture_output=True, text=True) if binary.exists() else None
    if installed is None or installed.stdout.split()[1:2] != [UV_VERSION]:
        if not (TOOL_VENV / "bin" / "pip").exists():
            subprocess.run([sys.executable, "-m", "venv", TOOL_VENV], check=True)
        subprocess.run([TOOL_VENV / "bin" / "pip", "install", "--quiet", f"uv=={UV_VERSION}"], check=True)
    return binary


def compile_locks(upgrade: bool, upgrade_packages: list[str]) -> None:
    """`make lock`: each lock in turn, keeping the pins it has unless told to upgrade."""
    compiler = uv()
    for lock in LOCKS:
        command = [
            compiler, "pip", "compile", lock.source, "--output-file", lock.output,
            "--generate-hashes", "--universal", "--python-version", PYTHON_VERSION,
            "--custom-compile-command", "make lock", "--quiet",
        ]  # fmt: skip
        if upgrade:
            command.append("--upgrade")
        for name in upgrade_packages:
            command += ["--upgrade-package", name]
        print(f"locking {lock.output} from {lock.source}", flush=True)
        subprocess.run(command, cwd=ROOT, check=True, env={**os.environ, "UV_NO_CONFIG": "1"})
        record_digest(lock)
    check()


def record_digest(lock: Lock) -> None:
    """The inputs' digest, under uv's header: `check` compares it with the inputs as they are."""
    path = ROOT / lock.output
    lines = [line for line in path.read_text().splitlines() if not line.startswith(DIGEST_PREFIX)]
    header = next((index for index, line in enumerate(lines) if not line.startswith("#")), len(lines))
    lines.insert(header, DIGEST_PREFIX + inputs_digest(lock))
    path.write_text("\n".join(lines) + "\n")


def entry(name: str) -> str:
    """A package's lines in the dev lock (its pin and its hashes)."""
    wanted = normalize(name)
    lines = (ROOT / "requirements-dev.txt").read_text().splitlines()
    for index, line in enumerate(lines):
        match = PIN.match(line)
        if match and normalize(match.group(1)) == wanted:
            end = index + 1
            while end < len(lines) and lines[end - 1].rstrip().endswith("\\"):
                end += 1
            return "\n".join(lines[index:end]) + "\n"
    raise LockError(f"error: {name} is not in requirements-dev.txt; add it to requirements-dev.in and run `make lock`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("check", help="fail, saying `make lock`, when a lock is missing, stale or out of step")
    compile_verb = verbs.add_parser("compile", help="write every lock (make lock)")
    compile_verb.add_argument("--upgrade", action="store_true", help="take the newest version of every package")
    compile_verb.add_argument(
        "--upgrade-package", action="append", default=[], metavar="NAME", help="take the newest version of NAME"
    )
    entry_verb = verbs.add_parser("entry", help="print a package's locked lines from requirements-dev.txt")
    entry_verb.add_argument("name")
    args = parser.parse_args(argv)
    try:
        if args.verb == "check":
            check()
        elif args.verb == "compile":
            compile_locks(args.upgrade, args.upgrade_package)
        else:
            sys.stdout.write(entry(args.name))
    except LockError as exc:
        print(exc, file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        tool = Path(str(exc.cmd[0])).name
        print(f"error: {tool} failed (exit {exc.returncode}); see its output above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
