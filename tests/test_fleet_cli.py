"""The operators' front door without a fleet: its verbs, where -i may go, and the errors that
need no host (the verbs themselves run on the lab: tests/lab/test_rollout.py, test_operate.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet import cli
from fleet.inventory import SshOptions, ssh_options
from infra.inventory import render
from topology import TIERS

FLEET = str(Path(sys.executable).parent / "fleet")
FLEET_HEALTH = str(Path(sys.executable).parent / "fleet-health")
REPO_ROOT = Path(__file__).resolve().parents[1]
VERBS = ["setup", "deploy", "rollback", "maintain", "health", "logs", "details", "audit", "lock", "unlock"]


def test_every_verb_is_listed_in_the_help():
    result = subprocess.run([FLEET, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for verb in VERBS:
        assert f"\n    {verb} " in result.stdout, verb


@pytest.mark.parametrize(
    "argv",
    [
        ["-i", "inv.yml", "deploy", "app:1"],
        ["deploy", "app:1", "-i", "inv.yml"],
        ["deploy", "-i", "inv.yml", "app:1"],
    ],
)
def test_the_inventory_goes_before_or_after_the_verb(argv):
    args = cli.parser().parse_args(argv)
    assert (args.verb, args.image, args.inventory) == ("deploy", "app:1", "inv.yml")


def test_the_default_inventory_is_the_pulumi_one_of_this_checkout():
    args = cli.parser().parse_args(["details"])
    assert Path(args.inventory) == Path(cli.__file__).resolve().parents[1] / cli.DEFAULT_INVENTORY
    assert Path(args.inventory).exists()


@pytest.mark.parametrize("verb", ["setup", "deploy", "rollback", "lock", "unlock", "details", "audit", "health"])
def test_a_missing_inventory_is_named_with_exit_2(verb, tmp_path, capsys):
    assert cli.main([verb, "-i", str(tmp_path / "nope.yml")]) == 2
    assert f"inventory {tmp_path / 'nope.yml'}: no such file" in capsys.readouterr().err


def test_an_unknown_service_lists_the_known_ones():
    result = subprocess.run([FLEET, "logs", "postgres"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid choice: 'postgres'" in result.stderr and "'api'" in result.stderr


def test_negative_line_counts_are_refused(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["logs", "api", "-n", "-1"])
    assert exit.value.code == 2 and "--lines" in capsys.readouterr().err


def test_unreadable_inventories_get_one_clear_line(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("all: [this is not an inventory\n")
    (tmp_path / "outputs.json").write_text('{"bastion_public_ip": "192.0.2.1"}')
    pulumi = str(REPO_ROOT / "ansible/inventory/pulumi.py")
    cases = [
        (str(tmp_path / "missing.yml"), {}, "no such file"),
        (str(broken), {}, "YAML parsing failed"),
        # The Pulumi script's own message, not Ansible's later attempt to read it as INI.
        (pulumi, {"PULUMI_OUTPUTS_FILE": str(tmp_path / "nope.json")}, "PULUMI_OUTPUTS_FILE="),
        (pulumi, {"PULUMI_OUTPUTS_FILE": str(tmp_path / "outputs.json")}, "no ansible_inventory output"),
    ]
    for inventory, env, says in cases:
        result = subprocess.run(
            [FLEET_HEALTH, "-i", inventory],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env},
        )
        assert result.returncode == 2 and result.stderr.startswith("fleet-health: inventory "), result.stderr
        assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr and "Invalid host pattern" not in result.stderr  # the INI reading


def test_the_ansible_commands_fleet_runs_print_no_library_warning(tmp_path):
    # An inventory without secrets: site.yml's first check refuses it on this machine; the deploy
    # lock's release after the failure finds nothing listening (a closed port on loopback).
    hosts = {tier: {"hosts": {f"{tier}-1": {"private_ip": "127.0.0.1"}}} for tier in TIERS}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        json.dumps({"all": {"vars": {"ansible_host": "127.0.0.1", "ansible_port": 9}, "children": hosts}})
    )
    result = subprocess.run(
        [FLEET, "setup", "-i", str(inventory)], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "app_secrets" in output, output[-3000:]
    assert "Warning:" not in output and "warnings.warn" not in output, output[-3000:]


def test_fleet_reaches_hosts_as_the_rendered_inventory_says():
    """The Pulumi inventory's jump is a ProxyCommand carrying the stack's key and known hosts:
    fleet's own SSH (asyncssh) takes the same jump host, key and known hosts file from it."""
    hosts = {tier: [] for tier in TIERS}
    hosts["bastion"] = [{"name": "b", "zone": "z", "private_ip": "10.0.0.5", "public_ip": "203.0.113.5"}]
    inventory = render(
        hosts,
        bastion_address="203.0.113.5",
        ssh_user="admin",
        app_image="app@sha256:00",
        lb_public_ip="203.0.113.10",
        admin_cidrs=[],
        private_key_file="~/.ssh/stack_key",
        known_hosts_file="/srv/known hosts",
    )["all"]
    behind = {**inventory["vars"], **inventory["children"]["behind_bastion"]["vars"]}
    assert ssh_options(behind) == SshOptions(
        jump="admin@203.0.113.5", key="~/.ssh/stack_key", known_hosts="/srv/known hosts"
    )
    assert ssh_options(inventory["vars"]).jump is None  # the bastion itself is reached directly
    # Hand-written inventories keep working: ProxyJump with a port, -J, -F.
    assert ssh_options({"ansible_ssh_common_args": "-o ProxyJump=ops@198.51.100.1:2222 -F cfg"}) == SshOptions(
        configs=["cfg"], jump="ops@198.51.100.1:2222"
    )
    command = "-o ProxyCommand='ssh -W %h:%p -p 2200 -o StrictHostKeyChecking=accept-new ops@jump'"
    assert ssh_options({"ansible_ssh_common_args": command}).jump == "ops@jump:2200"


