"""Run the Pulumi program under the SDK's mocks with a stack file's configuration, and record
every resource it declares with its inputs (the Pulumi CLI is not needed)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs

from infra import offline

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = offline.PROJECT
STACKS = {"dev": "Pulumi.dev.yaml", "prod": "Pulumi.prod.example.yaml"}  # the aws provider's
HOSTS_STACK = "Pulumi.hosts.example.yaml"  # the hosts provider's example
# What a user of the hosts provider sets as secrets before `pulumi up` (the example file's header).
HOSTS_SECRETS = {"registryPassword": "registry-password-" + "x" * 16, "backupSecretAccessKey": "s3-secret-" + "y" * 24}
TEST_SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBy6z5mJ0lZz9oJd1xw7Qmxk0kYgYQ4n0zT1z1gkQ0c1 ops@example.com"


@dataclass
class Resource:
    type: str
    name: str
    inputs: dict[str, Any]
    id: str
    options: dict[str, Any] = field(default_factory=dict)  # protect, ignore_changes, depends_on (names)


@dataclass
class Recorder(pulumi.runtime.Mocks):
    resources: list[Resource] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    options: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # by (type, name)

    def transformation(self, args: pulumi.ResourceTransformationArgs) -> None:
        """Seen before each resource is registered: keep the options the engine would act on."""
        self.options[(args.type_, args.name)] = {
            "protect": bool(args.opts.protect),
            "ignore_changes": args.opts.ignore_changes or [],
            "depends_on": [resource._name for resource in args.opts.depends_on or []],
        }

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict]:
        outputs = dict(args.inputs)
        index = sum(1 for r in self.resources if r.type == args.typ) + 1
        if args.typ == "aws:ec2/instance:Instance":
            outputs["privateIp"] = f"10.99.{index}.10"
        elif args.typ == "aws:ec2/eip:Eip":
            outputs["publicIp"] = f"198.51.100.{index}"
        elif args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = f"generated-{args.name}-" + "x" * 20
        elif args.typ == "aws:ecr/repository:Repository":
            outputs["repositoryUrl"] = f"123456789012.dkr.ecr.eu-central-1.amazonaws.com/{args.inputs['name']}"
            outputs["registryId"] = "123456789012"
        elif args.typ == "docker:index/image:Image":
            outputs["repoDigest"] = outputs["imageName"].split(":")[0] + "@sha256:" + "ab" * 32
        elif args.typ == "aws:ec2/keyPair:KeyPair":
            outputs["keyName"] = f"{args.name}-key"
        elif args.typ == "aws:lb/loadBalancer:LoadBalancer":
            outputs["dnsName"] = f"{args.name}-0123456789.elb.eu-central-1.amazonaws.com"
        if args.typ.startswith("aws:"):
            outputs.setdefault("arn", f"arn:aws:{args.typ.split(':')[1].split('/')[0]}:::{args.name}")
            outputs.setdefault("name", args.name)
        resource_id = f"{args.name}_id"
        options = self.options.get((args.typ, args.name), {})
        self.resources.append(Resource(args.typ, args.name, dict(args.inputs), resource_id, options))
        return resource_id, outputs

    def call(self, args: MockCallArgs) -> dict:
        self.calls.append(args.token)
        if args.token == "aws:ec2/getAmi:getAmi":
            # Each image name has its own id, as in a region.
            name = next(f["values"][0] for f in args.args["filters"] if f["name"] == "name")
            return {"id": ami_id(name), "name": name, "architecture": "x86_64"}
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        if args.token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {
                "userName": "AWS",
                "password": "ecr-token",
                "authorizationToken": "token",
                "proxyEndpoint": "https://123456789012.dkr.ecr.eu-central-1.amazonaws.com",
            }
        return {}

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]

    def by_id(self, resource_id: str) -> Resource:
        return next(r for r in self.resources if r.id == resource_id)


def s3_type(kind: str) -> str:
    """The type token of an S3 resource: s3_type("BucketPolicy") == "aws:s3/bucketPolicy:BucketPolicy"."""
    return f"aws:s3/{kind[0].lower()}{kind[1:]}:{kind}"


def ami_id(name: str) -> str:
    return "ami-0" + hashlib.sha256(name.encode()).hexdigest()[:16]


@dataclass
class Run:
    recorder: Recorder
    outputs: dict[str, Any]
    secret_outputs: set[str]


def stack_config(stack_file: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    config = yaml.safe_load((REPO_ROOT / stack_file).read_text())["config"]
    # What a user sets before `pulumi up` (see the stack file's header).
    if config.get(f"{PROJECT}:provider") == "hosts":
        for key, value in HOSTS_SECRETS.items():
            config.setdefault(f"{PROJECT}:{key}", value)
    else:
        config.setdefault(f"{PROJECT}:sshPublicKey", TEST_SSH_KEY)
    for key, value in (overrides or {}).items():
        if value is None:
            config.pop(f"{PROJECT}:{key}", None)
        else:
            config[f"{PROJECT}:{key}"] = value
    return config


def run_program(stack: str, config: dict[str, Any], recorder: Recorder | None = None) -> Run:
    """Run infra.program under mocks; return the recorded resources and the resolved outputs."""
    recorder = recorder if recorder is not None else Recorder()
    outputs, secret = offline.run(stack, config, recorder)
    return Run(recorder, outputs, secret)
