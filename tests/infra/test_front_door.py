"""Several load balancer hosts on AWS: a network load balancer in front of them (under mocks). It
spreads over every zone with an address in each, passes TCP through on 80 and 443 to every load
balancer host (TLS stays on nginx, which sees the client's address), health-checks nginx, and
drains a host that leaves. With one load balancer host there is none."""

from __future__ import annotations

import pytest
from pulumi_harness import STACKS, Run, run_program, stack_config

from infra.config import ConfigError

BALANCER = "aws:lb/loadBalancer:LoadBalancer"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
ATTACHMENT = "aws:lb/targetGroupAttachment:TargetGroupAttachment"
LISTENER = "aws:lb/listener:Listener"
INSTANCE = "aws:ec2/instance:Instance"
SUBNET = "aws:ec2/subnet:Subnet"
EIP = "aws:ec2/eip:Eip"


def with_lbs(count: int, **overrides) -> dict:
    config = stack_config(STACKS["prod"], overrides)
    config["microservices:tiers"] = {**config["microservices:tiers"], "lb": {"count": count, "size": "medium"}}
    return config


@pytest.fixture(scope="module")
def two() -> Run:
    return run_program("prod", with_lbs(2))


def test_the_front_door_spreads_over_every_zone_with_an_address_in_each(two):
    [balancer] = two.recorder.of_type(BALANCER)
    inputs = balancer.inputs
    assert inputs["loadBalancerType"] == "network" and inputs["internal"] is False
    assert inputs["enableCrossZoneLoadBalancing"] is True
    assert inputs["enableDeletionProtection"] is True  # a production stack
    public_subnets = {s.id: s.inputs["availabilityZone"] for s in two.recorder.of_type(SUBNET) if "public" in s.name}
    mappings = inputs["subnetMappings"]
    zones = stack_config(STACKS["prod"])["microservices:zones"]
    assert sorted(public_subnets[m["subnetId"]] for m in mappings) == sorted(zones)
    eips = {eip.id: eip for eip in two.recorder.of_type(EIP)}
    assert all(eips[m["allocationId"]].name.startswith("front-door-") for m in mappings)
    front = two.outputs["front_door"]
    assert front["dns_name"].endswith(".elb.eu-central-1.amazonaws.com")
    assert len(front["addresses"]) == len(zones) and two.outputs["lb_public_ip"] == front["addresses"][0]


def test_tcp_passes_through_to_every_lb_host_whose_nginx_answers(two):
    lb_hosts = {i.id for i in two.recorder.of_type(INSTANCE) if i.inputs["tags"]["tier"] == "lb"}
    assert len(lb_hosts) == 2
    groups = {g.inputs["port"]: g for g in two.recorder.of_type(TARGET_GROUP)}
    assert set(groups) == {80, 443}
    for port, group in groups.items():
        assert group.inputs["protocol"] == "TCP" and group.inputs["targetType"] == "instance"
        assert group.inputs["preserveClientIp"] == "true"  # nginx's per-address limits see the client
        assert group.inputs["deregistrationDelay"] == 30
        check = group.inputs["healthCheck"]
        assert (check["interval"], check["healthyThreshold"], check["unhealthyThreshold"]) == (10, 2, 2)
        attached = {a.inputs["targetId"] for a in two.recorder.of_type(ATTACHMENT) if a.inputs["port"] == port}
        assert attached == lb_hosts, port
    web = groups[80].inputs["healthCheck"]
    # nginx's /health on port 80; once TLS is on it redirects to HTTPS, which counts too.
    assert (web["protocol"], web["port"], web["path"], web["matcher"]) == ("HTTP", "80", "/health", "200-399")
    assert groups[443].inputs["healthCheck"]["protocol"] == "TCP"
    listeners = {lst.inputs["port"]: lst.inputs for lst in two.recorder.of_type(LISTENER)}
    assert set(listeners) == {80, 443}
    arns = {g.inputs["port"]: f"arn:aws:lb:::{g.name}" for g in groups.values()}
    for port, listener in listeners.items():
        assert listener["protocol"] == "TCP"  # no TLS termination here: the certificate stays on nginx
        [action] = listener["defaultActions"]
        assert action == {"type": "forward", "targetGroupArn": arns[port]}


def test_one_lb_host_has_no_front_door():
    one = run_program("prod", with_lbs(1))
    assert not one.recorder.of_type(BALANCER) and not one.recorder.of_type(TARGET_GROUP)
    assert "front_door" not in one.outputs


def test_a_stack_without_a_load_balancer_is_refused():
    with pytest.raises(ConfigError, match="tiers.lb.count: at least one lb host is needed, got 0"):
        run_program("prod", with_lbs(0))


def test_several_load_balancers_take_a_domain():
    # Each gets its certificate itself (roles/lb: certbot, and the challenges forwarded between them).
    two = run_program("prod", with_lbs(2, domain="api.example.com", acmeEmail="ops@example.com"))
    assert two.outputs["ansible_inventory"]["all"]["vars"]["tls_domain"] == "api.example.com"
