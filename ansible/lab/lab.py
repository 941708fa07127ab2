#!/usr/bin/env python3
"""A local multi-host lab to rehearse the rollout without a cloud account.

    python ansible/lab/lab.py up      (make lab-up)
    python ansible/lab/lab.py down    (make lab-down)
    python ansible/lab/lab.py status
    python ansible/lab/lab.py image 0.1.1   (a new app version to deploy)

Hosts are containers that behave like Debian 12 VMs (systemd, sshd, python3; Docker runs
inside them once Ansible installs it): a load balancer and a bastion on a public network,
two API hosts, two worker hosts and a data node on a private one, like the Pulumi stack's
subnets. `up` writes the stack outputs Pulumi would (DIR/outputs.json), so the same dynamic
inventory serves both:

    PULUMI_OUTPUTS_FILE=.lab/outputs.json ansible-playbook -i ansible/inventory/pulumi.py ansible/site.yml

No registry is needed: the images are delivered as archives (image_delivery=archive).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from infra.inventory import render  # noqa: E402
from topology import SECRETS, TIERS  # noqa: E402

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
# device, handed to the host under the name EC2 gives an EBS volume on Nitro (its serial is
# the volume id), so the data_volume role finds it as it would in the cloud.
DATA_VOLUME_SIZE = "8G"
EBS_BY_ID = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_"
IMAGE_VARS = {"mongodb": "MONGO_IMAGE", "redis": "REDIS_IMAGE", "rabbitmq": "RABBITMQ_IMAGE", "nginx": "NGINX_IMAGE"}


class LabError(Exception):
    pass


@dataclass(frozen=True)
class LabHost:
    name: str
    tier: str
    private_ip: str
    public_ip: str | None

    @property
    def data_volume_id(self) -> str | None:
        """A made-up EBS volume id (vol- and 17 hex digits), the same for the same host name."""
        if self.tier != "data":
            return None
        return "vol-0" + hashlib.sha256(self.name.encode()).hexdigest()[:16]


def run(
    *command: str,
    check: bool = True,
    input: str | None = None,
    timeout: float = 1800,
    env: dict[str, str] | None = None,
) -> str:
    """A command's output; LabError with its tail when it fails. `env` is added to ours."""
    environment = {**os.environ, **env} if env else None
    result = subprocess.run(command, capture_output=True, text=True, input=input, timeout=timeout, env=environment)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(command[:6])}... failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result.stdout


