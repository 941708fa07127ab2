"""The Pulumi program under mocks, with the real stack files' configuration."""

from __future__ import annotations

import ast
import json
import os
import shlex
import subprocess
import sys
from collections import Counter, defaultdict

import pytest
from pulumi_harness import REPO_ROOT, STACKS, Recorder, Run, ami_id, run_program, s3_type, stack_config

from infra.config import ConfigError
from topology import SECRETS

EXPECTED_HOSTS = {
    "dev": {"lb": 1, "bastion": 1, "api": 1, "workers": 1, "data": 1},
    "prod": {"lb": 1, "bastion": 1, "api": 3, "workers": 3, "data": 3},
}
PRIVATE_TIERS = ("api", "workers", "data")
INSTANCE = "aws:ec2/instance:Instance"
SUBNET = "aws:ec2/subnet:Subnet"
GROUP = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EIP = "aws:ec2/eip:Eip"
VOLUME = "aws:ebs/volume:Volume"


def instances_by_tier(result: Run) -> dict[str, list]:
    tiers = defaultdict(list)
    for instance in result.recorder.of_type(INSTANCE):
        tiers[instance.inputs["tags"]["tier"]].append(instance)
    return tiers


def test_hosts_per_tier(run):
    stack, result = run
    counts = {tier: len(hosts) for tier, hosts in instances_by_tier(result).items()}
    assert counts == EXPECTED_HOSTS[stack]
    assert {tier: len(hosts) for tier, hosts in result.outputs["hosts"].items()} == EXPECTED_HOSTS[stack]
    pinned = ami_id(stack_config(STACKS[stack])["microservices:ami"])
    assert {instance.inputs["ami"] for instance in result.recorder.of_type(INSTANCE)} == {pinned}


def test_production_spreads_every_tier_over_zones(run):
    stack, result = run
    zone_of_subnet = {s.id: s.inputs["availabilityZone"] for s in result.recorder.of_type(SUBNET)}
    for tier, hosts in instances_by_tier(result).items():
        zones = {zone_of_subnet[h.inputs["subnetId"]] for h in hosts}
        if stack == "prod" and tier in PRIVATE_TIERS:
            assert len(zones) == 3, (tier, zones)  # three hosts over three zones
        assert len(zones) == min(len(hosts), len(set(zone_of_subnet.values())))


def test_private_tiers_have_no_public_address(run):
    _, result = run
    subnets = {s.id: s for s in result.recorder.of_type(SUBNET)}
    with_eip = {eip.inputs.get("instance") for eip in result.recorder.of_type(EIP)}
    for tier, hosts in instances_by_tier(result).items():
        for host in hosts:
            subnet = subnets[host.inputs["subnetId"]]
            public = tier in ("lb", "bastion")
            assert host.inputs["associatePublicIpAddress"] is public
            assert subnet.inputs["tags"]["access"] == ("public" if public else "private")
            assert subnet.inputs["mapPublicIpOnLaunch"] is False
            assert (host.id in with_eip) is public
    for tier in PRIVATE_TIERS:
        assert all("public_ip" not in h or h["public_ip"] is None for h in result.outputs["hosts"][tier])
    # Private subnets route to a NAT gateway, public ones to the internet gateway.
    for table in result.recorder.of_type("aws:ec2/routeTable:RouteTable"):
        route = table.inputs["routes"][0]
        if table.name.startswith("network-private"):
            assert "natGatewayId" in route and "gatewayId" not in route
        else:
            assert "gatewayId" in route


# The one port range: RabbitMQ's CLI tools (topology's RABBITMQ_CLI_PORTS), from its first port.
RANGES = {35672: 35682}


def ingress_matrix(result: Run) -> set[tuple[str, int, str]]:
    """(target tier, port, source) for every ingress rule, the source a tier or a CIDR."""
    tier_of_group = {g.id: g.inputs["tags"]["tier"] for g in result.recorder.of_type(GROUP)}
    matrix = set()
    for rule in result.recorder.of_type(INGRESS):
        first = rule.inputs["fromPort"]
        assert rule.inputs["ipProtocol"] == "tcp" and rule.inputs["toPort"] == RANGES.get(first, first)
        source = rule.inputs.get("cidrIpv4") or tier_of_group[rule.inputs["referencedSecurityGroupId"]]
        matrix.add((tier_of_group[rule.inputs["securityGroupId"]], rule.inputs["fromPort"], source))
    return matrix


