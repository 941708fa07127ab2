"""The app image's release tag, derived from what goes into the image.

The tag is a hash of Dockerfile.app and of every file the build context holds (the files
.dockerignore lets through). The same source gives the same tag, so `pulumi up` with no code
change builds and pushes nothing; any change to the image's content gives a new tag, which
an IMMUTABLE repository accepts. A change elsewhere (docs, tests, infra) leaves it alone.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from topology import VERSION

SOURCE = Path(__file__).resolve().parents[1]
DOCKERFILE = "Dockerfile.app"
TAG_PREFIX = "src-"


def _patterns(root: Path) -> list[tuple[str, bool]]:
    """.dockerignore as (pattern, excludes) in file order; the last match decides."""
    ignore = root / ".dockerignore"
    rules = []
    for line in ignore.read_text().splitlines() if ignore.exists() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((line.lstrip("!").strip("/"), not negated))
    return rules


def _matches(pattern: str, path: PurePosixPath) -> bool:
    # A pattern matches a path or any of its parent directories; `**/x` also matches `x`.
    candidates = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
    prefixes = [str(PurePosixPath(*path.parts[: n + 1])) for n in range(len(path.parts))]
    return any(fnmatchcase(prefix, candidate) for candidate in candidates for prefix in prefixes)


def _excluded(rules: list[tuple[str, bool]], path: PurePosixPath) -> bool:
    excluded = False
    for pattern, excludes in rules:
        if _matches(pattern, path):
            excluded = excludes
    return excluded


def context_files(root: Path | None = None) -> list[str]:
    """The build context's files, relative to root, sorted: what `docker build` sends."""
    root = root or SOURCE
    rules = _patterns(root)
    included = [pattern for pattern, excludes in rules if not excludes]
    files = []
    for directory, subdirs, names in os.walk(root):
        relative = PurePosixPath(Path(directory).relative_to(root).as_posix())
        # Skip an excluded directory unless a `!pattern` could bring back something inside it.
        subdirs[:] = [
            d
            for d in subdirs
            if not _excluded(rules, relative / d)
            or any(p.startswith(f"{relative / d}/".lstrip("./")) or p[:1] in "*?[" for p in included)
        ]
        files.extend(str(relative / name) for name in names if not _excluded(rules, relative / name))
    return sorted(path.removeprefix("./") for path in files)


def content_tag(root: Path | None = None) -> str:
    """src-<16 hex digits> over Dockerfile.app and the context's file names and contents."""
    root = root or SOURCE
    digest = hashlib.sha256()
    for name in [DOCKERFILE, *context_files(root)]:
        digest.update(name.encode() + b"\0" + hashlib.sha256((root / name).read_bytes()).digest())
    return TAG_PREFIX + digest.hexdigest()[:16]


def push(image: str, repository: str, tag: str | None = None, docker_config: Path | None = None) -> str:
    """Push a built image to `repository` under its release tag (the content tag unless given), as
    `pulumi up` pushes to ECR; return what the hosts run, `repository@sha256:...`. The registry's
    login is Docker's own (`docker login`, or DOCKER_CONFIG pointing at one)."""
    tagged = f"{repository}:{tag or content_tag()}"
    env = {**os.environ, **({"DOCKER_CONFIG": str(docker_config)} if docker_config else {})}
    for command in (["docker", "tag", image, tagged], ["docker", "push", "--quiet", tagged]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
        if result.returncode != 0:
            raise ReleaseError(f"`{' '.join(command)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    digests = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{range .RepoDigests}}{{println .}}{{end}}", tagged],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pushed = [digest for digest in digests if digest.startswith(f"{repository}@sha256:")]
    if not pushed:
        raise ReleaseError(f"{tagged} was pushed, but Docker names no digest in {repository}")
    return pushed[0]


class ReleaseError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The app image's release: its tag (by content), or a push of a built image to a registry "
        "that is not the stack's own (a stack of the hosts provider, whose `pulumi up` builds nothing)."
    )
    verbs = parser.add_subparsers(dest="verb")
    verbs.add_parser("tag", help="print the release tag of this checkout (the default)")
    pushing = verbs.add_parser("push", help="push IMAGE to REPOSITORY under the release tag; print the digest")
    pushing.add_argument("image", help=f"the built image, e.g. microservices-app:{VERSION}")
    pushing.add_argument("repository", help="e.g. registry.example.com/microservices-app")
    pushing.add_argument("--tag", help="instead of the content tag")
    args = parser.parse_args(argv)
    if args.verb != "push":
        print(content_tag())
        return 0
    try:
        print(push(args.image, args.repository, args.tag))
    except ReleaseError as error:
        print(f"release: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
