"""The hosts provider (bring your own machines) under the SDK's mocks: it creates nothing but the
system's secrets, and hands Ansible the machines and the services around them."""

from __future__ import annotations

import copy

import pytest
from pulumi_harness import HOSTS_STACK, Recorder, run_program, stack_config

from infra.config import ConfigError

EXAMPLE = stack_config(HOSTS_STACK)
MACHINES = EXAMPLE["microservices:machines"]


@pytest.fixture(scope="module")
def result():
    return run_program("hosts", stack_config(HOSTS_STACK))


def test_nothing_is_created_but_the_secrets(result):
    assert {r.type for r in result.recorder.resources} == {
        "microservices:Secrets",
        "random:index/randomPassword:RandomPassword",
    }
    assert result.recorder.calls == []


def test_the_inventory_names_each_machine_as_listed(result):
    children = result.outputs["ansible_inventory"]["all"]["children"]
    for tier, machines in MACHINES.items():
        hosts = children[tier]["hosts"]
        assert list(hosts) == [m["name"] for m in machines]
        for machine in machines:
            variables = hosts[machine["name"]]
            assert variables["private_ip"] == machine["privateAddress"] and variables["zone"] == machine["zone"]
            expected = machine["address"] if tier == "bastion" else machine["privateAddress"]
            assert variables["ansible_host"] == expected
            assert variables.get("data_volume_device") == machine.get("dataVolume")
    # The example's two load balancers share a virtual address: clients connect there.
    assert result.outputs["lb_public_ip"] == EXAMPLE["microservices:lbVirtualAddress"]
    assert result.outputs["bastion_public_ip"] == MACHINES["bastion"][0]["address"]
    assert result.outputs["app_image"] == EXAMPLE["microservices:appImage"]


def test_the_services_around_them_are_handed_over_as_secrets(result):
    variables = result.outputs["ansible_inventory"]["all"]["vars"]
    store = EXAMPLE["microservices:backupStore"]
    assert variables["registry_server"] == "registry.example.com" and variables["registry_username"] == "deploy"
    assert variables["registry_password"] == EXAMPLE["microservices:registryPassword"]
    assert variables["backup_target"] == "s3" and variables["backup_bucket"] == store["bucket"]
    assert variables["backup_s3_endpoint"] == store["endpoint"] and variables["backup_s3_region"] == store["region"]
    assert variables["backup_s3_access_key_id"] == store["accessKeyId"]
    assert variables["backup_s3_secret_access_key"] == EXAMPLE["microservices:backupSecretAccessKey"]
    assert variables["production"] is True and variables["tls_domain"] == "api.example.com"
    # The passwords make the whole inventory a secret output, shown only with --show-secrets.
    assert "ansible_inventory" in result.secret_outputs and "secrets" in result.secret_outputs


def test_the_ssh_settings_travel_in_the_inventory():
    config = stack_config(
        HOSTS_STACK, {"sshPrivateKeyFile": "/keys/lab", "sshKnownHostsFile": "~/.ssh/known_hosts_lab"}
    )
    variables = run_program("hosts", config).outputs["ansible_inventory"]["all"]
    assert variables["vars"]["ansible_ssh_private_key_file"] == "/keys/lab"
    behind = variables["children"]["behind_bastion"]["vars"]["ansible_ssh_common_args"]
    # The jump's own options: a command line's options do not reach a ProxyJump host.
    assert behind.count("UserKnownHostsFile=~/.ssh/known_hosts_lab") == 2 and behind.count("-i /keys/lab") == 2


def machines(**changes) -> dict:
    changed = copy.deepcopy(MACHINES)
    for tier, entries in changes.items():
        changed[tier] = entries
    return {"machines": changed}


def data_without_volume() -> list[dict]:
    return [{k: v for k, v in MACHINES["data"][0].items() if k != "dataVolume"}]


BAD = [
    ({"machines": None}, "machines: list the existing hosts per tier"),
    (machines(api=[]), "machines.api: at least one api host is needed, got 0"),
    (machines(data=data_without_volume()), "machines.data[0].dataVolume: name the data volume's device"),
    (machines(lb=[{"name": "lb-1", "privateAddress": "10.0.0.10"}]), "machines.lb[0].address: None is not an IP"),
    (machines(workers=[MACHINES["api"][0]]), "machines.workers[0].name: api-1 is listed twice"),
    (machines(data=MACHINES["data"] * 2), "machines.data: 2 data nodes cannot form a MongoDB replica set"),
    ({"tiers": {"api": {"count": 2, "size": "small"}}}, "tiers: the hosts provider creates no hosts"),
    ({"registryPassword": None}, "registryPassword: set it as a secret"),
    ({"backupStore": {"endpoint": "http://s3.example.com", "bucket": "b", "region": "r", "accessKeyId": "k"}},
     "backupStore.endpoint: 'http://s3.example.com' must be an https:// URL"),
    ({"appImage": None}, "appImage: the hosts provider builds no image"),
    ({"caCertificate": "not a certificate"}, "caCertificate: expected a PEM certificate"),
    ({"acmeDirectory": "http://acme.example.com/dir"}, "acmeDirectory: 'http://acme.example.com/dir' must be"),
    ({"sshKnownHostsFile": "known_hosts"}, "sshKnownHostsFile: 'known_hosts' must be an absolute path"),
    ({"lbVirtualAddress": "203.0.113.300"}, "lbVirtualAddress: '203.0.113.300' is not an IP address"),
    ({"lbVirtualAddress": MACHINES["lb"][0]["address"]},
     f"lbVirtualAddress: {MACHINES['lb'][0]['address']} is a machine's own address"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[message.split(":")[0] for _, message in BAD])
def test_bad_configuration_names_what_to_fix(overrides, message):
    recorder = Recorder()
    with pytest.raises(ConfigError) as error:
        run_program("hosts", stack_config(HOSTS_STACK, overrides), recorder)
    assert message in str(error.value)
    assert recorder.resources == []


@pytest.mark.parametrize("key", ["machines", "lbVirtualAddress"])
def test_the_aws_provider_refuses_the_hosts_providers_keys(key):
    config = stack_config("Pulumi.dev.yaml", {key: MACHINES if key == "machines" else "10.0.0.100"})
    with pytest.raises(ConfigError, match=f"{key}: only the hosts provider takes it"):
        run_program("dev", config)


def test_without_a_virtual_address_clients_connect_to_the_first_load_balancer():
    outputs = run_program("hosts", stack_config(HOSTS_STACK, {"lbVirtualAddress": None})).outputs
    assert outputs["lb_public_ip"] == MACHINES["lb"][0]["address"]
    assert "lb_virtual_ip" not in outputs["ansible_inventory"]["all"]["vars"]


def test_a_virtual_address_goes_to_the_load_balancers(result):
    # keepalived on the load balancers (roles/lb) holds it.
    inventory = result.outputs["ansible_inventory"]["all"]
    assert inventory["vars"]["lb_virtual_ip"] == EXAMPLE["microservices:lbVirtualAddress"]
    assert list(inventory["children"]["lb"]["hosts"]) == ["lb-1", "lb-2"]
