"""The README and docs/ refer only to things that exist: links and their anchors, make targets,
repository paths, and the flags of this repository's commands. The README stays a front page.

Fast, no servers: it reads the markdown, the Makefile and the commands' `--help`.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent  # console scripts (fleet, fleet-health) live beside the interpreter
README_MAX_LINES = 200

# A backticked word is a repository path when it has a slash or one of these endings...
PATH_ENDINGS = (".py", ".yml", ".yaml", ".sh", ".conf", ".md", ".txt", ".toml", ".j2", ".inc")
# ...unless it is one of these, which are not in the repository by design.
HOST_PATHS = ("/etc/", "/var/", "/srv/", "/dev/", "/tmp/", "/usr/", "/run/", "~/")  # on hosts and in containers
API_ROUTES = ("/api/", "/health", "/docs", "/redoc", "/metrics", "/.well-known/")
GENERATED = (".venv/", ".venv-infra/", ".lab/", ".devstack/", "benchmarks/results/")  # made by make and the tools
PLACEHOLDERS = ("<", "…")  # benchmarks/results/<time>/: what comes before one must exist

FENCE = re.compile(r"^\s*```")
CODE_SPAN = re.compile(r"`([^`\n]+(?:\n[^`\n]+)*)`")  # may wrap lines, not paragraphs
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$")
CIDR = re.compile(r"^[\d.]+/\d+$")
SHELL_SEPARATORS = re.compile(r"&&|\|\||[;|]|\$\(")
ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")


# --- reading markdown ---------------------------------------------------------------------


@functools.cache
def split(doc: Path) -> tuple[str, list[str]]:
    """(prose, code blocks): the prose keeps its line numbers, fenced lines blanked."""
    prose, blocks, block = [], [], None
    for line in doc.read_text().splitlines():
        if FENCE.match(line):
            if block is None:
                block = []
            else:
                blocks.append("\n".join(block))
                block = None
            prose.append("")
        elif block is not None:
            block.append(line)
            prose.append("")
        else:
            prose.append(line)
    assert block is None, f"{doc.name}: a code block is never closed"
    return "\n".join(prose), blocks


def code_spans(doc: Path) -> list[str]:
    prose, _ = split(doc)
    return [" ".join(span.split()) for span in CODE_SPAN.findall(prose)]


def code(doc: Path) -> list[str]:
    """Every piece of code in the document: its blocks, then its inline spans."""
    return split(doc)[1] + code_spans(doc)


def links(doc: Path) -> list[str]:
    prose, _ = split(doc)
    return LINK.findall(CODE_SPAN.sub("", prose))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text as rendered, lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def anchors(doc: Path) -> set[str]:
    """Its headings' anchors; a repeated heading gets -1, -2, ... as on GitHub."""
    prose, _ = split(doc)
    found, times = set(), {}
    for line in prose.splitlines():
        if match := HEADING.match(line):
            base = slug(match.group(1))
            found.add(f"{base}-{times[base]}" if base in times else base)
            times[base] = times.get(base, 0) + 1
    return found


# --- reading commands ---------------------------------------------------------------------


def words(part: str) -> list[str]:
    try:
        return shlex.split(part, comments=True)
    except ValueError:  # an unbalanced quote in sample output
        return part.split()


def commands(text: str) -> list[list[str]]:
    """The shell commands in a piece of code, as words, without prompts, sudo and VAR=value prefixes."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        for part in SHELL_SEPARATORS.split(line.strip().removeprefix("$ ")):
            command = words(part)
            while command and (command[0] == "sudo" or ASSIGNMENT.match(command[0])):
                command = command[1:]
            if command:
                found.append(command)
    return found


@functools.cache
def makefile_targets() -> set[str]:
    targets = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        if match := re.match(r"^([\w][\w./ -]*?)\s*:(?!=)", line):
            targets.update(match.group(1).split())
    return targets


# --- repository paths ---------------------------------------------------------------------


@functools.cache
def top_level_dirs() -> tuple[str, ...]:
    return tuple(sorted(p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".")))


def paths_in(piece: str) -> list[str]:
    """Words that name repository paths: in any code, those under a top-level directory (`ansible/...`);
    a backticked word on its own, also any with a slash or a file ending."""
    under_top = rf"(?<![\w./$~-])(?:{'|'.join(map(re.escape, top_level_dirs()))})/[^\s'\"`),;]*"
    found = re.findall(under_top, piece)
    if not re.search(r"\s", piece) and ("/" in piece or piece.endswith(PATH_ENDINGS)):
        found.append(piece)
    return list(dict.fromkeys(word.rstrip(".,:;") for word in found))


def on_a_host(word: str) -> bool:
    return word == "/" or any(word == top.rstrip("/") or word.startswith(top) for top in HOST_PATHS)


def path_problem(word: str) -> str | None:
    if any(mark in word for mark in (":", "@", "=", "$", "{")) or CIDR.match(word):
        return None  # a URL, an image, host:port, an assignment, a variable, a network
    if word.startswith(("/", "~")):
        return None if on_a_host(word) or word.startswith(API_ROUTES) else f"{word}: neither on a host nor a route"
    if word.startswith(GENERATED):
        return None
    if "*" in word:
        return None if any(REPO.glob(word)) else f"{word}: matches no file"
    for mark in PLACEHOLDERS:
        word = word.split(mark)[0]
    return None if (REPO / word).exists() else f"{word}: no such file or directory"


# --- the flags of this repository's commands ----------------------------------------------


def skip_global_options(arguments: list[str]) -> list[str]:
    """fleet's arguments without `-i INVENTORY`, which may come before the verb."""
    rest, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
        elif argument in ("-i", "--inventory"):
            skip = True
        elif not argument.startswith(("-i=", "--inventory=")):
            rest.append(argument)
    return rest


