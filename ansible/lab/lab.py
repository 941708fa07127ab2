#!/usr/bin/env python3
"""A local multi-host lab to rehearse the user's path without a cloud account.

    python ansible/lab/lab.py up      (make lab-up)
    python ansible/lab/lab.py down    (make lab-down)
    python ansible/lab/lab.py status
    python ansible/lab/lab.py image 0.1.1             (a new app version, pushed: prints its digest)
    python ansible/lab/lab.py push IMAGE [REPOSITORY] (a built image, pushed: prints its digest)

Hosts are containers that behave like Debian 12 VMs (systemd, sshd, python3; Docker runs
inside them once Ansible installs it): two load balancers (sharing a virtual address) and a
bastion on a public network, two API hosts, two worker hosts and three data nodes on a private
one, like the Pulumi stack's subnets. Around them, the services a cloud gives (cloud.py): a
registry that takes a password, an S3 API for the backups and an ACME server, over TLS from the
lab's own CA.

The lab is a stack of the hosts provider: `up` writes its stack file (DIR/Pulumi.NAME.yaml) and
runs the Pulumi program on it under the engine's mocks (infra/offline.py: no Pulumi CLI can be
had here), which writes the outputs `pulumi stack output --json --show-secrets` gives
(DIR/outputs.json, mode 0600). From there on, the user's commands:

    export PULUMI_OUTPUTS_FILE=.lab/outputs.json
    fleet setup          # converges every host through the bastion, from an empty known_hosts
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cloud import Cloud  # noqa: E402
from commands import LabError, run, wait_until  # noqa: E402

from infra.release import ReleaseError, content_tag  # noqa: E402
from topology import TIERS  # noqa: E402

HOST_IMAGE = "microservices-lab/host:bookworm"
SSH_USER = "admin"
# Docker-in-Docker flags that work where --privileged does not (see the developers' guide),
# plus SYS_PTRACE: `docker exec` into an inner container whose process runs as a non-root
# user (health checks do that) must open that process's namespaces.
DIND_FLAGS = [
    "--cap-add",
    "SYS_ADMIN",
    "--cap-add",
    "NET_ADMIN",
    "--cap-add",
    "SYS_PTRACE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--cgroupns",
    "host",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs",
    "/run",
    "--tmpfs",
    "/run/lock",
]
# A data node's data volume: a sparse file on this machine (in /dev/shm) behind a loop
# device, handed to the host under a stable name, which the stack's machines list gives
# (dataVolume), as an operator names a machine's disk.
DATA_VOLUME_SIZE = "8G"
DATA_VOLUME_BY_ID = "/dev/disk/by-id/virtio-lab-data-"
IMAGE_VARS = {"mongodb": "MONGO_IMAGE", "redis": "REDIS_IMAGE", "rabbitmq": "RABBITMQ_IMAGE", "nginx": "NGINX_IMAGE"}
APP_REPOSITORY = "microservices-app"


@dataclass(frozen=True)
class LabHost:
    name: str
    tier: str
    private_ip: str
    public_ip: str | None

    @property
    def data_volume(self) -> str | None:
        """The data volume's stable device path on the host (data nodes only)."""
        return DATA_VOLUME_BY_ID + self.name if self.tier == "data" else None


