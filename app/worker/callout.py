"""Where the notify task may send a request: an allow-list of hosts and ports, and never an
internal address unless the allow-list names it.

CALLOUT_ALLOWED_HOSTS entries are `host`, `host:port`, an IP address (`10.0.0.7`, `[fd00::7]:8443`)
or a network (`10.0.0.0/8`). An entry without a port allows CALLOUT_ALLOWED_PORTS (443 by default).

A name on the list is not enough to reach an internal address: every address the host resolves
to must be public (not loopback, private, link-local, the cloud metadata service, multicast or
reserved) unless an address or network entry names it. An IPv6 address that carries an IPv4 one
(mapped, compatible, NAT64, Teredo) is judged by that too: `64:ff9b::a9fe:a9fe` reaches the
metadata service through a NAT64 gateway, and Python's `is_global` calls it public. 6to4
(`2002::/16`) is refused whole.

The request then goes to the address that was checked (the Host header and TLS name stay the
host's), so DNS cannot change its answer between the check and the connection.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from app.core.config import get_settings

HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix: the last 32 bits
# Never public, whatever the Python: a site's own NAT64 translators (RFC 8215), and 6to4, which is
# deprecated (RFC 7526) and which Python 3.11.2 calls private but 3.11.7 public.
INTERNAL_IPV6 = (ipaddress.IPv6Network("64:ff9b:1::/48"), ipaddress.IPv6Network("2002::/16"))


class CalloutRefused(Exception):
    """The destination is not allowed; retrying will not change that."""


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Entry:
    """One CALLOUT_ALLOWED_HOSTS entry: a host name, or a network (a bare address is a /32)."""

    name: str | None
    network: IPNetwork | None
    port: int | None  # None: the ports of CALLOUT_ALLOWED_PORTS

    @classmethod
    def parse(cls, text: str) -> Entry:
        text = text.strip().lower()
        port: int | None = None
        if text.startswith("[") and "]:" in text:  # [v6]:port
            text, port_text = text[1:].split("]:", 1)
            port = int(port_text) if port_text.isdigit() else -1
        elif text.count(":") == 1:  # name:port or v4:port
            text, port_text = text.split(":")
            port = int(port_text) if port_text.isdigit() else -1
        if port == -1 or not text:
            raise ValueError(f"CALLOUT_ALLOWED_HOSTS: {text!r} is not host, host:port, an address or a network")
        try:
            return cls(None, ipaddress.ip_network(text.strip("[]"), strict=False), port)
        except ValueError:
            if not HOST_NAME.fullmatch(text):
                problem = f"CALLOUT_ALLOWED_HOSTS: {text!r} is not a host name, an address or a network"
                raise ValueError(problem) from None
            return cls(text, None, port)

    def matches(self, host: str) -> bool:
        if self.name is not None:
            return self.name == host
        address = _address(host)
        return address is not None and address in self.network


@dataclass(frozen=True)
class AllowList:
    entries: tuple[Entry, ...]
    ports: frozenset[int]

    def host_listed(self, host: str) -> bool:
        return any(entry.matches(host) for entry in self.entries)

    def port_allowed(self, host: str, port: int) -> bool:
        return any(
            entry.matches(host) and (port == entry.port if entry.port else port in self.ports) for entry in self.entries
        )

    def names(self, address: IPAddress) -> bool:
        """Whether an address or network entry names this (internal) address."""
        return any(entry.network is not None and address in entry.network for entry in self.entries)


@lru_cache
def allow_list() -> AllowList:
    settings = get_settings()
    return AllowList(
        tuple(Entry.parse(entry) for entry in settings.callout_allowed_hosts), frozenset(settings.callout_allowed_ports)
    )


def _carried(address: IPAddress) -> list[IPAddress]:
    """The address and every IPv4 address it carries, which a gateway may deliver to."""
    if isinstance(address, ipaddress.IPv4Address):
        return [address]
    carried: list[IPAddress] = [address]
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.ipv4_mapped:
        carried.append(address.ipv4_mapped)
    elif address in NAT64 or int(address) >> 32 == 0:  # NAT64, or IPv4-compatible (::a.b.c.d)
        carried.append(low32)
    if address.sixtofour:
        carried.append(address.sixtofour)
    if address.teredo:
        carried.extend(address.teredo)
    return carried


def internal(address: IPAddress) -> bool:
    """Whether the address, or an IPv4 address it carries, is not public."""
    return any(address in network for network in INTERNAL_IPV6) or any(not each.is_global for each in _carried(address))


def _host_and_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CalloutRefused(f"{url} is not an http or https URL")
    return parts.hostname.lower(), parts.port or (443 if parts.scheme == "https" else 80)


def refusal(url: str) -> str | None:
    """Why the URL may not be called (host or port not allowed), or None; no DNS lookup."""
    try:
        host, port = _host_and_port(url)
    except CalloutRefused as exc:
        return str(exc)
    allowed = allow_list()
    if not allowed.host_listed(host):
        return f"Host {host!r} is not allowed; allowed hosts are set in CALLOUT_ALLOWED_HOSTS."
    if not allowed.port_allowed(host, port):
        return f"Port {port} of {host!r} is not allowed; allowed ports are set in CALLOUT_ALLOWED_PORTS."
    return None


def resolve(url: str) -> tuple[str, str, int]:
    """(address to connect to, host, port) for an allowed URL; CalloutRefused if it is not."""
    problem = refusal(url)
    if problem:
        raise CalloutRefused(problem)
    host, port = _host_and_port(url)
    allowed = allow_list()
    literal = _address(host)
    if literal is not None:
        addresses = [literal]
    else:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)  # OSError when it fails: transient
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    for address in addresses:
        if internal(address) and not any(allowed.names(each) for each in _carried(address)):
            raise CalloutRefused(
                f"{host} resolves to {address}, an internal address; name it (or its network) in "
                "CALLOUT_ALLOWED_HOSTS to allow it"
            )
    return str(addresses[0]), host, port
