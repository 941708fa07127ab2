"""What a real `pulumi up` needs to give a durable environment, under mocks: hosts that pull
the image with their own role, a release tag that follows the image's content, a pinned
machine image that never replaces a data node, and backups the data nodes cannot read."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from pulumi_harness import REPO_ROOT, STACKS, Run, ami_id, run_program, s3_type, stack_config

from infra import release
from infra.providers.aws.image import PULL_ACTIONS

INSTANCE = "aws:ec2/instance:Instance"
PROFILE = "aws:iam/instanceProfile:InstanceProfile"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
NEXT_AMI = "debian-12-amd64-20260901-2200"


def instances(result: Run, *tiers: str) -> list:
    return [i for i in result.recorder.of_type(INSTANCE) if i.inputs["tags"]["tier"] in tiers]


def statements(result: Run, role: str) -> list[dict]:
    document = next(p for p in result.recorder.of_type(ROLE_POLICY) if p.name == role).inputs["policy"]
    return json.loads(document)["Statement"]


# --- 1. Image access ---------------------------------------------------------------------


def test_app_hosts_pull_the_image_with_a_read_only_role(run):
    stack, result = run
    for host in instances(result, "api", "workers"):
        assert host.inputs["iamInstanceProfile"] == "app-image-pull"
    for host in instances(result, "lb", "bastion"):
        assert "iamInstanceProfile" not in host.inputs
    repository = result.recorder.of_type("aws:ecr/repository:Repository")[0]
    assert statements(result, "app-image-pull") == [
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Effect": "Allow", "Action": PULL_ACTIONS, "Resource": f"arn:aws:ecr:::{repository.name}"},
    ]
    assert not {"ecr:PutImage", "ecr:BatchDeleteImage", "ecr:*"} & set(PULL_ACTIONS)
    # The role's credentials stay on the host: one metadata hop, tokens required.
    for host in result.recorder.of_type(INSTANCE):
        assert host.inputs["metadataOptions"] == {
            "httpTokens": "required",
            "httpEndpoint": "enabled",
            "httpPutResponseHopLimit": 1,
        }
    variables = result.outputs["ansible_inventory"]["all"]["vars"]
    assert variables["registry_server"] == "123456789012.dkr.ecr.eu-central-1.amazonaws.com"
    assert variables["registry_credential_helper"] == "ecr-login"
    assert "registry_password" not in variables


def test_a_given_image_needs_no_pull_role():
    config = stack_config(STACKS["dev"], {"appImage": "registry.example.com/app@sha256:" + "cd" * 32})
    result = run_program("dev", config)
    assert all("iamInstanceProfile" not in host.inputs for host in instances(result, "api", "workers"))
    assert "app-image-pull" not in {p.name for p in result.recorder.of_type(PROFILE)}
    assert "registry_credential_helper" not in result.outputs["ansible_inventory"]["all"]["vars"]


# --- 2. Releases ---------------------------------------------------------------------------


@pytest.fixture
def source(tmp_path, monkeypatch):
    """A copy of what the image is built from, plus a file that is not part of it."""
    for name in (release.DOCKERFILE, ".dockerignore", "requirements.txt", "README.md"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    shutil.copytree(REPO_ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(release, "SOURCE", tmp_path)
    return tmp_path


def pushed_tag(result: Run) -> str:
    image = result.recorder.of_type("docker:index/image:Image")[0]
    assert image.inputs["build"]["context"] == str(release.SOURCE)
    repository, tag = image.inputs["imageName"].rsplit(":", 1)
    assert repository.endswith("/microservices-dev-app") and image.inputs["build"]["args"] == {"REVISION": tag}
    assert "@sha256:" in result.outputs["app_image"]  # hosts run the digest
    return tag


def test_the_release_tag_changes_with_the_image_content_and_only_then(source):
    config = stack_config(STACKS["dev"])
    first = pushed_tag(run_program("dev", config))
    assert first.startswith("src-") and first == release.content_tag(source)
    assert pushed_tag(run_program("dev", config)) == first, "the same source, the same tag"

    (source / "README.md").write_text("docs changed\n")
    (source / "notes.txt").write_text("outside the build context\n")
    (source / "app" / "__pycache__").mkdir(exist_ok=True)
    (source / "app" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    assert pushed_tag(run_program("dev", config)) == first, "files outside the image leave the tag alone"

    main = source / "app" / "api" / "main.py"
    main.write_text(main.read_text() + "\n# a code change\n")
    second = pushed_tag(run_program("dev", config))
    assert second != first

    (source / "requirements.txt").write_text((source / "requirements.txt").read_text() + "\n")
    assert pushed_tag(run_program("dev", config)) not in (first, second)


def test_the_build_context_is_what_docker_sends():
    files = release.context_files()
    assert "requirements.txt" in files and "app/api/main.py" in files
    assert all(name == "requirements.txt" or name.startswith("app/") for name in files)
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]


# --- 4. Safe replacement -------------------------------------------------------------------


def test_the_machine_image_is_pinned_per_stack(run):
    stack, result = run
    pinned = stack_config(STACKS[stack])["microservices:ami"]
    assert {host.inputs["ami"] for host in result.recorder.of_type(INSTANCE)} == {ami_id(pinned)}
    assert result.recorder.calls.count("aws:ec2/getAmi:getAmi") == 1


def test_a_new_machine_image_replaces_no_data_node(run):
    stack, before = run
    after = run_program(stack, stack_config(STACKS[stack], {"ami": NEXT_AMI}))
    old = {host.name: host for host in before.recorder.of_type(INSTANCE)}
    for host in after.recorder.of_type(INSTANCE):
        changed = {key for key in host.inputs if host.inputs[key] != old[host.name].inputs[key]}
        if host.inputs["tags"]["tier"] == "data":
            # The only change is one the engine is told to ignore: no replacement, no update.
            assert changed == {"ami"} and "ami" in host.options["ignore_changes"], host.name
            assert "userData" in host.options["ignore_changes"]
            assert host.options["protect"] is (stack == "prod")
        else:
            assert changed == {"ami"} and host.inputs["ami"] == ami_id(NEXT_AMI)  # stateless: replaced
            assert host.options["ignore_changes"] == []
    for volume in after.recorder.of_type("aws:ebs/volume:Volume"):
        assert volume.options["protect"] is (stack == "prod")


def test_the_data_volume_is_detached_only_from_a_stopped_instance(run):
    _, result = run
    attachments = result.recorder.of_type("aws:ec2/volumeAttachment:VolumeAttachment")
    assert attachments and all(a.inputs["stopInstanceBeforeDetaching"] is True for a in attachments)


def test_every_host_waits_for_its_subnets_way_out(run):
    """cloud-init updates packages at first boot: a private host must not start before the NAT
    gateway's route is in its subnet, nor a public one before the internet gateway's."""
    _, result = run
    associations = {r.name: r for r in result.recorder.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")}
    route_tables = {r.id: r for r in result.recorder.of_type("aws:ec2/routeTable:RouteTable")}
    for host in result.recorder.of_type(INSTANCE):
        (waits_for,) = host.options["depends_on"]
        association = associations[waits_for]
        assert association.inputs["subnetId"] == host.inputs["subnetId"], host.name
        (route,) = route_tables[association.inputs["routeTableId"]].inputs["routes"]
        assert ("gatewayId" if host.inputs["associatePublicIpAddress"] else "natGatewayId") in route, host.name


def test_an_image_id_is_used_as_it_is():
    result = run_program("dev", stack_config(STACKS["dev"], {"ami": "ami-0123456789abcdef0"}))
    assert {host.inputs["ami"] for host in result.recorder.of_type(INSTANCE)} == {"ami-0123456789abcdef0"}
    assert "aws:ec2/getAmi:getAmi" not in result.recorder.calls


# --- 5. Backups ---------------------------------------------------------------------------


def only(result: Run, kind: str):
    (resource,) = result.recorder.of_type(s3_type(kind))
    return resource


def test_backups_go_to_an_encrypted_private_bucket_that_expires_them(run):
    stack, result = run
    bucket = only(result, "Bucket")
    assert bucket.inputs["bucketPrefix"] == f"microservices-{stack}-backups-"
    assert bucket.inputs["forceDestroy"] is (stack != "prod") and bucket.options["protect"] is (stack == "prod")
    block = only(result, "BucketPublicAccessBlock").inputs
    blocks = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    assert all(block[key] is True for key in blocks)
    encryption = only(result, "BucketServerSideEncryptionConfiguration").inputs["rules"][0]
    assert encryption["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    assert only(result, "BucketVersioning").inputs["versioningConfiguration"]["status"] == "Enabled"
    (rule,) = only(result, "BucketLifecycleConfiguration").inputs["rules"]
    assert rule["status"] == "Enabled" and rule["expiration"]["days"] == 30
    assert rule["noncurrentVersionExpiration"]["noncurrentDays"] == 30
    (deny,) = json.loads(only(result, "BucketPolicy").inputs["policy"])["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    variables = result.outputs["ansible_inventory"]["all"]["vars"]
    assert variables["backup_target"] == "s3" and variables["backup_bucket"] == bucket.id


def test_data_nodes_may_write_backups_but_not_read_or_delete_them(run):
    _, result = run
    for host in instances(result, "data"):
        assert host.inputs["iamInstanceProfile"] == "backups-writer"
    (grant,) = statements(result, "backups-writer")
    assert grant == {
        "Effect": "Allow",
        "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
        "Resource": "arn:aws:s3:::backups/*",
    }


def test_data_volumes_get_daily_snapshots_and_nothing_else_does(run):
    stack, result = run
    (policy,) = result.recorder.of_type("aws:dlm/lifecyclePolicy:LifecyclePolicy")
    details = policy.inputs["policyDetails"]
    assert policy.inputs["state"] == "ENABLED" and details["resourceTypes"] == ["VOLUME"]
    (schedule,) = details["schedules"]
    assert schedule["createRule"]["interval"] == 24 and schedule["retainRule"]["count"] == 7
    (key, value), *rest = details["targetTags"].items()
    assert not rest, "a policy targets resources with any of its tags: one tag, this stack's data volumes"
    tagged = {r.name for r in result.recorder.resources if (r.inputs.get("tags") or {}).get(key) == value}
    volumes = {v.name for v in result.recorder.of_type("aws:ebs/volume:Volume")}
    assert tagged == volumes and len(volumes) == len(instances(result, "data"))
    role = next(r for r in result.recorder.of_type("aws:iam/role:Role") if r.name == "snapshots")
    assert json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"] == {"Service": "dlm.amazonaws.com"}
    hostvars = result.outputs["ansible_inventory"]["all"]["children"]["data"]["hosts"]
    assert {host["data_volume_id"] for host in hostvars.values()} == {f"{name}_id" for name in volumes}


def test_retention_is_configurable():
    config = stack_config(STACKS["dev"], {"backupRetentionDays": "7", "snapshotRetentionCount": "14"})
    result = run_program("dev", config)
    (rule,) = only(result, "BucketLifecycleConfiguration").inputs["rules"]
    assert rule["expiration"]["days"] == 7
    (policy,) = result.recorder.of_type("aws:dlm/lifecyclePolicy:LifecyclePolicy")
    assert policy.inputs["policyDetails"]["schedules"][0]["retainRule"]["count"] == 14


# --- 6. TLS ---------------------------------------------------------------------------------


def test_the_inventory_says_production_and_names_the_domain(run):
    stack, result = run
    variables = result.outputs["ansible_inventory"]["all"]["vars"]
    assert variables["production"] is (stack == "prod")
    assert "tls_domain" not in variables
    config = stack_config(STACKS[stack], {"domain": "api.example.com", "acmeEmail": "ops@example.com"})
    variables = run_program(stack, config).outputs["ansible_inventory"]["all"]["vars"]
    assert variables["tls_domain"] == "api.example.com" and variables["acme_email"] == "ops@example.com"


def test_make_release_says_what_it_needs(tmp_path):
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    unnamed = subprocess.run(
        ["make", "-s", "release"], cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=120
    )
    assert unnamed.returncode != 0 and "make release STACK=dev" in unnamed.stderr, unnamed.stderr
    no_cli = subprocess.run(
        [str(REPO_ROOT / "scripts/release.sh")],
        env={**environment, "STACK": "dev"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_cli.returncode == 1 and "the Pulumi CLI is not installed" in no_cli.stderr
