"""HTTPS on the load balancers as a production stack gets it: the stack's domain and ACME email,
and certbot on each load balancer asking the ACME server the stack names (the lab's pebble, in
place of Let's Encrypt), which reaches whichever one holds the front door's address: a token
that one does not hold it asks the others for. A production stack without a domain refuses to
deploy; with one, port 443 serves the API with HSTS and modern TLS only, under a certificate that
chains to the ACME server's root, and port 80 answers nothing but a redirect and the challenge."""

from __future__ import annotations

import socket
import ssl
import time

import httpx
import pytest
from conftest import Lab, failed_hosts
from helpers import wait_for

ACME_DIR = "/etc/microservices/nginx/acme/.well-known/acme-challenge"


def domain(lab: Lab) -> str:
    """The lab's domain: its ACME server resolves it to the load balancer (ansible/lab/cloud.py)."""
    return lab.cloud["domain"]


def test_a_production_stack_without_a_domain_refuses_to_deploy(converged: Lab):
    outputs = converged.variant("production-no-domain", production=True)
    run = converged.playbook("site.yml", outputs=outputs)
    assert run.returncode != 0
    assert run.says("a production stack serves HTTPS only") and run.says("pulumi config set domain")
    assert not any(result["changed"] for result in run.recap.values()), "it changed something before refusing"


def acme_root(lab: Lab, path) -> str:
    """The root the ACME server's certificates chain to (pebble makes a new one as it starts),
    from its management interface, itself served under the lab CA's certificate."""
    management = lab.outputs["ansible_inventory"]["all"]["vars"]["acme_directory"].rsplit(":", 1)[0] + ":15000"
    root = httpx.get(f"{management}/roots/0", verify=ssl.create_default_context(cafile=str(lab.ca)), timeout=10)
    assert root.status_code == 200, root.text
    path.write_text(root.text)
    return str(path)


def tls_to_lb(lab: Lab, cafile: str, address: str | None = None) -> httpx.Client:
    """HTTPS to the front door's address (or another) under the domain's name (no DNS for the lab
    domain on this machine: the name goes in SNI and Host), trusting only `cafile`."""
    return httpx.Client(
        base_url=f"https://{address or lab.outputs['lb_public_ip']}",
        headers={"Host": domain(lab)},
        verify=ssl.create_default_context(cafile=cafile),
        timeout=10,
    )


def get(client: httpx.Client, path: str) -> httpx.Response:
    return client.get(path, extensions={"sni_hostname": client.headers["Host"]})


@pytest.fixture(scope="module")
def https_lab(converged: Lab, tmp_path_factory):
    """The lab's stack made production, with the lab domain: converged on the load balancers."""
    outputs = converged.variant("production", production=True, domain=domain(converged))
    run = converged.playbook("site.yml", "--limit", "lb", outputs=outputs)
    assert run.returncode == 0 and not failed_hosts(run), run.output[-4000:]
    root = acme_root(converged, tmp_path_factory.mktemp("acme") / "root.pem")

    def answers() -> bool:
        try:
            with tls_to_lb(converged, root) as client:
                return get(client, "/health").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, timeout=60, interval=1, what="HTTPS under the ACME server's certificate")
    # Left so: this module runs last on the lab (conftest's ORDER), which goes down after it.
    # A lab kept (LAB_KEEP) and taken up again (LAB_REUSE) is converged to its own stack's HTTP.
    return root


