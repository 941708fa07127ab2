"""The app image's release tag, derived from what goes into the image.

The tag is a hash of Dockerfile.app and of every file the build context holds (the files
.dockerignore lets through). The same source gives the same tag, so `pulumi up` with no code
change builds and pushes nothing; any change to the image's content gives a new tag, which
an IMMUTABLE repository accepts. A change elsewhere (docs, tests, infra) leaves it alone.
"""

from __future__ import annotations

import hashlib
import os
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

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


if __name__ == "__main__":
    print(content_tag())