def help_commands(command: list[str]) -> tuple[str, list[tuple[str, ...]]] | None:
    """(which command, the argv whose --help lists its flags), for a command of this repository."""
    program, python = command[0], sys.executable
    name = program.rsplit("/", 1)[-1]  # .venv/bin/fleet is fleet; fleet/ (the directory) is not
    if name == "fleet-health":
        return "fleet-health", [(str(BIN / "fleet-health"),)]
    if name == "fleet":
        verb = next((a for a in skip_global_options(command[1:]) if not a.startswith("-")), None)
        return "fleet", [(str(BIN / "fleet"),)] + ([(str(BIN / "fleet"), verb)] if verb else [])
    if name.startswith("python") and command[1:3] in (["-m", "devstack"], ["-m", "benchmarks.bench"]):
        return f"python -m {command[2]}", [(python, "-m", command[2])]
    script = command[1] if name.startswith("python") and len(command) > 1 else program
    if script.endswith("ansible/lab/lab.py"):
        return "ansible/lab/lab.py", [(python, str(REPO / "ansible/lab/lab.py"))]
    return None


@functools.cache
def flags_in_help(argv: tuple[str, ...]) -> frozenset[str] | str:
    """The --flags `argv --help` lists, or why it could not be asked."""
    try:
        result = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=60, cwd=REPO)
    except FileNotFoundError:
        return f"{argv[0]} does not exist (make venv installs it)"
    if result.returncode != 0:
        return f"`{' '.join(argv)} --help` failed: {(result.stderr or result.stdout).strip()[-300:]}"
    return frozenset(re.findall(r"--[a-z][\w-]*", result.stdout))


def uses(which: str) -> list[tuple[Path, list[str], list[tuple[str, ...]]]]:
    """Every use of one of this repository's commands in the docs: (doc, words, help argvs)."""
    found = []
    for doc in DOCS:
        for piece in code(doc):
            for command in commands(piece):
                known = help_commands(command)
                if known and known[0] == which:
                    found.append((doc, command, known[1]))
    return found


# --- the tests ------------------------------------------------------------------------------


def test_the_readme_is_a_front_page():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_the_readme_links_every_docs_page():
    linked = {(README.parent / link.split("#")[0]).resolve() for link in links(README)}
    missing = [doc.name for doc in DOCS[1:] if doc.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_links_lead_to_files_and_headings(doc):
    problems = []
    for link in links(doc):
        if re.match(r"^[a-z][a-z+.-]*:", link):  # https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        if not path.exists():
            problems.append(f"{link}: no such file")
        elif anchor and (path.suffix != ".md" or anchor not in anchors(path)):
            problems.append(f"{link}: no heading #{anchor} in {path.name}")
    assert not problems, f"{doc.name}: {problems}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_make_targets_exist(doc):
    unknown = []
    for piece in code(doc):
        for command in commands(piece):
            if command[0] == "make":
                targets = [word for word in command[1:] if "=" not in word and not word.startswith("-")]
                unknown += [f"make {target}" for target in targets if target not in makefile_targets()]
    assert not unknown, f"{doc.name}: not targets in the Makefile: {unknown}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_repository_paths_exist(doc):
    problems = [problem for piece in code(doc) for word in paths_in(piece) if (problem := path_problem(word))]
    assert not problems, f"{doc.name}: {sorted(set(problems))}"


@pytest.mark.parametrize(
    "which", ["fleet-health", "fleet", "python -m devstack", "python -m benchmarks.bench", "ansible/lab/lab.py"]
)
def test_command_flags_exist(which):
    """Each --flag is in the command's --help (fleet's: its own or its verb's, so a wrong verb fails too)."""
    problems = []
    for doc, command, helps in uses(which):
        used = {word.split("=")[0] for word in command[1:] if word.startswith("--")}
        known: set[str] = set()
        for argv in helps:
            listed = flags_in_help(argv)
            if isinstance(listed, str):
                problems.append(f"{doc.name}: {listed}")
            else:
                known |= listed
        problems += [f"{doc.name}: {' '.join(command)}: {flag} is not in its --help" for flag in sorted(used - known)]
    assert not problems, "\n".join(dict.fromkeys(problems))


SHOW_SECRETS = re.compile(r"--show-secrets[^\n>|]*>\s*(\S+)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_saved_stack_outputs_stay_private(doc):
    """Every documented `--show-secrets > FILE` (every password of a stack) writes under
    `umask 077`, outside the checkout or to a name .gitignore covers."""
    problems = []
    for block in split(doc)[1]:
        command = block.replace("\\\n", " ")
        for match in SHOW_SECRETS.finditer(command):
            target = match.group(1).rstrip(")")
            if "umask 077" not in command[: match.start()]:
                problems.append(f"{target}: written without `umask 077` before it")
            if target.startswith(("~/", "/", "$HOME")):
                continue
            ignored = subprocess.run(["git", "check-ignore", "-q", target], cwd=REPO, timeout=30).returncode == 0
            if not ignored:
                problems.append(f"{target}: in the checkout and not ignored by .gitignore")
    assert not problems, f"{doc.name}: {problems}"