def test_a_cluster_short_of_a_member_puts_the_fleet_at_risk_with_its_own_exit_code():
    """A warning that a cluster serves short of a member is "at risk" (3); any other warning
    (a filling disk) leaves the fleet healthy, and a failure or a lost host outranks it."""
    from fleet import health, probe
    from fleet.sweep import HostResult, failure

    def raises(error: Exception):
        def check(_: dict):
            raise error

        return check

    short = probe.run_one("data:redis", raises(probe.Short("primary with 1 of 2 replicas")), {})
    filling = probe.run_one("disk", raises(probe.Warned("/ 85% used")), {})
    assert short["status"] == filling["status"] == "warn"
    assert short["data"] == {"cluster_short": True} and filling["data"] == {}

    def fleet(*checks: dict, reachable: bool = True) -> str:
        return health.verdict([HostResult(target=None, reachable=reachable, checks=list(checks))], [])

    assert fleet(filling) == "healthy"
    assert fleet(short, filling) == "at risk" and health.EXIT["at risk"] == 3
    assert fleet(short, failure("container:redis", "container redis is exited")) == "degraded"
    assert fleet(short, reachable=False) == "down"
    assert [health.EXIT[s] for s in ("healthy", "degraded", "down")] == [0, 1, 2]  # as scripts knew them


def test_a_check_slower_than_the_hosts_deadline_reports_itself_within_it(tmp_path):
    """The sweep hands the probe what is left of the host's deadline; a check whose command
    would outlive it is cut there and fails as itself, so the sweep (which gives up on the
    host at its deadline) does not report a slow command as an unreachable host."""
    probe = Path(__file__).resolve().parents[1] / "fleet" / "probe.py"
    # A worker host whose `docker exec` hangs (a Celery ping that waits on a struggling broker).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text('#!/bin/sh\ncase "$1" in exec) exec sleep 30;; info) echo 24.0;; *) exit 1;; esac\n')
    docker.chmod(0o755)
    facts = {"host": "h", "groups": ["workers"], "app_image": "app:1", "budget": 2}
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, str(probe), json.dumps(facts)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    )
    took = time.monotonic() - started
    checks = {c["check"]: c for c in json.loads(run.stdout)["checks"]}
    assert run.returncode == 0 and took < 5, (took, run.stderr)
    celery = checks["workers:celery"]
    assert celery["status"] == "fail" and celery["detail"].startswith("timed out after 2s: docker exec worker"), celery
    assert checks["docker"]["status"] == "ok" and checks["load"]["status"] != "fail", checks
