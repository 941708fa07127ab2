"""Many client addresses on this one machine: network namespaces on a Docker bridge network
that nginx joins, so the load reaches nginx from as many addresses as there are namespaces,
with no NAT or docker-proxy in between (nginx's per-address limit applies to each one, as it
would to real users).

    with ClientNetwork("bench", "172.28.240", count=16, nginx="bench-nginx-1") as clients:
        clients.run(3, ["wrk", ...])          # in namespace 3, from address 172.28.240.131
        clients.nginx_address                  # where nginx listens on that network

Docker hands out addresses from the lower half of the /24 (the gateway and nginx); the
namespaces take the upper half. Everything is removed on exit, also after an error.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

NICE = ["nice", "-n", "-5"]


def sh(*command: str, check: bool = True, timeout: float = 60) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


@dataclass
class ClientNetwork:
    name: str
    prefix: str  # the first three octets of a free /24, e.g. 172.28.240
    count: int
    nginx: str  # the nginx container to connect
    nginx_address: str = ""
    namespaces: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"{self.name}-lg"[:15]

    @property
    def gateway(self) -> str:
        """This machine's address on the client network (a load tool's coordinator listens here)."""
        return f"{self.prefix}.1"

    def address(self, index: int) -> str:
        return f"{self.prefix}.{128 + index}"

    def __enter__(self) -> ClientNetwork:
        if not 1 <= self.count <= 120:
            raise ValueError("between 1 and 120 client addresses")
        self._remove()
        sh(
            "docker",
            "network",
            "create",
            "--subnet",
            f"{self.prefix}.0/24",
            "--ip-range",
            f"{self.prefix}.0/25",
            "--gateway",
            self.gateway,
            "-o",
            f"com.docker.network.bridge.name={self.bridge}",
            self.bridge,
        )
        sh("docker", "network", "connect", self.bridge, self.nginx)
        self.nginx_address = sh(
            "docker",
            "inspect",
            "-f",
            f'{{{{(index .NetworkSettings.Networks "{self.bridge}").IPAddress}}}}',
            self.nginx,
        )
        try:
            for index in range(self.count):
                self._namespace(index)
        except Exception:
            self._remove()
            raise
        return self

    def _namespace(self, index: int) -> None:
        namespace, veth = f"{self.name}-c{index}", f"{self.name[:6]}c{index}"
        sh("ip", "netns", "add", namespace)
        self.namespaces.append(namespace)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        inside = ["ip", "-n", namespace]
        sh(*inside, "addr", "add", f"{self.address(index)}/24", "dev", "eth0")
        sh(*inside, "link", "set", "eth0", "up")
        sh(*inside, "link", "set", "lo", "up")
        sh(*inside, "route", "add", "default", "via", f"{self.prefix}.1")

    def command(self, index: int, argv: list[str]) -> list[str]:
        """argv, run from client address `index`, ahead of the stack for the CPU: a load tool
        that waits for a CPU measures its own wait as the server's latency."""
        return [*NICE, "ip", "netns", "exec", self.namespaces[index], *argv]

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        for namespace in sh("ip", "netns", "list", check=False).splitlines():
            name = namespace.split()[0] if namespace else ""
            if name.startswith(f"{self.name}-c"):
                sh("ip", "netns", "delete", name, check=False)  # its veth pair goes with it
        self.namespaces.clear()
        sh("docker", "network", "disconnect", "-f", self.bridge, self.nginx, check=False)
        sh("docker", "network", "rm", self.bridge, check=False)
