"""The lab's cloud: the services a cloud gives its hosts, real ones, each in a container of its own
on the lab's networks, and a certificate authority of the lab's that signs their TLS certificates.

- registry: Debian's docker-registry, over TLS, with a user and password (htpasswd), on the
  private network as a cloud's registry endpoint would be; the hosts pull the images from it.
- s3: moto's S3 API server (PyPI, locked in cloud.txt), over TLS, on the private network; the
  data node's backups go to its bucket.
- acme: Debian's pebble, an ACME server, on the public network as Let's Encrypt is; it checks the
  HTTP-01 challenge on the load balancer's public address, which it knows the lab domain by.

The hosts trust the lab's CA through the stack (caCertificate), as they would a company's own.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from commands import run, wait_until
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
CLOUD_IMAGE = "microservices-lab/cloud:bookworm"
REGISTRY_PORT = 5000
S3_PORT = 9000
ACME_PORT, ACME_MANAGEMENT_PORT = 14000, 15000
REGISTRY_USER = "deploy"


class CertificateAuthority:
    """The lab's own CA (in DIR/cloud/ca.pem), and certificates it signs for an address."""

    def __init__(self, directory: Path, name: str) -> None:
        self.dir = directory
        self.name = name
        self.certificate_file = directory / "ca.pem"
        self.key_file = directory / "ca.key"

    def ensure(self) -> None:
        if self.certificate_file.exists():
            return
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{self.name} lab CA")])
        certificate = (
            self._builder(subject, key.public_key(), days=30)
            .issuer_name(subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        self._write(self.key_file, key)
        self.certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, addresses: list[str]) -> tuple[Path, Path]:
        """(certificate, key) for a service at these addresses, signed by the CA."""
        ca_key = serialization.load_pem_private_key(self.key_file.read_bytes(), None)
        ca = x509.load_pem_x509_certificate(self.certificate_file.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses] + [x509.DNSName(name)]
        certificate = (
            self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key(), days=30)
            .issuer_name(ca.subject)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        paths = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        paths[0].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        self._write(paths[1], key, mode=0o644)  # read by the service's own user in its container
        return paths

    @staticmethod
    def _builder(subject: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
        )

    @staticmethod
    def _write(path: Path, key, mode: int = 0o600) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(mode)


@dataclass(frozen=True)
class Service:
    name: str  # registry, s3, acme
    public_ip: str | None
    private_ip: str | None

    @property
    def address(self) -> str:
        """Where the hosts reach it: a private endpoint, or the public one (the ACME server)."""
        return self.private_ip or self.public_ip or ""


class Cloud:
    def __init__(self, lab_name: str, directory: Path, networks: dict[str, tuple[str, str]], domain: str) -> None:
        """`networks`: public and private, each (docker network, first three octets)."""
        self.lab = lab_name
        self.dir = directory / "cloud"
        self.networks = networks
        self.domain = domain
        self.ca = CertificateAuthority(self.dir, lab_name)
        public, private = networks["public"][1], networks["private"][1]
        self.registry = Service("registry", None, f"{private}.60")
        self.s3 = Service("s3", None, f"{private}.61")
        self.acme = Service("acme", f"{public}.62", None)
        self.settings_file = self.dir / "settings.json"

    # --- what the stack and the controller use --------------------------------------------

    @property
    def registry_server(self) -> str:
        return f"{self.registry.address}:{REGISTRY_PORT}"

    @property
    def s3_endpoint(self) -> str:
        return f"https://{self.s3.address}:{S3_PORT}"

    @property
    def acme_directory(self) -> str:
        return f"https://{self.acme.address}:{ACME_PORT}/dir"

    @property
    def acme_roots(self) -> str:
        """Pebble's management interface: the root its certificates chain to (new at each start)."""
        return f"https://{self.acme.address}:{ACME_MANAGEMENT_PORT}/roots/0"

    @property
    def bucket(self) -> str:
        return f"{self.lab}-backups"

    @property
    def settings(self) -> dict[str, str]:
        """The lab domain and the generated credentials: the registry's password, the S3 API's key."""
        return json.loads(self.settings_file.read_text())

    @property
    def docker_config(self) -> Path:
        """The controller's Docker client configuration for the lab registry (its login)."""
        return self.dir / "docker"

    @property
    def controller_certs(self) -> Path:
        """Where the controller's Docker daemon finds the CA for the lab registry."""
        return Path("/etc/docker/certs.d") / self.registry_server

    # --- up and down --------------------------------------------------------------------------

    def up(self, lb_public_ip: str, base_image: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self.ca.ensure()
        if not self.settings_file.exists():
            self.settings_file.write_text(
                json.dumps(
                    {
                        "domain": self.domain,
                        "registry_password": secrets.token_urlsafe(24),
                        "s3_access_key_id": "LAB" + secrets.token_hex(8).upper(),
                        "s3_secret_access_key": secrets.token_urlsafe(30),
                    },
                    indent=2,
                )
            )
            self.settings_file.chmod(0o600)
        self.build(base_image)
        self.start_registry()
        self.start_s3()
        self.start_acme(lb_public_ip)

    def build(self, base_image: str) -> None:
        # compose, for the pip CA secret (BuildKit's), as docker/local/images.yml builds.
        run(
            "docker", "compose", "-f", str(HERE / "cloud-image.yml"), "build", "--quiet",
            env={"BASE_IMAGE": base_image},
        )  # fmt: skip

    def start(self, service: Service, *arguments: str) -> None:
        name = f"{self.lab}-{service.name}"
        if run("docker", "ps", "-aq", "--filter", f"name=^{name}$").strip():
            run("docker", "rm", "-f", "-v", name)
        first, address = (
            (self.networks["public"][0], service.public_ip)
            if service.public_ip
            else (self.networks["private"][0], service.private_ip)
        )
        run(
            "docker", "run", "-d", "--name", name, "--hostname", name, "--network", first, "--ip", address,
            "--label", f"microservices.lab={self.lab}", "--restart", "unless-stopped", *arguments,
        )  # fmt: skip
        if service.public_ip and service.private_ip:
            run("docker", "network", "connect", "--ip", service.private_ip, self.networks["private"][0], name)

    def start_registry(self) -> None:
        certificate, key = self.ca.issue("registry", [self.registry.address])
        htpasswd = run(
            "docker", "run", "--rm", CLOUD_IMAGE, "htpasswd", "-Bbn", REGISTRY_USER, self.settings["registry_password"]
        )  # fmt: skip
        (self.dir / "htpasswd").write_text(htpasswd)
        (self.dir / "htpasswd").chmod(0o644)
        config = {
            "version": 0.1,
            "storage": {"filesystem": {"rootdirectory": "/var/lib/docker-registry"}, "delete": {"enabled": True}},
            "http": {
                "addr": f":{REGISTRY_PORT}",
                "tls": {"certificate": "/etc/registry/tls.crt", "key": "/etc/registry/tls.key"},
            },
            "auth": {"htpasswd": {"realm": f"{self.lab} registry", "path": "/etc/registry/htpasswd"}},
        }
        (self.dir / "registry.yml").write_text(json.dumps(config))  # YAML reads JSON
        self.start(
            self.registry,
            "--user", "docker-registry",
            "-v", f"{certificate}:/etc/registry/tls.crt:ro",
            "-v", f"{key}:/etc/registry/tls.key:ro",
            "-v", f"{self.dir / 'htpasswd'}:/etc/registry/htpasswd:ro",
            "-v", f"{self.dir / 'registry.yml'}:/etc/registry/config.yml:ro",
            "-v", "/var/lib/docker-registry",
            CLOUD_IMAGE, "docker-registry", "serve", "/etc/registry/config.yml",
        )  # fmt: skip
        # The controller pushes: its daemon trusts the lab CA for this registry, and it logs in.
        self.controller_certs.mkdir(parents=True, exist_ok=True)
        (self.controller_certs / "ca.crt").write_bytes(self.ca.certificate_file.read_bytes())
        self.docker_config.mkdir(exist_ok=True)
        wait_until(self._login, f"the registry at {self.registry_server} did not let its user in")

    def _login(self) -> bool:
        result = subprocess.run(
            ["docker", "login", self.registry_server, "--username", REGISTRY_USER, "--password-stdin"],
            input=self.settings["registry_password"],
            capture_output=True,
            text=True,
            env={**os.environ, "DOCKER_CONFIG": str(self.docker_config)},
            timeout=60,
        )
        return result.returncode == 0

    def start_s3(self) -> None:
        certificate, key = self.ca.issue("s3", [self.s3.address])
        self.start(
            self.s3,
            "--user", "nobody",
            "-v", f"{certificate}:/etc/s3/tls.crt:ro",
            "-v", f"{key}:/etc/s3/tls.key:ro",
            CLOUD_IMAGE, "/opt/moto/bin/moto_server", "--host", "0.0.0.0", "--port", str(S3_PORT),
            "--ssl-cert", "/etc/s3/tls.crt", "--ssl-key", "/etc/s3/tls.key",
        )  # fmt: skip
        # The bucket, as the stack's owner makes it before the first backup.
        wait_until(self._create_bucket, f"the S3 API at {self.s3_endpoint} did not make the bucket")

    def _create_bucket(self) -> bool:
        import httpx  # the dev virtualenv's; lab.py runs in it

        try:
            with httpx.Client(verify=str(self.ca.certificate_file), timeout=5) as client:
                answer = client.put(f"{self.s3_endpoint}/{self.bucket}")
                return answer.status_code in (200, 409)
        except httpx.HTTPError:
            return False

    def start_acme(self, lb_public_ip: str) -> None:
        certificate, key = self.ca.issue("acme", [self.acme.address])
        config = {
            "pebble": {
                "listenAddress": f"0.0.0.0:{ACME_PORT}",
                "managementListenAddress": f"0.0.0.0:{ACME_MANAGEMENT_PORT}",
                "certificate": "/etc/pebble/tls.crt",
                "privateKey": "/etc/pebble/tls.key",
                "httpPort": 80,  # HTTP-01 on the load balancer's port 80, as Let's Encrypt checks it
                "tlsPort": 443,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (self.dir / "pebble.json").write_text(json.dumps(config))
        self.start(
            self.acme,
            "--user", "nobody",
            # The lab domain's DNS record: the load balancer's public address.
            "--add-host", f"{self.domain}:{lb_public_ip}",
            "-e", "PEBBLE_VA_NOSLEEP=1", "-e", "PEBBLE_WFE_NONCEREJECT=0",
            "-v", f"{certificate}:/etc/pebble/tls.crt:ro",
            "-v", f"{key}:/etc/pebble/tls.key:ro",
            "-v", f"{self.dir / 'pebble.json'}:/etc/pebble/config.json:ro",
            CLOUD_IMAGE, "pebble", "-config", "/etc/pebble/config.json",
        )  # fmt: skip

    def push(self, image: str, repository: str, tag: str) -> str:
        """Push a local image to the lab registry (infra/release.py, as a release pushes)."""
        from infra import release

        return release.push(image, f"{self.registry_server}/{repository}", tag, docker_config=self.docker_config)

    def down(self) -> None:
        """The containers go with the lab's (by label); what is left on this machine goes here."""
        if self.dir.exists():
            for path in (self.controller_certs / "ca.crt",):
                path.unlink(missing_ok=True)
            if self.controller_certs.exists():
                self.controller_certs.rmdir()
            shutil.rmtree(self.dir, ignore_errors=True)
