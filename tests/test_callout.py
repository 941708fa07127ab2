"""Where the notify task may call: the allow-list of hosts and ports, and no internal address
(loopback, private, link-local, cloud metadata) unless an entry names it."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from helpers import wait_for_task
from hostile import IPV6_PUBLIC, IPV6_REFUSED

from app.worker import callout
from app.worker.callout import AllowList, CalloutRefused, Entry


def use(monkeypatch, *entries: str, ports: tuple[int, ...] = (443,)) -> None:
    allowed = AllowList(tuple(Entry.parse(entry) for entry in entries), frozenset(ports))
    monkeypatch.setattr(callout, "allow_list", lambda: allowed)


@pytest.mark.parametrize(
    ("entries", "url", "refused"),
    [
        (("hooks.example.com",), "https://hooks.example.com/x", None),
        (("hooks.example.com",), "http://hooks.example.com/x", "Port 80"),  # 443 only, by default
        (("hooks.example.com:8080",), "http://hooks.example.com:8080/x", None),
        (("hooks.example.com:8080",), "http://hooks.example.com:8081/x", "Port 8081"),
        (("hooks.example.com",), "https://other.example.com/", "Host 'other.example.com' is not allowed"),
        (("10.0.0.0/8",), "https://10.1.2.3/", None),
        (("10.0.0.0/8",), "https://11.1.2.3/", "Host '11.1.2.3' is not allowed"),
        (("[fd00::7]:8443",), "https://[fd00::7]:8443/", None),
        (("hooks.example.com",), "ftp://hooks.example.com/", "not an http or https URL"),
    ],
)
def test_the_allow_list_names_hosts_and_ports(monkeypatch, entries, url, refused):
    use(monkeypatch, *entries)
    problem = callout.refusal(url)
    assert problem is None if refused is None else refused in (problem or ""), problem


@pytest.mark.parametrize("bad", ["host:port", "a:b:c", ":80", "[::1]:x"])
def test_malformed_entries_are_refused(bad):
    with pytest.raises(ValueError, match="CALLOUT_ALLOWED_HOSTS"):
        Entry.parse(bad)


def test_a_listed_name_that_resolves_to_an_internal_address_is_refused(monkeypatch):
    use(monkeypatch, "localhost:8765")
    with pytest.raises(CalloutRefused, match="resolves to .*, an internal address"):
        callout.resolve("http://localhost:8765/")


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.5", "192.168.1.1", "169.254.169.254", "[fd00:ec2::254]"])
def test_an_internal_address_passes_only_when_an_entry_names_it(monkeypatch, address):
    use(monkeypatch, f"{address}:80")
    assert callout.resolve(f"http://{address}:80/")[0] == address.strip("[]")
    use(monkeypatch, "10.99.0.0/16", ports=(80,))  # a network that does not hold it
    with pytest.raises(CalloutRefused):
        callout.resolve(f"http://{address}:80/")


@pytest.mark.parametrize("address", IPV6_REFUSED)
def test_a_name_that_resolves_to_an_internal_ipv6_address_is_refused(monkeypatch, address):
    use(monkeypatch, "hooks.example.com")
    answer = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, 443, 0, 0))]
    monkeypatch.setattr(callout.socket, "getaddrinfo", lambda *args, **kwargs: answer)
    with pytest.raises(CalloutRefused, match=f"resolves to {ipaddress.ip_address(address)}, an internal"):
        callout.resolve("https://hooks.example.com/")


@pytest.mark.parametrize("address", IPV6_PUBLIC)
def test_a_public_ipv6_address_passes(monkeypatch, address):
    use(monkeypatch, "hooks.example.com")
    answer = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, 443, 0, 0))]
    monkeypatch.setattr(callout.socket, "getaddrinfo", lambda *args, **kwargs: answer)
    assert ipaddress.ip_address(callout.resolve("https://hooks.example.com/")[0]) == ipaddress.ip_address(address)
    assert not callout.internal(ipaddress.ip_address(address))


def test_the_api_refuses_hosts_and_ports_that_are_not_allowed(api, mongo, callout):
    port = callout.server_address[1]
    before = mongo.tasks.count_documents({})
    for url, message in [
        ("http://169.254.169.254/latest/meta-data", "Host '169.254.169.254' is not allowed"),
        (f"http://127.0.0.1:{port + 1}/ok", f"Port {port + 1} of '127.0.0.1' is not allowed"),
    ]:
        response = api.post("/api/async/notify", json={"url": url})
        assert response.status_code == 422, response.text
        error = response.json()["detail"][0]
        assert error["loc"] == ["body", "url"] and message in error["msg"], error
    assert mongo.tasks.count_documents({}) == before


def test_a_call_out_keeps_the_host_name_it_was_given(api, callout):
    task_id = api.post("/api/async/notify", json={"url": f"{callout.url}/ok/host"}).json()["task_id"]
    assert wait_for_task(api, task_id)["state"] == "SUCCESS"
    assert callout.calls["/ok/host"][0]["headers"]["Host"] == f"127.0.0.1:{callout.server_address[1]}"