def test_firewalls_open_exactly_the_topology(run):
    stack, result = run
    admin = stack_config(STACKS[stack])["microservices:adminCidrs"]
    expected = {
        ("lb", 80, "0.0.0.0/0"),
        ("lb", 443, "0.0.0.0/0"),
        ("api", 8000, "lb"),
        *(("data", port, source) for port in (27017, 6379, 26379, 5672) for source in ("api", "workers")),
        # The data nodes to each other: MongoDB's replica set, Redis's replicas and Sentinels,
        # RabbitMQ's cluster (epmd, distribution, and from 35672 the CLI tools' ports).
        *(("data", port, "data") for port in (27017, 6379, 26379, 4369, 25672, 35672)),
        ("data", 15672, "bastion"),
        *(("bastion", 22, cidr) for cidr in admin),
        *((tier, 22, "bastion") for tier in ("lb", "api", "workers", "data")),
    }
    matrix = ingress_matrix(result)
    assert matrix == expected
    assert len(result.recorder.of_type(INGRESS)) == len(expected)  # no duplicates either
    # Only the load balancer is open to the internet, and only on 80 and 443.
    assert {(t, p) for t, p, s in matrix if s == "0.0.0.0/0"} == {("lb", 80), ("lb", 443)}
    # The data ports never face the load balancer or the internet.
    assert not {s for t, p, s in matrix if t == "data" and p != 22} - {"api", "workers", "data", "bastion"}


def test_volumes_are_encrypted(run):
    stack, result = run
    for instance in result.recorder.of_type(INSTANCE):
        assert instance.inputs["rootBlockDevice"]["encrypted"] is True
        assert instance.inputs["metadataOptions"]["httpTokens"] == "required"
    volumes = result.recorder.of_type(VOLUME)
    assert len(volumes) == EXPECTED_HOSTS[stack]["data"]
    assert all(v.inputs["encrypted"] is True and v.inputs["tags"]["tier"] == "data" for v in volumes)
    assert len(result.recorder.of_type("aws:ec2/volumeAttachment:VolumeAttachment")) == len(volumes)


def test_every_resource_is_tagged(run):
    stack, result = run
    untaggable = {
        "aws:ec2/routeTableAssociation:RouteTableAssociation",
        "aws:ec2/volumeAttachment:VolumeAttachment",
        "aws:iam/rolePolicy:RolePolicy",
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
        *(
            s3_type(kind)
            for kind in (
                "BucketPublicAccessBlock",
                "BucketOwnershipControls",
                "BucketServerSideEncryptionConfiguration",
                "BucketVersioning",
                "BucketLifecycleConfiguration",
                "BucketPolicy",
            )
        ),
    }
    for resource in result.recorder.resources:
        if not resource.type.startswith("aws:") or resource.type in untaggable:
            continue
        tags = resource.inputs.get("tags") or {}
        assert tags.get("project") == "microservices" and tags.get("stack") == stack, resource
    assert all("tier" in i.inputs["tags"] for i in result.recorder.of_type(INSTANCE))


def test_hosts_are_prepared_for_ansible(run):
    _, result = run
    for instance in result.recorder.of_type(INSTANCE):
        user_data = instance.inputs["userData"]
        assert user_data.startswith("#cloud-config\n")
        cloud = json.loads(user_data.split("\n", 1)[1])
        assert cloud["hostname"] == instance.inputs["tags"]["Name"]
        assert "python3" in cloud["packages"] and cloud["ssh_pwauth"] is False
        assert cloud["users"][0]["name"] == "admin" and cloud["users"][0]["ssh_authorized_keys"]


def test_secrets_are_generated_and_only_secret_outputs(run):
    stack, result = run
    passwords = result.recorder.of_type("random:index/randomPassword:RandomPassword")
    # One password each for the secrets the rollout needs (topology.SECRETS), all of them secret outputs.
    assert {p.name for p in passwords} == {name.replace("_", "-") for name in SECRETS}
    assert all(p.inputs["length"] >= 32 for p in passwords)
    assert "secrets" in result.secret_outputs
    assert set(result.outputs["secrets"]) == set(SECRETS)
    public = json.dumps({k: v for k, v in result.outputs.items() if k not in result.secret_outputs})
    assert not any(value in public for value in result.outputs["secrets"].values())
    stack_file = (REPO_ROOT / STACKS[stack]).read_text().lower()
    assert "password" not in stack_file and "secure:" not in stack_file


def test_the_image_is_built_pushed_and_referenced_by_digest(run):
    stack, result = run
    repository = result.recorder.of_type("aws:ecr/repository:Repository")
    assert len(repository) == 1 and repository[0].inputs["imageTagMutability"] == "IMMUTABLE"
    image = result.recorder.of_type("docker:index/image:Image")[0]
    assert image.inputs["build"]["dockerfile"].endswith("Dockerfile.app")
    assert "@sha256:" in result.outputs["app_image"]
    assert result.outputs["ansible_inventory"]["all"]["vars"]["app_image"] == result.outputs["app_image"]


