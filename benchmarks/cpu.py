"""Where the CPU went during a measurement: the profile that says why a path is as fast as it is
on this machine, and which part is the limit.

    with CpuProfile(project="microservices") as profile:
        ...  # one measurement
    profile.result  # CPU seconds per service, the load tools, and the machine as a whole

Per container from its cgroup's CPU counter (cgroup v1 `cpuacct.usage` or v2 `cpu.stat`),
grouped by compose service; the load tools (wrk, locust: children of this process) from
getrusage; "machine" from /proc/stat, so what neither accounts for (dockerd, the kernel's
network path) shows as the rest.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from collections import defaultdict
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def _container_cpu_seconds(container_id: str) -> float | None:
    v1 = CGROUP / "cpuacct" / "docker" / container_id / "cpuacct.usage"
    if v1.exists():
        return int(v1.read_text()) / 1e9
    for v2 in (CGROUP / "system.slice" / f"docker-{container_id}.scope", CGROUP / "docker" / container_id):
        stat = v2 / "cpu.stat"
        if stat.exists():
            usage = dict(line.split() for line in stat.read_text().splitlines())
            return int(usage["usage_usec"]) / 1e6
    return None


def _services(project: str) -> dict[str, list[str]]:
    """Running containers of the compose project, by service."""
    output = subprocess.run(
        [
            "docker",
            "ps",
            "--no-trunc",
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--format",
            '{{.ID}} {{.Label "com.docker.compose.service"}}',
        ],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    services: dict[str, list[str]] = defaultdict(list)
    for line in output.splitlines():
        container_id, _, service = line.partition(" ")
        services[service].append(container_id)
    return services


def _machine_busy_seconds() -> float:
    fields = [int(n) for n in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuProfile:
    def __init__(self, project: str) -> None:
        self.project = project
        self.result: dict = {}

    def _snapshot(self) -> dict[str, float]:
        seconds: dict[str, float] = defaultdict(float)
        for service, containers in _services(self.project).items():
            for container in containers:
                used = _container_cpu_seconds(container)
                if used is not None:
                    seconds[service] += used
        return seconds

    def __enter__(self) -> CpuProfile:
        self._services = self._snapshot()
        self._tools = _children_seconds()
        self._machine = _machine_busy_seconds()
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.monotonic() - self._started
        machine = _machine_busy_seconds() - self._machine
        tools = _children_seconds() - self._tools
        after = self._snapshot()
        # A container started during the measurement counts from zero; one removed, not at all.
        services = {name: round(after[name] - self._services.get(name, 0.0), 2) for name in after}
        services = {name: used for name, used in sorted(services.items(), key=lambda pair: -pair[1]) if used > 0}
        self.result = {
            "seconds": round(elapsed, 1),
            "machine_busy": round(machine / ((os.cpu_count() or 1) * elapsed), 3),
            "services": services,
            "load_tools": round(tools, 2),
            "rest": round(machine - sum(services.values()) - tools, 2),
        }