class Lab:
    def __init__(self, name: str, directory: Path, subnet: str) -> None:
        self.name = name
        self.dir = directory.resolve()
        self.subnet = subnet  # the first two octets, e.g. 172.30
        self.public_net = f"{name}-public"
        self.private_net = f"{name}-private"
        self.hosts = [
            LabHost(f"{name}-lb-1", "lb", self.ip("private", 10), self.ip("public", 10)),
            LabHost(f"{name}-bastion-1", "bastion", self.ip("private", 5), self.ip("public", 5)),
            LabHost(f"{name}-api-1", "api", self.ip("private", 21), None),
            LabHost(f"{name}-api-2", "api", self.ip("private", 22), None),
            LabHost(f"{name}-workers-1", "workers", self.ip("private", 31), None),
            LabHost(f"{name}-workers-2", "workers", self.ip("private", 32), None),
            LabHost(f"{name}-data-1", "data", self.ip("private", 41), None),
        ]

    def ip(self, network: str, host: int) -> str:
        return f"{self.subnet}.{1 if network == 'public' else 2}.{host}"

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    @property
    def env_file(self) -> Path:
        return self.dir / "images.env"

    # --- up ------------------------------------------------------------------------------

    def up(self) -> None:
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        run(str(REPO_ROOT / "scripts/docker-engine.sh"))
        images = self.images()
        self.build_host_image()
        self.keys()
        self.networks()
        for host in self.hosts:
            self.start(host)
        for host in self.hosts:
            self.prepare(host)
        self.write_outputs(images)
        self.wait_for_ssh()
        print(f"lab {self.name} is up ({time.monotonic() - started:.0f}s): {len(self.hosts)} hosts")
        print(
            f"  inventory: PULUMI_OUTPUTS_FILE={self.dir / 'outputs.json'} ansible-inventory "
            "-i ansible/inventory/pulumi.py --graph"
        )
        print(
            f"  converge:  PULUMI_OUTPUTS_FILE={self.dir / 'outputs.json'} ANSIBLE_CONFIG=ansible/ansible.cfg "
            "ansible-playbook -i ansible/inventory/pulumi.py ansible/site.yml"
        )

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

    def image(self, version: str) -> None:
        """Build the app image as microservices-app:VERSION (reporting VERSION in /health)."""
        if not self.env_file.exists():
            self.images()
        try:
            self.build_app(APP_IMAGE=f"microservices-app:{version}", APP_VERSION=version)
        except LabError as error:
            raise LabError(f"building microservices-app:{version} failed: {error}") from None
        print(f"built microservices-app:{version}")

    def build_app(self, **env: str) -> None:
        """The app image, built as the compose stack builds it (BuildKit, pip CA secret);
        `env` overrides the env file's values (APP_IMAGE, APP_VERSION)."""
        compose = ["docker", "compose", "-f", str(REPO_ROOT / "docker-compose.yml"), "--env-file", str(self.env_file)]
        run(*compose, "-p", f"{self.name}-build", "build", "api", env=env)

    def build_host_image(self) -> None:
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

    def keys(self) -> None:
        if not self.key.exists():
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.name}-admin", "-f", str(self.key))
        self.ssh_config.write_text(
            f"# The lab's SSH settings (written by lab.py).\n"
            f"Host {self.subnet}.*\n"
            f"  User {SSH_USER}\n"
            f"  IdentityFile {self.key}\n"
            f"  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.dir / 'known_hosts'}\n"
            f"  StrictHostKeyChecking accept-new\n"
            f"  ConnectTimeout 10\n"
        )

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
        if host.data_volume_id:
            loop = self.data_volume(host)
            by_id = EBS_BY_ID + host.data_volume_id.replace("-", "")
            # Under its own name too: the boot-time mount finds a UUID by the kernel's name.
            devices = ["--device", f"{loop}:{loop}", "--device", f"{loop}:{by_id}"]
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
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = run("docker", "exec", host.name, "systemctl", "is-system-running", check=False).strip()
            if state in ("running", "degraded"):
                break
            time.sleep(1)
        else:
            raise LabError(f"{host.name}: systemd did not finish booting ({state})")
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

    def write_outputs(self, images: dict[str, str]) -> None:
        secrets_file = self.dir / "secrets.json"
        if not secrets_file.exists():
            # The same secrets as the Pulumi stack's (infra/secrets.py), the API key longer.
            values = {name: secrets.token_urlsafe(36 if name == "api_key" else 24) for name in SECRETS}
            secrets_file.write_text(json.dumps(values, indent=2))
            secrets_file.chmod(0o600)
        hosts = {
            tier: [
                {
                    "name": h.name,
                    "zone": "lab",
                    "private_ip": h.private_ip,
                    "public_ip": h.public_ip,
                    "data_volume_id": h.data_volume_id,
                }
                for h in self.hosts
                if h.tier == tier
            ]
            for tier in TIERS
        }
        lb, bastion = hosts["lb"][0], hosts["bastion"][0]
        ssh_options = f"-F {self.ssh_config}"
        inventory = render(
            hosts,
            bastion_address=bastion["public_ip"],
            ssh_user=SSH_USER,
            app_image=images["app"],
            lb_public_ip=lb["public_ip"],
            # The controller reaches the lab's public network from its gateway address.
            admin_cidrs=[f"{self.subnet}.1.1/32"],
            jump_options=ssh_options,
            extra_vars={
                "ansible_ssh_common_args": ssh_options,
                "ansible_ssh_private_key_file": str(self.key),
                "image_delivery": "archive",
                "image_archive_dir": str(self.dir / "images"),
                "images": {service: images[service] for service in IMAGE_VARS},
                "lab": True,
            },
        )
        outputs = {
            "hosts": hosts,
            "lb_public_ip": lb["public_ip"],
            "bastion_public_ip": bastion["public_ip"],
            "ssh_user": SSH_USER,
            "app_image": images["app"],
            "secrets": json.loads(secrets_file.read_text()),
            "ansible_inventory": inventory,
        }
        path = self.dir / "outputs.json"
        path.write_text(json.dumps(outputs, indent=2))
        path.chmod(0o600)

    def wait_for_ssh(self) -> None:
        bastion = next(h for h in self.hosts if h.tier == "bastion")
        deadline = time.monotonic() + 60
        while True:
            result = subprocess.run(
                ["ssh", "-F", str(self.ssh_config), bastion.public_ip, "true"], capture_output=True, text=True
            )
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise LabError(f"cannot SSH to the bastion {bastion.public_ip}: {result.stderr.strip()}")
            time.sleep(1)

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
        for name in ("outputs.json", "secrets.json", "known_hosts", "ssh_config", "images.env"):
            (self.dir / name).unlink(missing_ok=True)
        print(f"lab {self.name} is down")

    def status(self) -> None:
        for host in self.hosts:
            state = run("docker", "inspect", "-f", "{{.State.Status}}", host.name, check=False).strip() or "absent"
            public = f"  public {host.public_ip}" if host.public_ip else ""
            print(f"{host.name:<24} {host.tier:<8} {state:<8} private {host.private_ip}{public}")

    @staticmethod
    def _exists_image(image: str) -> bool:
        return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Local multi-host lab for the Ansible rollout.")
    parser.add_argument("command", choices=["up", "down", "status", "image"])
    parser.add_argument("version", nargs="?", help="for `image`: the version to build (microservices-app:VERSION)")
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
            if not args.version:
                parser.error("image needs a VERSION, e.g. `lab.py image 0.1.1`")
            lab.image(args.version)
        else:
            getattr(lab, args.command)()
    except LabError as error:
        print(f"lab: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