def test_an_existing_image_can_be_given_instead():
    config = stack_config("Pulumi.dev.yaml", {"appImage": "registry.example.com/app@sha256:" + "cd" * 32})
    result = run_program("dev", config)
    assert not result.recorder.of_type("docker:index/image:Image")
    assert not result.recorder.of_type("aws:ecr/repository:Repository")
    assert result.outputs["app_image"] == "registry.example.com/app@sha256:" + "cd" * 32


def test_the_inventory_output_works_with_ansible(run, tmp_path):
    stack, result = run
    saved = tmp_path / "outputs.json"
    saved.write_text(json.dumps(result.outputs))  # as `pulumi stack output --json --show-secrets`
    env = {**os.environ, "PULUMI_OUTPUTS_FILE": str(saved), "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true"}
    listed = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "ansible-inventory"),
            "-i",
            str(REPO_ROOT / "ansible/inventory/pulumi.py"),
            "--list",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    inventory = json.loads(listed.stdout)
    for group, count in EXPECTED_HOSTS[stack].items():
        assert len(inventory[group]["hosts"]) == count, group
    assert set(inventory["behind_bastion"]["children"]) == {"lb", "api", "workers", "data"}
    hostvars = inventory["_meta"]["hostvars"]
    bastion = inventory["bastion"]["hosts"][0]
    api = inventory["api"]["hosts"][0]
    assert hostvars[bastion]["ansible_host"] == result.outputs["bastion_public_ip"]
    assert hostvars[api]["ansible_host"].startswith("10.")
    # Through the bastion, with the same options for the jump: a new host key accepted once.
    behind = shlex.split(hostvars[api]["ansible_ssh_common_args"])
    jump = shlex.split(next(a for a in behind if a.startswith("ProxyCommand=")).removeprefix("ProxyCommand="))
    assert jump[:3] == ["ssh", "-W", "%h:%p"] and jump[-1] == f"admin@{result.outputs['bastion_public_ip']}"
    for args in (behind, jump, shlex.split(hostvars[bastion]["ansible_ssh_common_args"])):
        assert "StrictHostKeyChecking=accept-new" in args
    assert hostvars[api]["app_secrets"] == result.outputs["secrets"]
    assert hostvars[api]["admin_cidrs"] == stack_config(STACKS[stack])["microservices:adminCidrs"]


