"""The Pulumi program without the Pulumi CLI: run under the SDK's mocks with a stack file's
configuration, giving what `pulumi stack output --json --show-secrets` would.

Where no Pulumi CLI can be had (the local lab's machine), this renders the same outputs, the
Ansible inventory among them, from the same program. The engine's state is stood in for by a
small JSON file: a generated password keeps its value from one run to the next, as Pulumi keeps
it in the stack's state. A provider that creates resources (aws) gets nothing real from this;
the hosts provider creates none, so its outputs are those `pulumi up` would give.

    python -m infra.offline Pulumi.lab.yaml --state STATE.json --outputs OUTPUTS.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import string
import sys
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import settings
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs

PROJECT = "microservices"


def _event_loop() -> None:
    """Pulumi's mocks run on the thread's current event loop. A process that ran asyncio.run()
    before (a test runner, in its earlier tests) has none left: asyncio.run() unsets it."""
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


def run(stack: str, config: dict[str, Any], mocks: pulumi.runtime.Mocks, secret_keys: list[str] | None = None):
    """Run infra.program under `mocks`; (outputs, the names of the secret ones)."""
    from infra import program

    settings.set_root_resource(None)
    _event_loop()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False)
    # Pulumi hands structured values to programs as JSON strings.
    pulumi.runtime.set_all_config(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}, secret_keys or []
    )
    resolved: dict[str, Any] = {}
    secret: set[str] = set()
    transformation = getattr(mocks, "transformation", None)

    @pulumi.runtime.test
    def body() -> pulumi.Output:
        if transformation is not None:
            pulumi.runtime.register_stack_transformation(transformation)
        program.run()
        outputs = settings.get_root_resource().outputs

        async def collect() -> None:
            for name, value in outputs.items():
                output = pulumi.Output.from_input(value)
                resolved[name] = await output.future()
                if await output.is_secret():
                    secret.add(name)

        return pulumi.Output.from_input(collect())

    body()
    return resolved, secret


class KeptState(pulumi.runtime.Mocks):
    """Mocks that keep what the engine would: each generated password in a state file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict]:
        outputs = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            if args.name not in self.state:
                alphabet = string.ascii_letters + string.digits  # special=False, as infra/secrets.py asks
                self.state[args.name] = "".join(secrets.choice(alphabet) for _ in range(int(args.inputs["length"])))
            outputs["result"] = self.state[args.name]
        return f"{args.name}_id", outputs

    def call(self, args: MockCallArgs) -> dict:
        return {}

    def save(self) -> None:
        self.path.write_text(json.dumps(self.state, indent=2))
        self.path.chmod(0o600)


def stack_file_config(path: Path) -> tuple[dict[str, Any], list[str]]:
    """A stack file's config, and the keys it marks secret ({secure: ...} in Pulumi's files; here,
    with no CLI to encrypt them, {secret: VALUE})."""
    config, secret_keys = {}, []
    for key, value in (yaml.safe_load(path.read_text()) or {}).get("config", {}).items():
        if isinstance(value, dict) and set(value) == {"secret"}:
            value = value["secret"]
            secret_keys.append(key)
        config[key] = value
    return config, secret_keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stack_file", type=Path, help="Pulumi.<stack>.yaml")
    parser.add_argument("--state", type=Path, required=True, help="the generated passwords, kept between runs")
    parser.add_argument("--outputs", type=Path, required=True, help="where to write the outputs (mode 0600)")
    args = parser.parse_args(argv)
    stack = args.stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")
    config, secret_keys = stack_file_config(args.stack_file)
    state = KeptState(args.state)
    try:
        outputs, _ = run(stack, config, state, secret_keys)
    except pulumi.RunError as error:
        print(f"offline: {error}", file=sys.stderr)
        return 1
    state.save()
    descriptor = os.open(args.outputs, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(outputs, file, indent=2)
    args.outputs.chmod(0o600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
