"""MongoDB's members, from the stack to the hosts: three data nodes form the replica set rs0 with
the app's URI naming every member; a stack's mongodbMembers runs MongoDB on fewer (the lab's
stand-in cannot replicate). What can be checked without a mongod that replicates: the URI the
app is given, the arguments of each member's container, and the set's rs.initiate document, as
Ansible renders them from the inventory Pulumi renders. fleet health expects MongoDB where it runs."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from ansible_view import seen
from pulumi_harness import STACKS, run_program, stack_config

from fleet import inventory as fleet_inventory
from infra.config import ConfigError

NAMES = ["app_environment", "mongodb_member_hosts", "mongodb_arguments", "mongodb_replica_set_config"]
REPLICA_SET_ARGUMENTS = ["--bind_ip_all", "--replSet", "rs0", "--keyFile", "/etc/mongodb/keyfile"]


def rendered(tmp_path: Path, **overrides) -> tuple[dict, dict[str, dict], dict[str, str]]:
    """The production example's outputs, what each host sees, and its data nodes' addresses."""
    run = run_program("prod", stack_config(STACKS["prod"], overrides))
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(run.outputs))  # as `pulumi stack output --json --show-secrets`
    data = run.outputs["ansible_inventory"]["all"]["children"]["data"]["hosts"]
    return run.outputs, seen(outputs, NAMES, role="mongodb"), {name: v["private_ip"] for name, v in data.items()}


def the_uri(answers: dict[str, dict]) -> tuple[list[str], dict[str, list[str]]]:
    urls = {answer["app_environment"]["MONGO_URL"] for answer in answers.values()}
    assert len(urls) == 1, "every host is given the same MONGO_URL"
    parts = urlsplit(urls.pop())
    return parts.netloc.split("@", 1)[1].split(","), parse_qs(parts.query)


def test_three_data_nodes_form_the_replica_set_and_the_app_knows_every_member(tmp_path):
    _, answers, data = rendered(tmp_path)
    assert len(data) == 3
    members, options = the_uri(answers)
    assert members == [f"{ip}:27017" for ip in data.values()]
    assert options == {"authSource": ["app"], "replicaSet": ["rs0"]}
    for host in data:
        assert answers[host]["mongodb_member_hosts"] == list(data)
        assert answers[host]["mongodb_arguments"] == REPLICA_SET_ARGUMENTS
        # The document the first data node's rs.initiate takes: each member's _id is its place.
        assert answers[host]["mongodb_replica_set_config"] == {
            "_id": "rs0",
            "members": [{"_id": index, "host": f"{ip}:27017"} for index, ip in enumerate(data.values())],
        }


def test_mongodb_members_runs_one_server_on_the_first_data_node(tmp_path):
    outputs, answers, data = rendered(tmp_path, mongodbMembers=1)
    assert outputs["ansible_inventory"]["all"]["vars"]["mongodb_members"] == 1
    first, *others = data
    members, options = the_uri(answers)
    assert members == [f"{data[first]}:27017"]
    assert options == {"authSource": ["app"], "directConnection": ["true"]}
    assert all(answers[host]["mongodb_member_hosts"] == [first] for host in data)  # site.yml runs the role there
    assert answers[first]["mongodb_arguments"] == []  # the image's own command: a single server
    # fleet health expects a MongoDB container, and checks it, on the first data node only.
    listing = tmp_path / "inventory.json"  # the rendered inventory, as ansible-inventory reads it
    listing.write_text(json.dumps(outputs["ansible_inventory"]))
    facts = {t.name: t.facts for t in fleet_inventory.load(str(listing)) if "data" in t.tiers}
    assert {name: (f["mongodb_member"], f["replica_set"]) for name, f in facts.items()} == {
        first: (True, ""),
        **{host: (False, "") for host in others},
    }


@pytest.mark.parametrize("members", [2, 5])
def test_mongodb_members_must_fit_the_data_nodes(members):
    with pytest.raises(ConfigError) as error:
        run_program("prod", stack_config(STACKS["prod"], {"mongodbMembers": members}))
    assert f"mongodbMembers: '{members}' cannot be; MongoDB runs on 1, 3 of the 3 data node(s)" in str(error.value)


def test_backups_are_taken_by_whichever_mongodb_member_is_primary(tmp_path):
    """With the stack's bucket, every MongoDB member carries the backup timer (the primary's node
    takes it when it fires, so losing the first data node does not stop backups); with one server,
    its node alone."""
    for overrides, expected in (({}, "all"), ({"mongodbMembers": 1}, "first")):
        run = run_program("prod", stack_config(STACKS["prod"], overrides))
        outputs = tmp_path / "outputs.json"
        outputs.write_text(json.dumps(run.outputs))
        assert run.outputs["ansible_inventory"]["all"]["vars"]["backup_target"] == "s3"
        answers = seen(outputs, ["backup_hosts"])
        data = list(run.outputs["ansible_inventory"]["all"]["children"]["data"]["hosts"])
        assert all(a["backup_hosts"] == (data if expected == "all" else data[:1]) for a in answers.values()), answers