def test_the_inventory_script_explains_a_missing_source(tmp_path):
    env = {**os.environ, "PULUMI_OUTPUTS_FILE": str(tmp_path / "missing.json")}
    script = subprocess.run(
        [sys.executable, str(REPO_ROOT / "ansible/inventory/pulumi.py"), "--list"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert script.returncode == 1
    assert "missing.json: no such file" in script.stderr and "Traceback" not in script.stderr


# What Pulumi prints when the local backend's passphrase is missing or wrong (pulumi/pulumi#8386, #9489).
PASSPHRASE_ERRORS = {
    'error: constructing secrets manager of type "passphrase": unable to find either `PULUMI_CONFIG_PASSPHRASE` '
    "or `PULUMI_CONFIG_PASSPHRASE_FILE` when trying to access the Passphrase Secrets Provider": "need its passphrase",
    "error: failed to decrypt: incorrect passphrase, please set PULUMI_CONFIG_PASSPHRASE to the correct "
    "passphrase": "is not the stack's passphrase",
}


@pytest.mark.parametrize("said", list(PASSPHRASE_ERRORS))
def test_the_inventory_script_names_the_passphrase_pulumi_needs(said, tmp_path):
    """The Pulumi CLI stood in for by a script that answers as Pulumi does (no CLI can be had here)."""
    (tmp_path / "pulumi").write_text(f"#!/bin/sh\necho '{said}' >&2\nexit 255\n")
    (tmp_path / "pulumi").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    script = subprocess.run(
        [sys.executable, str(REPO_ROOT / "ansible/inventory/pulumi.py"), "--list"],
        env={**env, "PATH": f"{tmp_path}:{env['PATH']}", "PULUMI_STACK": "dev"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert script.returncode == 1 and "Traceback" not in script.stderr
    message = script.stderr.strip()
    assert message.startswith("pulumi inventory: ") and len(message.splitlines()) == 1, message
    assert PASSPHRASE_ERRORS[said] in message and "export PULUMI_CONFIG_PASSPHRASE" in message


def tiers(stack: str, **changes: dict) -> dict:
    """The stack file's tiers with some changed: tiers("prod", api={"count": 1})."""
    current = stack_config(STACKS[stack])["microservices:tiers"]
    return {"tiers": {name: {**current.get(name, {}), **spec} for name, spec in {**current, **changes}.items()}}


BAD_CONFIGS = [
    ("dev", tiers("dev", api={"count": 0}), "tiers.api.count: at least one api host is needed, got 0"),
    (
        "dev",
        tiers("dev", caches={"count": 2, "size": "small"}),
        "tiers: unknown tier(s) caches; the tiers are lb, bastion, api, workers, data",
    ),
    ("dev", {"adminCidrs": ["10.0.0.300/8"]}, "adminCidrs[0]: '10.0.0.300/8' is not a valid CIDR"),
    ("dev", {"vpcCidr": "10.20.0.0/33"}, "vpcCidr: '10.20.0.0/33' is not a valid CIDR"),
    ("prod", {"adminCidrs": ["0.0.0.0/0"]}, "adminCidrs[0]: 0.0.0.0/0 opens SSH to the whole internet"),
    ("prod", {"zones": ["eu-central-1a"]}, "zones: a production stack spreads over at least 2 availability zones"),
    ("prod", tiers("prod", api={"count": 1}), "tiers.api.count: 1 host cannot be spread over 3 zones"),
    ("prod", tiers("prod", data={"count": 2}), "tiers.data.count: 2 data nodes cannot form a MongoDB replica set"),
    ("dev", {"sshPublicKey": "not a key"}, "sshPublicKey: set the admin SSH public key"),
    ("dev", {"provider": "hetzner"}, "provider: 'hetzner' is not supported"),
    ("dev", {"ami": None}, "ami: '' is not an image id or a Debian image name; pin the machine image"),
    ("dev", {"ami": "debian-12-amd64-*"}, "ami: 'debian-12-amd64-*' is not an image id"),
    ("dev", {"domain": "api.example.com"}, "acmeEmail: a domain needs the address Let's Encrypt writes to"),
    ("dev", {"domain": "not a name", "acmeEmail": "a@b.c"}, "domain: 'not a name' is not a DNS name"),
    ("dev", {"backupRetentionDays": "0"}, "backupRetentionDays: expected a whole number from 1 to 3650, got '0'"),
]


@pytest.mark.parametrize(("stack", "overrides", "message"), BAD_CONFIGS)
def test_bad_configuration_fails_before_any_resource(stack, overrides, message):
    config = stack_config(STACKS[stack], overrides)
    recorder = Recorder()
    with pytest.raises(ConfigError) as error:
        run_program(stack, config, recorder)
    assert message in str(error.value)
    assert f"stack '{stack}' is misconfigured" in str(error.value)
    assert recorder.resources == [] and recorder.calls == []


def test_every_problem_is_reported_at_once():
    config = stack_config("Pulumi.dev.yaml", {"adminCidrs": ["nonsense"], "vpcCidr": "10.0.0.0/8", "zones": []})
    with pytest.raises(ConfigError) as error:
        run_program("dev", config)
    problems = [line for line in str(error.value).splitlines() if line.strip().startswith("- ")]
    assert Counter(p.split(":")[0].strip("- ") for p in problems) == {"adminCidrs[0]": 1, "vpcCidr": 1, "zones": 1}


def test_the_program_has_no_import_cycle():
    """Each module of infra/ and topology/ imports only modules that do not import it back,
    directly or through others (imports under TYPE_CHECKING count too; a module's own parent
    packages, which Python initialises first anyway, do not)."""
    graph = {}
    for path in [*(REPO_ROOT / "infra").rglob("*.py"), *(REPO_ROOT / "topology").rglob("*.py")]:
        name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        # Importing a.b.c imports the packages a and a.b first.
        graph[name] = {".".join(m.split(".")[:i]) for m in imported for i in range(1, m.count(".") + 2)}
    graph = {
        name: {m for m in imported if m in graph and m != name and not name.startswith(m + ".")}
        for name, imported in graph.items()
    }

    def cycle_from(name: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        if name in path:
            return (*path[path.index(name) :], name)
        return next(filter(None, (cycle_from(m, (*path, name)) for m in sorted(graph[name]))), None)

    # Each cycle once, from its first module in sorted order.
    cycles = {
        cycle[cycle.index(min(cycle)) : -1] + cycle[: cycle.index(min(cycle)) + 1]
        for name in graph
        if (cycle := cycle_from(name, ()))
    }
    assert not cycles, f"import cycles: {sorted(cycles)}"
