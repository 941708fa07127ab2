"""The local multi-host lab for the rollout and fleet-health tests: up once, converged by
`fleet setup` from the inventory the Pulumi program rendered for the lab's stack (the hosts
provider), over SSH through the bastion from an empty known_hosts, and removed at the end
(LAB_KEEP=1 keeps it; LAB_DIR and LAB_REUSE=1 take a kept one up again).

Nothing a provider or the stack sets is passed with -e: a test that needs another stack writes
one (Lab.variant) and renders it through the same program."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LAB_NAME = "labtest"
LAB_SUBNET = os.environ.get("LAB_TEST_SUBNET", "172.31")
TIMINGS: list[str] = []
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class PlaybookRun:
    returncode: int
    output: str
    seconds: float
    recap: dict[str, dict[str, int]] = field(default_factory=dict)

    def says(self, text: str) -> bool:
        """Whether the output holds `text`, whatever line breaks Ansible put into its messages."""
        return " ".join(text.split()) in " ".join(self.output.split())


@dataclass
class Lab:
    dir: Path

    @property
    def outputs(self) -> dict:
        return json.loads((self.dir / "outputs.json").read_text())

    @property
    def stack_file(self) -> Path:
        return self.dir / f"Pulumi.{LAB_NAME}.yaml"

    @property
    def cloud(self) -> dict:
        """The lab cloud's generated credentials (ansible/lab/cloud.py)."""
        return json.loads((self.dir / "cloud/settings.json").read_text())

    @property
    def cloud_registry(self) -> str:
        """The stack's registry, host:port (the images are pushed there, the hosts pull from it)."""
        return self.outputs["ansible_inventory"]["all"]["vars"]["registry_server"]

    @property
    def ca(self) -> Path:
        """The lab's CA, which signs the registry's, the S3 API's and the ACME server's certificates."""
        return self.dir / "cloud/ca.pem"

    def variant(self, name: str, **config) -> Path:
        """Another stack on the same machines: the lab's stack file with some settings changed
        (None removes one), rendered by the Pulumi program as the lab's is. Returns its outputs."""
        stack = yaml.safe_load(self.stack_file.read_text())
        for key, value in config.items():
            if value is None:
                stack["config"].pop(f"microservices:{key}", None)
            else:
                stack["config"][f"microservices:{key}"] = value
        stack_file = self.dir / f"Pulumi.{LAB_NAME}-{name}.yaml"
        stack_file.write_text(yaml.safe_dump(stack, sort_keys=False))
        outputs = self.dir / f"outputs-{name}.json"
        rendered = subprocess.run(
            [sys.executable, "-m", "infra.offline", str(stack_file), "--state", str(self.dir / "state.json"),
             "--outputs", str(outputs)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert rendered.returncode == 0, rendered.stderr
        return outputs

    @property
    def lb_url(self) -> str:
        return f"http://{self.outputs['lb_public_ip']}"

    def hosts(self, tier: str) -> list[dict]:
        return self.outputs["hosts"][tier]

    def lab(self, *args: str, timeout: float = 1800) -> str:
        result = subprocess.run(
            [
                sys.executable,
                str(REPO_ROOT / "ansible/lab/lab.py"),
                *args,
                "--name",
                LAB_NAME,
                "--dir",
                str(self.dir),
                "--subnet",
                LAB_SUBNET,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    @property
    def env(self) -> dict[str, str]:
        """The environment the playbooks and the fleet command run in: the operator's, pointed at
        this lab's stack outputs, with their own credentials for the stack's S3 API (restore.yml
        reads the bucket on this machine), which trust the lab's CA."""
        cloud = self.cloud
        return {
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible/ansible.cfg"),
            "PULUMI_OUTPUTS_FILE": str(self.dir / "outputs.json"),
            "ANSIBLE_NOCOLOR": "1",
            # Own control sockets: a stale one from an earlier lab with the same addresses
            # would point at hosts that are gone.
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.dir / "cp"),
            "AWS_ACCESS_KEY_ID": cloud["s3_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": cloud["s3_secret_access_key"],
            "AWS_CA_BUNDLE": str(self.ca),
        }

    def run(self, name: str, command: list[str], timeout: float, outputs: Path | None = None) -> PlaybookRun:
        """A command whose output holds Ansible's recap (a playbook, or a fleet verb running one);
        `outputs` names another stack's outputs than the lab's (Lab.variant)."""
        started = time.monotonic()
        env = {**self.env, **({"PULUMI_OUTPUTS_FILE": str(outputs)} if outputs else {})}
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
        )
        output = result.stdout + result.stderr
        (self.dir / f"{name}-{int(started)}.log").write_text(output)
        recap = {
            host: {"ok": int(ok), "changed": int(changed), "unreachable": int(unreachable), "failed": int(failed)}
            for host, ok, changed, unreachable, failed in RECAP.findall(output)
        }
        return PlaybookRun(result.returncode, output, time.monotonic() - started, recap)

    def playbook(self, name: str, *extra: str, timeout: float = 1800, outputs: Path | None = None) -> PlaybookRun:
        command = [
            str(BIN / "ansible-playbook"),
            "-i",
            str(REPO_ROOT / "ansible/inventory/pulumi.py"),
            str(REPO_ROOT / "ansible" / name),
            *extra,
        ]
        # By file name: a playbook given by its full path (tests/lab/playbooks/) would put the
        # log beside it, in the repository, instead of in the lab's directory.
        return self.run(Path(name).name, command, timeout, outputs)

    def fleet(self, *args: str, timeout: float = 1800, outputs: Path | None = None) -> PlaybookRun:
        """The operators' front door (`fleet VERB ...`) on this lab, through the Pulumi inventory
        (of the lab's stack, or of another's `outputs`)."""
        return self.run(f"fleet-{args[0]}", self.fleet_command(*args), timeout, outputs)

    def fleet_command(self, *args: str) -> list[str]:
        return [str(BIN / "fleet"), *args, "-i", str(REPO_ROOT / "ansible/inventory/pulumi.py")]

    def fleet_json(self, *args: str) -> dict:
        """A read-only fleet verb's --json answer (stdout alone: warnings go to stderr)."""
        result = subprocess.run(
            self.fleet_command(*args, "--json"), capture_output=True, text=True, timeout=120, env=self.env
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    def host(self, tier: str, index: int = 0) -> dict:
        return self.hosts(tier)[index]

    def fleet_health(
        self, *args: str, inventory: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        env = {**os.environ, "PULUMI_OUTPUTS_FILE": str(self.dir / "outputs.json")}
        return subprocess.run(
            [str(BIN / "fleet-health"), "-i", inventory or str(REPO_ROOT / "ansible/inventory/pulumi.py"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )

    def ssh_args(self, behind_bastion: bool = True) -> list[str]:
        """The SSH options the rendered inventory carries (through the bastion, or to it)."""
        inventory = self.outputs["ansible_inventory"]["all"]
        variables = inventory["children"]["behind_bastion"]["vars"] if behind_bastion else inventory["vars"]
        return shlex.split(variables["ansible_ssh_common_args"])

    def ssh(self, host_ip: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command on a lab host, through the bastion, with the inventory's SSH settings."""
        outputs = self.outputs
        args = self.ssh_args(behind_bastion=host_ip != outputs["bastion_public_ip"])
        return subprocess.run(
            ["ssh", *args, "-o", "BatchMode=yes", f"{outputs['ssh_user']}@{host_ip}", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )


def failed_hosts(run: PlaybookRun) -> dict[str, dict[str, int]]:
    return {host: r for host, r in run.recap.items() if r["failed"] or r["unreachable"]}


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> Iterator[Lab]:
    # LAB_DIR=... LAB_KEEP=1 keeps a lab after the run; LAB_REUSE=1 with the same LAB_DIR
    # takes it up again (converged again, which changes what the code changed) instead of
    # building a new one: a faster loop while working on the rollout.
    directory = Path(os.environ["LAB_DIR"]) if os.environ.get("LAB_DIR") else tmp_path_factory.mktemp("lab")
    directory.mkdir(parents=True, exist_ok=True)
    lab = Lab(directory)
    if not (os.environ.get("LAB_REUSE") == "1" and (directory / "outputs.json").exists()):
        lab.lab("down")  # a clean start, whatever an interrupted run left
        started = time.monotonic()
        lab.lab("up")
        TIMINGS.append(f"lab up: {time.monotonic() - started:.0f}s")
    RUNNING.append(lab)
    yield lab
    take_down()


# The lab that is up. Its hosts run the whole system (nine dockerds, the data services, the
# API, the workers), so it goes as soon as its last test is done (pytest_runtest_teardown)
# rather than with the session: left up, it took the CPU from the e2e tests run after it.
RUNNING: list[Lab] = []


def take_down() -> None:
    while RUNNING:
        lab = RUNNING.pop()
        if os.environ.get("LAB_KEEP") != "1":
            lab.lab("down")


@pytest.hookimpl(trylast=True)  # after pytest's own teardown: the module fixtures use the lab
def pytest_runtest_teardown(item, nextitem) -> None:
    if nextitem is None or nextitem.path.parent != item.path.parent:
        take_down()


@pytest.fixture(scope="session")
def converged(lab: Lab) -> Lab:
    # A clean controller: the stack's known_hosts is empty, and nothing but the rendered
    # inventory says how to reach the hosts (the bastion included). stdin is closed, so a
    # prompt for a host key would fail the run rather than wait.
    assert not (lab.dir / "known_hosts").exists() or os.environ.get("LAB_REUSE") == "1"
    run = lab.fleet("setup")
    TIMINGS.append(f"fleet setup (site.yml) from fresh hosts: {run.seconds:.0f}s")
    assert run.returncode == 0 and not failed_hosts(run), run.output[-6000:]
    assert set(run.recap) >= {h["name"] for tier in lab.outputs["hosts"].values() for h in tier}
    return lab


def pytest_terminal_summary(terminalreporter) -> None:
    if TIMINGS:
        terminalreporter.section("ansible lab")
        for line in TIMINGS:
            terminalreporter.write_line(line)


# The destructive ones last: test_data.py restarts the data node and destroys its database, and
# test_host_loss.py kills each data node and a load balancer (and brings each back whole). Then
# test_tls.py, which makes the load balancers production's (HTTPS only) and leaves them so.
ORDER = [
    "test_fleet_health.py",
    "test_rollout.py",
    "test_operate.py",
    "test_maintain.py",
    "test_data.py",
    "test_host_loss.py",
    "test_tls.py",
]


def pytest_collection_modifyitems(items) -> None:
    def key(item) -> int:
        name = item.path.name
        return ORDER.index(name) if item.path.parent.name == "lab" and name in ORDER else -1

    items.sort(key=key)
    for item in items:
        if item.path.parent.name == "lab":
            item.add_marker(pytest.mark.lab)
            item.add_marker(pytest.mark.timeout(2400))
