"""The data node's data on its own volume, backups to the stack's S3 API and the restore drill
from it, and registry login with a credential helper: on the lab, whose data node has a real
second block device (a loop device, named as the stack's machines list names it)."""

from __future__ import annotations

import json
import subprocess
import tarfile
import time

import httpx
from conftest import REPO_ROOT, TIMINGS, Lab, failed_hosts
from helpers import wait_for

MOUNT = "/srv/data"


# Where the backup role keeps archives in a bucket (roles/backup/defaults: backup_s3_folder).
FOLDER = "backups"


def data_node(lab: Lab) -> dict:
    return lab.hosts("data")[0]


def on_data_node(lab: Lab, command: str, timeout: float = 120) -> str:
    result = lab.ssh(data_node(lab)["private_ip"], command, timeout=timeout)
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result.stdout.strip()


def api(lab: Lab) -> httpx.Client:
    return httpx.Client(base_url=lab.lb_url, headers={"X-API-Key": lab.outputs["secrets"]["api_key"]}, timeout=15)


def create_items(lab: Lab, prefix: str, count: int) -> dict[str, dict]:
    created = {}
    with api(lab) as client:
        for number in range(count):
            response = client.post("/api/items", json={"name": f"{prefix}-{number}", "price": number + 0.5})
            assert response.status_code == 201, response.text
            created[response.json()["id"]] = response.json()
    return created


def listed(lab: Lab, prefix: str) -> dict[str, dict]:
    with api(lab) as client:
        response = client.get("/api/items", params={"name_prefix": prefix, "limit": 100})
        assert response.status_code == 200, response.text
        return {item["id"]: item for item in response.json()["items"]}