def test_https_serves_the_api_and_port_80_only_redirects(converged: Lab, https_lab):
    key = converged.outputs["secrets"]["api_key"]
    with tls_to_lb(converged, https_lab) as client:
        health = get(client, "/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
        created = client.post(
            "/api/items",
            json={"name": f"over-tls-{time.time_ns()}", "price": 1.0},
            headers={"X-API-Key": key},
            extensions={"sni_hostname": domain(converged)},
        )
        assert created.status_code == 201, created.text
    # Not under the lab CA's (nor any other) certificate: only the ACME server's root.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        with tls_to_lb(converged, str(converged.ca)) as client:
            get(client, "/health")

    address = converged.outputs["lb_public_ip"]
    with httpx.Client(timeout=10, follow_redirects=False, headers={"Host": domain(converged)}) as plain:
        for method, path in (("GET", "/api/items?limit=1"), ("POST", "/api/items"), ("GET", "/health")):
            response = plain.request(method, f"http://{address}{path}", headers={"X-API-Key": key}, json={})
            assert response.status_code == 301, (method, path, response.status_code)
            assert response.headers["location"] == f"https://{domain(converged)}{path}"
            assert "strict-transport-security" not in response.headers  # HSTS only over HTTPS
        # The ACME challenge is the one thing port 80 still serves, from either load balancer,
        # whichever holds the token (one hop: a forwarded request is not forwarded again).
        first, second = converged.hosts("lb")
        for holder, asked in ((first, second), (second, first)):
            token = f"lab-token-{holder['name']}"
            placed = converged.ssh(
                holder["private_ip"],
                f"sudo install -d {ACME_DIR} && echo {token}.thumbprint | sudo tee {ACME_DIR}/{token} >/dev/null",
            )
            assert placed.returncode == 0, placed.stderr
            for address in (asked["public_ip"], holder["public_ip"]):
                challenge = plain.get(f"http://{address}/.well-known/acme-challenge/{token}")
                assert challenge.status_code == 200 and challenge.text.strip() == f"{token}.thumbprint", address
            assert plain.get(f"http://{asked['public_ip']}/.well-known/acme-challenge/missing").status_code == 404


def test_each_load_balancer_got_its_own_certificate(converged: Lab, https_lab):
    serials = set()
    for host in converged.hosts("lb"):
        with tls_to_lb(converged, https_lab, host["public_ip"]) as client:
            assert get(client, "/health").status_code == 200, host["name"]
        serial = converged.ssh(
            host["private_ip"],
            f"sudo openssl x509 -noout -serial -in /etc/letsencrypt/live/{domain(converged)}/cert.pem",
        )
        assert serial.returncode == 0, serial.stderr
        serials.add(serial.stdout.strip())
    assert len(serials) == len(converged.hosts("lb")), serials  # each its own certificate


@pytest.mark.parametrize("index", [0, 1], ids=["lb-1", "lb-2"])
def test_certbot_renews_from_the_stacks_acme_server(converged: Lab, https_lab, index):
    lb = converged.hosts("lb")[index]["private_ip"]
    renewal = converged.ssh(lb, f"sudo cat /etc/letsencrypt/renewal/{domain(converged)}.conf")
    assert renewal.returncode == 0, renewal.stderr
    directory = converged.outputs["ansible_inventory"]["all"]["vars"]["acme_directory"]
    assert f"server = {directory}" in renewal.stdout
    timer = converged.ssh(lb, "systemctl is-enabled certbot.timer")
    assert timer.stdout.strip() == "enabled"


def handshake(address: str, name: str, context: ssl.SSLContext) -> str:
    with socket.create_connection((address, 443), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname=name) as tls:
            return tls.version()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    ("version", "ciphers"),
    [
        (ssl.TLSVersion.TLSv1_1, "ALL:@SECLEVEL=0"),  # an old protocol
        (ssl.TLSVersion.TLSv1_2, "AES128-SHA256:AES256-SHA:ECDHE-RSA-AES128-SHA"),  # no forward secrecy or AEAD
    ],
)
def test_old_protocols_and_weak_ciphers_are_refused(converged: Lab, https_lab, version, ciphers):
    address, name = converged.outputs["lb_public_ip"], domain(converged)
    context = ssl.create_default_context(cafile=https_lab)
    assert handshake(address, name, context) == "TLSv1.3"
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = version
    context.set_ciphers(ciphers)
    # An alert is the server refusing (a client that could not offer them fails without one).
    with pytest.raises(ssl.SSLError, match="alert"):
        handshake(address, name, context)
