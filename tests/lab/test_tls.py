"""HTTPS on the load balancer, with a certificate from a CA this test makes: a production
inventory refuses to deploy without one; with one, port 443 serves the API with HSTS and
modern TLS only, and port 80 answers nothing but a redirect and the ACME challenge."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl

import httpx
import pytest
from conftest import Lab, failed_hosts
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import wait_for

ACME_DIR = "/etc/microservices/nginx/acme/.well-known/acme-challenge"


def make_certificates(directory, address: str) -> tuple:
    """A CA, and a certificate for the address signed by it: (ca.pem, tls.crt, tls.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "tls.crt", directory / "tls.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def test_production_refuses_to_deploy_without_a_certificate(converged: Lab):
    run = converged.playbook("site.yml", "-e", "production=true")
    assert run.returncode != 0
    assert "a production stack serves HTTPS only" in run.output
    assert not any(result["changed"] for result in run.recap.values()), "it changed something before refusing"


@pytest.fixture(scope="module")
def https_lab(converged: Lab, tmp_path_factory):
    address = converged.outputs["lb_public_ip"]
    ca, certificate, key = make_certificates(tmp_path_factory.mktemp("tls"), address)
    lb = converged.hosts("lb")[0]["name"]
    tls = ["-e", "production=true", "-e", f"tls_cert_file={certificate}", "-e", f"tls_key_file={key}"]
    run = converged.playbook("site.yml", "--limit", lb, *tls)
    assert run.returncode == 0 and not failed_hosts(run), run.output[-4000:]
    wait_for(lambda: answers(f"https://{address}/health", ca), timeout=60, interval=1, what="HTTPS")
    yield address, ca
    back = converged.playbook("site.yml", "--limit", lb)  # HTTP again for the other tests
    assert back.returncode == 0 and not failed_hosts(back), back.output[-4000:]
    wait_for(lambda: answers(f"http://{address}/health"), timeout=60, interval=1, what="plain HTTP again")


def answers(url: str, ca=None) -> bool:
    try:
        verify = ssl.create_default_context(cafile=str(ca)) if ca else True
        return httpx.get(url, verify=verify, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_https_serves_the_api_and_port_80_only_redirects(converged: Lab, https_lab):
    address, ca = https_lab
    key = converged.outputs["secrets"]["api_key"]
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=10) as client:
        health = client.get(f"https://{address}/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
        item = {"name": "over-tls", "price": 1.0}
        created = client.post(f"https://{address}/api/items", json=item, headers={"X-API-Key": key})
        assert created.status_code == 201, created.text

    with httpx.Client(timeout=10, follow_redirects=False) as plain:
        for method, path in (("GET", "/api/items?limit=1"), ("POST", "/api/items"), ("GET", "/health")):
            response = plain.request(method, f"http://{address}{path}", headers={"X-API-Key": key}, json={})
            assert response.status_code == 301, (method, path, response.status_code)
            assert response.headers["location"] == f"https://{address}{path}"
            assert "strict-transport-security" not in response.headers  # HSTS only over HTTPS
        # The ACME challenge is the one thing port 80 still serves.
        token = "lab-token-123"
        placed = converged.ssh(
            converged.hosts("lb")[0]["private_ip"],
            f"sudo install -d {ACME_DIR} && echo {token}.thumbprint | sudo tee {ACME_DIR}/{token} >/dev/null",
        )
        assert placed.returncode == 0, placed.stderr
        challenge = plain.get(f"http://{address}/.well-known/acme-challenge/{token}")
        assert challenge.status_code == 200 and challenge.text.strip() == f"{token}.thumbprint"
        assert plain.get(f"http://{address}/.well-known/acme-challenge/missing").status_code == 404


def handshake(address: str, context: ssl.SSLContext) -> str:
    with socket.create_connection((address, 443), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname=address) as tls:
            return tls.version()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    ("version", "ciphers"),
    [
        (ssl.TLSVersion.TLSv1_1, "ALL:@SECLEVEL=0"),  # an old protocol
        (ssl.TLSVersion.TLSv1_2, "AES128-SHA256:AES256-SHA:ECDHE-RSA-AES128-SHA"),  # no forward secrecy or AEAD
    ],
)
def test_old_protocols_and_weak_ciphers_are_refused(https_lab, version, ciphers):
    address, ca = https_lab
    context = ssl.create_default_context(cafile=str(ca))
    assert handshake(address, context) == "TLSv1.3"
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = version
    context.set_ciphers(ciphers)
    # An alert is the server refusing (a client that could not offer them fails without one).
    with pytest.raises(ssl.SSLError, match="alert"):
        handshake(address, context)