class Lab:
    def __init__(self, name: str, directory: Path, subnet: str) -> None:
        self.name = name
        self.dir = directory.resolve()
        self.subnet = subnet  # the first two octets, e.g. 172.30
        self.public_net = f"{name}-public"
        self.private_net = f"{name}-private"
        self.cloud = Cloud(
            name,
            self.dir,
            {"public": (self.public_net, f"{subnet}.1"), "private": (self.private_net, f"{subnet}.2")},
            domain=self.domain,
        )
        self.hosts = [
            # Two load balancers, which share the lab's front door address (keepalived).
            *(LabHost(f"{name}-lb-{n}", "lb", self.ip("private", 9 + n), self.ip("public", 9 + n)) for n in (1, 2)),
            LabHost(f"{name}-bastion-1", "bastion", self.ip("private", 5), self.ip("public", 5)),
            LabHost(f"{name}-api-1", "api", self.ip("private", 21), None),
            LabHost(f"{name}-api-2", "api", self.ip("private", 22), None),
            LabHost(f"{name}-workers-1", "workers", self.ip("private", 31), None),
            LabHost(f"{name}-workers-2", "workers", self.ip("private", 32), None),
            # Three data nodes: RabbitMQ's cluster (MongoDB's stand-in runs on the first only).
            *(LabHost(f"{name}-data-{n}", "data", self.ip("private", 40 + n), None) for n in (1, 2, 3)),
        ]

    def ip(self, network: str, host: int) -> str:
        return f"{self.subnet}.{1 if network == 'public' else 2}.{host}"

    @property
    def front_door(self) -> str:
        """The load balancers' virtual address on the public network (the stack's lbVirtualAddress),
        where the lab's clients and its ACME server reach the API: the lab's stand-in for a network
        load balancer (docs/rollout.md)."""
        return self.ip("public", 100)

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        """The stack's known_hosts: empty until `fleet setup` first connects (accept-new)."""
        return self.dir / "known_hosts"

    @property
    def domain(self) -> str:
        """The lab's DNS name for the API (the ACME server resolves it to the load balancer)."""
        return f"api.{self.name}.test"

    @property
    def stack_file(self) -> Path:
        return self.dir / f"Pulumi.{self.name}.yaml"

    @property
    def outputs_file(self) -> Path:
        return self.dir / "outputs.json"

    @property
    def env_file(self) -> Path:
        return self.dir / "images.env"

    # --- up ------------------------------------------------------------------------------

    def up(self) -> None:
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        run(str(REPO_ROOT / "scripts/docker-engine.sh"))
        local = self.images()
        base = self.build_host_image()
        self.keys()
        self.networks()
        for host in self.hosts:
            self.start(host)
        for host in self.hosts:
            self.prepare(host)
        self.cloud.up(self.front_door, base)
        images = self.push_images(local)
        self.write_stack(images)
        self.render()
        self.wait_for_ssh()
        print(f"lab {self.name} is up ({time.monotonic() - started:.0f}s): {len(self.hosts)} hosts")
        print(f"  stack:     {self.stack_file} (the hosts provider), outputs {self.outputs_file}")
        print(f"  converge:  PULUMI_OUTPUTS_FILE={self.outputs_file} .venv/bin/fleet setup")

    def images(self) -> dict[str, str]:
        """The images the hosts will run: official ones if available here, else built from Debian."""
        if not self.env_file.exists():
            run("python3", str(REPO_ROOT / "scripts/envfile.py"), "generate", "--file", str(self.env_file))
        run(str(REPO_ROOT / "scripts/ensure-images.sh"), str(self.env_file))
        values = dict(
            line.split("=", 1) for line in self.env_file.read_text().splitlines() if "=" in line and line[0] != "#"
        )
        self.build_app()
        return {"app": values["APP_IMAGE"], **{service: values[var] for service, var in IMAGE_VARS.items()}}

    def image(self, version: str) -> str:
        """Build the app image as microservices-app:VERSION (reporting VERSION in /health), push
        it to the lab registry, and print what to deploy: its reference by digest."""
        if not self.env_file.exists():
            self.images()
        try:
            self.build_app(APP_IMAGE=f"microservices-app:{version}", APP_VERSION=version)
        except LabError as error:
            raise LabError(f"building microservices-app:{version} failed: {error}") from None
        return self.push(f"microservices-app:{version}", APP_REPOSITORY, version)

    def push(self, image: str, repository: str, tag: str | None = None) -> str:
        """A local image in the lab registry; prints and returns its reference by digest."""
        try:
            reference = self.cloud.push(image, repository, tag or content_tag())
        except ReleaseError as error:
            raise LabError(str(error)) from None
        print(reference)
        return reference

    def push_images(self, local: dict[str, str]) -> dict[str, str]:
        """Every image the hosts run, in the lab registry: the app under its release tag (as a
        release pushes it), the data services and nginx as a mirror of them would hold them."""
        pushed = {"app": self.cloud.push(local["app"], APP_REPOSITORY, content_tag())}
        for service in IMAGE_VARS:
            name, _, tag = local[service].rpartition(":")
            pushed[service] = self.cloud.push(local[service], f"mirror/{name.rsplit('/', 1)[-1]}", tag)
        return pushed

    def build_app(self, **env: str) -> None:
        """The app image, built as the compose stack builds it (BuildKit, pip CA secret);
        `env` overrides the env file's values (APP_IMAGE, APP_VERSION)."""
        compose = ["docker", "compose", "-f", str(REPO_ROOT / "docker-compose.yml"), "--env-file", str(self.env_file)]
        run(*compose, "-p", f"{self.name}-build", "build", "api", env=env)

    def build_host_image(self) -> str:
        """The hosts' image; returns the Debian base it was built on (the cloud's image uses it too)."""
        base = "local/debian:bookworm" if self._exists_image("local/debian:bookworm") else "debian:12"
        run(
            "docker",
            "build",
            "-q",
            "-t",
            HOST_IMAGE,
            "--build-arg",
            f"BASE_IMAGE={base}",
            str(REPO_ROOT / "ansible/lab"),
        )
        return base

    def keys(self) -> None:
        """The admin key; the stack hands its path to Ansible (sshPrivateKeyFile), nothing else."""
        if not self.key.exists():
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.name}-admin", "-f", str(self.key))

    def networks(self) -> None:
        for network, third in ((self.public_net, 1), (self.private_net, 2)):
            if not run("docker", "network", "ls", "-q", "--filter", f"name=^{network}$").strip():
                run(
                    "docker",
                    "network",
                    "create",
                    "--subnet",
                    f"{self.subnet}.{third}.0/24",
                    "--label",
                    f"microservices.lab={self.name}",
                    network,
                )

    def start(self, host: LabHost) -> None:
        if run("docker", "ps", "-aq", "--filter", f"name=^{host.name}$").strip():
            run("docker", "start", host.name)
            return
        first_net, first_ip = (
            (self.public_net, host.public_ip) if host.public_ip else (self.private_net, host.private_ip)
        )
        devices = []
        if host.data_volume:
            loop = self.data_volume(host)
            # Under its own name too: the boot-time mount finds a UUID by the kernel's name.
            devices = ["--device", f"{loop}:{loop}", "--device", f"{loop}:{host.data_volume}"]
        run(
            "docker",
            "run",
            "-d",
            "--name",
            host.name,
            "--hostname",
            host.name,
            "--network",
            first_net,
            "--ip",
            first_ip,
            *DIND_FLAGS,
            *devices,
            "-v",
            f"{host.name}-docker:/var/lib/docker",
            "--label",
            f"microservices.lab={self.name}",
            "--label",
            f"microservices.tier={host.tier}",
            HOST_IMAGE,
        )
        if host.public_ip:
            run("docker", "network", "connect", "--ip", host.private_ip, self.private_net, host.name)

    def data_volume_file(self, host: LabHost) -> Path:
        # In memory where there is /dev/shm: a loop device over a file on disk adds a second
        # page cache and a single queue, and the databases' fsyncs slow the whole lab down.
        shm = Path("/dev/shm")
        return (shm if shm.is_dir() else self.dir) / f"{host.name}-data.img"

    def data_volume(self, host: LabHost) -> str:
        """The loop device of the host's data volume file (created empty, sparse, once)."""
        path = self.data_volume_file(host)
        if not path.exists():
            run("truncate", "-s", DATA_VOLUME_SIZE, str(path))
        attached = run("losetup", "-j", str(path)).split(":", 1)[0].strip()
        return attached or run("losetup", "-f", "--show", str(path)).strip()

    def prepare(self, host: LabHost) -> None:
        """What cloud-init does on a VM: the admin user with the key, sudo without password."""

        def booted() -> bool:
            state = run("docker", "exec", host.name, "systemctl", "is-system-running", check=False).strip()
            return state in ("running", "degraded")

        wait_until(booted, f"{host.name}: systemd did not finish booting", timeout=120)
        public_key = self.key.with_suffix(".pub").read_text().strip()
        script = f"""
set -e
id {SSH_USER} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --groups sudo {SSH_USER}
install -d -m 700 -o {SSH_USER} -g {SSH_USER} /home/{SSH_USER}/.ssh
echo '{public_key}' > /home/{SSH_USER}/.ssh/authorized_keys
chown {SSH_USER}:{SSH_USER} /home/{SSH_USER}/.ssh/authorized_keys
chmod 600 /home/{SSH_USER}/.ssh/authorized_keys
echo '{SSH_USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users
chmod 440 /etc/sudoers.d/90-cloud-init-users
"""
        run("docker", "exec", "-i", host.name, "bash", "-s", input=script)

    def stack_config(self, images: dict[str, str]) -> dict:
        """The lab's stack, as an operator of existing machines writes it (Pulumi.hosts.example.yaml)."""
        settings = self.cloud.settings
        machines: dict[str, list[dict]] = {tier: [] for tier in TIERS}
        for h in self.hosts:
            machine = {"name": h.name, "privateAddress": h.private_ip, "zone": "lab"}
            if h.public_ip:
                machine["address"] = h.public_ip
            if h.data_volume:
                machine["dataVolume"] = h.data_volume
            machines[h.tier].append(machine)
        config = {
            "provider": "hosts",
            "production": False,
            # The controller reaches the lab's public network from its gateway address.
            "adminCidrs": [f"{self.subnet}.1.1/32"],
            "sshUser": SSH_USER,
            "sshPrivateKeyFile": str(self.key),
            "sshKnownHostsFile": str(self.known_hosts),
            "appImage": images["app"],
            "imageDelivery": "registry",
            "images": {service: images[service] for service in IMAGE_VARS},
            # The MongoDB stand-in cannot replicate: one server, on the first data node.
            "mongodbMembers": 1,
            "registry": {"server": self.cloud.registry_server, "username": "deploy"},
            "registryPassword": {"secret": settings["registry_password"]},
            "backupStore": {
                "endpoint": self.cloud.s3_endpoint,
                "bucket": self.cloud.bucket,
                "region": "us-east-1",  # any name suits the lab's S3 API; the AWS CLI needs one
                "accessKeyId": settings["s3_access_key_id"],
            },
            "backupSecretAccessKey": {"secret": settings["s3_secret_access_key"]},
            "caCertificate": self.cloud.ca.certificate_file.read_text(),
            "acmeDirectory": self.cloud.acme_directory,
            "acmeEmail": f"ops@{self.name}.test",
            "machines": machines,
            "lbVirtualAddress": self.front_door,
        }
        return {f"microservices:{key}": value for key, value in config.items()}

    def write_stack(self, images: dict[str, str]) -> None:
        """The stack file (outside the checkout, mode 0600: with no Pulumi CLI to encrypt them,
        its secrets are written {secret: VALUE})."""
        header = "# The lab's stack (ansible/lab/lab.py): the hosts provider on the lab's machines.\n"
        self.stack_file.write_text(header + yaml.safe_dump({"config": self.stack_config(images)}, sort_keys=False))
        self.stack_file.chmod(0o600)

    def render(self) -> None:
        """`pulumi up` on the stack, under the engine's mocks: the outputs, the inventory among them."""
        run(
            sys.executable, "-m", "infra.offline", str(self.stack_file),
            "--state", str(self.dir / "state.json"), "--outputs", str(self.outputs_file),
            env={"PYTHONPATH": str(REPO_ROOT)},
        )  # fmt: skip

    def wait_for_ssh(self) -> None:
        """Until every host's sshd answers, without connecting: known_hosts stays empty, as a new
        stack's is, until `fleet setup` first connects."""
        for host in self.hosts:
            wait_until(
                lambda address=host.private_ip: self._ssh_banner(address),
                f"sshd on {host.name} ({host.private_ip}) does not answer",
            )

    @staticmethod
    def _ssh_banner(address: str) -> bool:
        try:
            with socket.create_connection((address, 22), timeout=3) as connection:
                return connection.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False

    # --- down / status -------------------------------------------------------------------

    def down(self) -> None:
        # The engine may simply not be started yet (a fresh boot): start it, as `up` does,
        # so stopped lab containers and their volumes are found and removed too.
        run(str(REPO_ROOT / "scripts/docker-engine.sh"))
        names = [h.name for h in self.hosts]
        existing = run("docker", "ps", "-aq", "--filter", f"label=microservices.lab={self.name}").split()
        if existing:
            run("docker", "rm", "-f", "-v", *existing)
        volumes = [f"{name}-docker" for name in names]
        present = set(run("docker", "volume", "ls", "-q").split())
        if present & set(volumes):
            run("docker", "volume", "rm", *sorted(present & set(volumes)))
        for network in (self.public_net, self.private_net):
            run("docker", "network", "rm", network, check=False)
        # Loop devices of this lab's data volumes, wherever their files were (an earlier run's
        # directory may be gone: the device then shows its file as "(deleted)").
        files = {self.data_volume_file(host).name for host in self.hosts}
        for line in run("losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE").splitlines():
            device, _, backing = line.strip().partition(" ")
            if Path(backing.strip().removesuffix(" (deleted)")).name in files:
                run("losetup", "-d", device, check=False)
        for host in self.hosts:
            self.data_volume_file(host).unlink(missing_ok=True)
        self.cloud.down()
        for path in (self.outputs_file, self.stack_file, self.known_hosts, self.env_file):
            path.unlink(missing_ok=True)
        for path in self.dir.glob("*state.json"):
            path.unlink()
        print(f"lab {self.name} is down")

    def status(self) -> None:
        for host in self.hosts:
            state = run("docker", "inspect", "-f", "{{.State.Status}}", host.name, check=False).strip() or "absent"
            public = f"  public {host.public_ip}" if host.public_ip else ""
            print(f"{host.name:<24} {host.tier:<8} {state:<8} private {host.private_ip}{public}")
        for service in (self.cloud.registry, self.cloud.s3, self.cloud.acme):
            name = f"{self.name}-{service.name}"
            state = run("docker", "inspect", "-f", "{{.State.Status}}", name, check=False).strip() or "absent"
            print(f"{name:<24} {'cloud':<8} {state:<8} at {service.address}")

    @staticmethod
    def _exists_image(image: str) -> bool:
        return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Local multi-host lab for the Ansible rollout.")
    parser.add_argument("command", choices=["up", "down", "status", "image", "push"])
    parser.add_argument(
        "what",
        nargs="*",
        help="image: the VERSION to build (microservices-app:VERSION); push: IMAGE [REPOSITORY]",
    )
    parser.add_argument("--name", default=os.environ.get("LAB_NAME", "lab"), help="prefix of containers and networks")
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("LAB_DIR", REPO_ROOT / ".lab")))
    parser.add_argument(
        "--subnet",
        default=os.environ.get("LAB_SUBNET", "172.30"),
        help="first two octets of the lab networks (default 172.30)",
    )
    args = parser.parse_args()
    lab = Lab(args.name, args.dir, args.subnet)
    try:
        if args.command == "image":
            if len(args.what) != 1:
                parser.error("image needs a VERSION, e.g. `lab.py image 0.1.1`")
            lab.image(args.what[0])
        elif args.command == "push":
            if not 1 <= len(args.what) <= 2:
                parser.error("push needs an IMAGE, e.g. `lab.py push microservices-app:broken`")
            lab.push(args.what[0], args.what[1] if len(args.what) > 1 else APP_REPOSITORY, None)
        else:
            getattr(lab, args.command)()
    except (LabError, ReleaseError) as error:
        print(f"lab: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