def wait_ready(lab: Lab, timeout: float = 180) -> None:
    def ready() -> bool:
        try:
            return httpx.get(f"{lab.lb_url}/health/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, timeout=timeout, interval=1, what="the fleet ready again")


def task_result(output: str, task: str) -> str:
    """ok, changed, skipping or failed: the first result line under the task's banner."""
    after = output.split(f"{task}]", 1)[1]
    return next(line.split(":", 1)[0] for line in after.splitlines() if line.split(":", 1)[0] in RESULTS)


RESULTS = ("ok", "changed", "skipping", "failed", "fatal")
ECR = "123456789012.dkr.ecr.eu-central-1.amazonaws.com"  # tests/lab/playbooks/credential_helper.yml


def aws(lab: Lab, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The AWS CLI on this machine, as the operator runs it against the stack's S3 API."""
    variables = lab.outputs["ansible_inventory"]["all"]["vars"]
    endpoint = ["--endpoint-url", variables["backup_s3_endpoint"], "--region", variables["backup_s3_region"]]
    return subprocess.run(["aws", *endpoint, *args], capture_output=True, text=True, env=lab.env, timeout=timeout)


def test_the_data_services_live_on_the_mounted_data_volume(converged: Lab):
    node = data_node(converged)["name"]
    device_path = converged.outputs["ansible_inventory"]["all"]["children"]["data"]["hosts"][node]["data_volume_device"]
    device = on_data_node(converged, f"findmnt -n -o SOURCE,FSTYPE {MOUNT}").split()
    assert device[1] == "ext4", device
    fstab = on_data_node(converged, f"grep ' {MOUNT} ' /etc/fstab").split()
    assert fstab[0].startswith("UUID=") and "nofail" in fstab[3].split(","), fstab
    uuid = on_data_node(converged, f"sudo blkid -s UUID -o value {device_path}")
    assert fstab[0] == f"UUID={uuid}"
    assert on_data_node(converged, "sudo docker info -f '{{.DockerRootDir}}'") == f"{MOUNT}/docker"
    for volume in ("mongo-data", "redis-data", "rabbitmq-data"):
        mountpoint = on_data_node(converged, f"sudo docker volume inspect -f '{{{{.Mountpoint}}}}' {volume}")
        assert mountpoint.startswith(f"{MOUNT}/docker/volumes/"), mountpoint
    assert "RequiresMountsFor=/srv/data" in on_data_node(converged, "systemctl cat docker.service")


def test_items_survive_a_restart_of_the_data_node(converged: Lab):
    prefix = f"restart-{time.time_ns()}"
    created = create_items(converged, prefix, 20)
    on_data_node(converged, f"echo kept | sudo tee {MOUNT}/marker >/dev/null")
    started = time.monotonic()
    subprocess.run(["docker", "restart", data_node(converged)["name"]], check=True, capture_output=True, timeout=180)
    wait_ready(converged)
    TIMINGS.append(f"data node restart, back to ready: {time.monotonic() - started:.0f}s")
    assert on_data_node(converged, f"findmnt -n -o FSTYPE {MOUNT}") == "ext4"  # mounted again at boot
    assert on_data_node(converged, f"cat {MOUNT}/marker") == "kept"
    assert listed(converged, prefix) == created


def test_the_restore_drill_brings_every_item_back(converged: Lab, tmp_path):
    prefix = f"drill-{time.time_ns()}"
    created = create_items(converged, prefix, 60)
    node = data_node(converged)["name"]
    bucket = converged.outputs["ansible_inventory"]["all"]["vars"]["backup_bucket"]

    # The backup goes to the stack's bucket, through its S3 API, with the data node's own key; the
    # node whose MongoDB member is the primary takes it (the lab's one server is its own).
    on_data_node(converged, "sudo systemctl start microservices-backup.service", timeout=300)
    log = on_data_node(converged, "sudo journalctl -u microservices-backup.service -n 20 --no-pager")
    assert f"taken on {node}, to s3://{bucket}/{FOLDER}/" in log, log
    in_bucket = aws(converged, "s3", "ls", f"s3://{bucket}/{FOLDER}/")
    assert in_bucket.returncode == 0, in_bucket.stderr
    archives = [line.split()[-1] for line in in_bucket.stdout.splitlines()]
    assert archives and all(name.endswith(".tar") for name in archives), archives
    assert on_data_node(converged, "sudo ls /var/backups/microservices 2>/dev/null | wc -l") == "0"
    latest = sorted(archives)[-1].removesuffix(".tar")
    fetched = aws(converged, "s3", "cp", f"s3://{bucket}/{FOLDER}/{latest}.tar", str(tmp_path / "backup.tar"))
    assert fetched.returncode == 0, fetched.stderr
    with tarfile.open(tmp_path / "backup.tar") as archive:
        assert f"{latest}/mongodb/app/items.bson.gz" in archive.getnames()
        definitions = json.load(archive.extractfile(f"{latest}/rabbitmq-definitions.json"))
    assert "app" in {vhost["name"] for vhost in definitions["vhosts"]}
    assert on_data_node(converged, "systemctl is-enabled microservices-backup.timer") == "enabled"

    # Destroy the data: the database container and its volume, then an empty MongoDB again.
    on_data_node(converged, "sudo docker rm -f mongodb && sudo docker volume rm mongo-data")
    rebuilt = converged.playbook("site.yml", "--limit", data_node(converged)["name"])
    assert rebuilt.returncode == 0 and not failed_hosts(rebuilt), rebuilt.output[-4000:]
    # Converging again finds the file system (mounted again at the data node's boot, when the
    # restart test ran first) and leaves it alone.
    assert task_result(rebuilt.output, "Create the file system, once") == "ok"
    wait_ready(converged)
    assert listed(converged, prefix) == {}, "the data was not destroyed"

    # Without a name, restore.yml lists what the bucket holds and stops.
    unnamed = converged.playbook("restore.yml")
    assert unnamed.returncode != 0 and unnamed.says(latest) and "-e backup=NAME" in unnamed.output
    assert unnamed.says(f"Backups in s3://{bucket}/{FOLDER}/")

    # The archive is fetched on this machine with the operator's own credentials (Lab.env).
    restore = converged.playbook("restore.yml", "-e", "backup=latest")
    assert restore.returncode == 0 and not failed_hosts(restore), restore.output[-4000:]
    TIMINGS.append(f"restore drill: restore.yml of {len(created)} items took {restore.seconds:.1f}s")
    print(f"restore.yml of backup {latest} took {restore.seconds:.1f}s")
    assert listed(converged, prefix) == created
    with api(converged) as client:
        for item_id, item in created.items():
            assert client.get(f"/api/items/{item_id}").json() == item


def test_hosts_log_in_to_the_registry_with_a_credential_helper(converged: Lab):
    """ECR's path: no password, a helper that logs in with the host's identity. The lab has no
    ECR: the playbook sets up the helper as the AWS stack's inventory asks, and the test checks
    the helper and Docker's configuration, not a pull."""
    api_host = converged.hosts("api")[0]
    before = json.loads(converged.ssh(api_host["private_ip"], "sudo cat /root/.docker/config.json").stdout)
    playbook = str(REPO_ROOT / "tests/lab/playbooks/credential_helper.yml")
    first = converged.playbook(playbook, "--limit", api_host["name"])
    assert first.returncode == 0 and not failed_hosts(first), first.output[-4000:]
    again = converged.playbook(playbook, "--limit", api_host["name"])
    assert again.returncode == 0 and again.recap[api_host["name"]]["changed"] == 0, again.output[-3000:]
    config = json.loads(converged.ssh(api_host["private_ip"], "sudo cat /root/.docker/config.json").stdout)
    # Added beside the lab registry's login (the hosts provider's), which stays as it was.
    assert config == {**before, "credHelpers": {ECR: "ecr-login"}}
    assert converged.cloud_registry in config["auths"]
    helper = converged.ssh(api_host["private_ip"], "docker-credential-ecr-login version")
    assert helper.returncode == 0, helper.stderr
