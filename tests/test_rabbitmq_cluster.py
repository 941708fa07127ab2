"""A RabbitMQ cluster of three real nodes (one Erlang cookie, classic_config peer discovery), with
an API, a worker and beat of their own whose CELERY_BROKER_URL names every node. The task queues
are quorum queues with a member on each node. The node every client is connected to (the first
URL) is SIGKILLed under a steady load of keyed submits: while it is down, submits are accepted
through the other nodes and the worker runs them; every submit answered 202 runs to SUCCESS, the
only other answers are 503s naming rabbitmq (sent again with their key, as a careful client
does), and the node, started again, is back in the cluster and in every queue without an operator."""

from __future__ import annotations

import functools
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from helpers import until_final, wait_for, wait_for_task

from devstack.servers import RabbitMQServer
from devstack.stack import Stack
from topology.app import WORKER_QUEUES


class Cluster:
    def __init__(self, nodes: list[RabbitMQServer]) -> None:
        self.nodes = nodes
        cookie = secrets.token_hex(16)
        for node in nodes:
            node.cookie = cookie
            node.cluster_nodes = [n.nodename for n in nodes]

    def start(self) -> None:
        self.nodes[0].start()  # the others find it and join
        for node in self.nodes[1:]:
            node.start(wait=False)
        for node in self.nodes[1:]:
            node.wait_ready()
        wait_for(lambda: len(self.running()) == 3, timeout=60, interval=1, what="three running nodes")

    def _management(self, path: str) -> object:
        """GET from the management API of a node that runs."""
        up = next(node for node in self.nodes if node.running)
        with httpx.Client(base_url=up.management_url, auth=(up.admin_user, up.admin_password), timeout=5) as api:
            return api.get(path.format(vhost=up.vhost)).json()

    def running(self) -> list[str]:
        return sorted(n["name"] for n in self._management("/api/nodes") if n.get("running"))

    def queue(self, name: str) -> dict:
        return self._management(f"/api/queues/{{vhost}}/{name}")

    def whole(self) -> bool:
        """Every node runs, and every task queue has a member online on each."""
        names = sorted(node.nodename for node in self.nodes)
        return self.running() == names and all(sorted(self.queue(q).get("online", [])) == names for q in WORKER_QUEUES)

    def stop(self) -> None:
        for node in self.nodes[1:]:
            node.stop()


@pytest.fixture(scope="module")
def clustered(stack, tmp_path_factory) -> Iterator[tuple[Stack, Cluster]]:
    root = tmp_path_factory.mktemp("rabbitmq-cluster")
    own = Stack(root, mongo_url=stack.mongo_url, mongo_db=stack.mongo_db, settings={**stack.settings}, api_workers=1)
    first = own.rabbitmq
    others = [
        RabbitMQServer(root / f"rabbit{i}", password=first.password, admin_password=first.admin_password)
        for i in (2, 3)
    ]
    cluster = Cluster([first, *others])
    try:
        own.redis.start()
        cluster.start()
        own.configure({"CELERY_BROKER_URL": ";".join(node.url() for node in cluster.nodes)})
        own.add_worker("cluster-worker")
        own.start_app()
        yield own, cluster
    finally:
        own.stop()
        cluster.stop()


class KeyedSubmits:
    """Keyed submits, ~10 a second until stopped, each sent again until its answer is final (for at
    most 60 s); counts what came back."""

    def __init__(self, url: str, api_key: str) -> None:
        self.url, self.headers = url, {"X-API-Key": api_key}
        self.accepted: list[str] = []
        self.answers: Counter[str] = Counter()
        self.failing: list[float] = []  # when an attempt was not accepted
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=10) as client:
            for index in range(1000):
                if self._stop.is_set():
                    return
                headers = {"Idempotency-Key": str(uuid.uuid4())}
                body = {"data": f"cluster-{index}", "iterations": 1}
                response = until_final(functools.partial(self._attempt, client, body, headers), 60)
                if response is not None and response.status_code == 202:
                    self.accepted.append(response.json()["task_id"])
                time.sleep(0.1)

    def _attempt(self, client: httpx.Client, body: dict, headers: dict[str, str]) -> httpx.Response | None:
        try:
            response = client.post("/api/async/process", json=body, headers=headers)
        except httpx.HTTPError as exc:
            self.answers[type(exc).__name__] += 1
            self.failing.append(time.monotonic())
            return None
        self.answers[f"{response.status_code} {response.json().get('dependency', '')}".strip()] += 1
        if response.status_code != 202:
            self.failing.append(time.monotonic())
        return response

    def __enter__(self) -> KeyedSubmits:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(90)


def test_losing_the_node_every_client_is_on_loses_no_task(clustered):
    own, cluster = clustered
    headers = {"X-API-Key": own.api_key}
    with httpx.Client(base_url=own.api.url, headers=headers, timeout=10) as api:
        first = api.post("/api/async/process", json={"data": "before", "iterations": 1}).json()["task_id"]
        assert wait_for_task(api, first)["state"] == "SUCCESS"
    names = sorted(node.nodename for node in cluster.nodes)
    for queue in WORKER_QUEUES:
        info = cluster.queue(queue)
        assert info["type"] == "quorum" and sorted(info["members"]) == names, info
    # The first URL of every client: the API, the worker and beat are connected to it.
    lost = cluster.nodes[0]
    led = cluster.queue("heavy")["leader"] == lost.nodename

    with KeyedSubmits(own.api.url, own.api_key) as load:
        time.sleep(3)
        killed = time.monotonic()
        before = len(load.accepted)
        lost.kill()
        # While it is down, submits are accepted through the other nodes and the worker runs them.
        wait_for(lambda: len(load.accepted) >= before + 20, timeout=60, interval=0.2, what="submits accepted")
        with httpx.Client(base_url=own.api.url, headers=headers, timeout=10) as api:
            during = Counter(wait_for_task(api, t, timeout=60)["state"] for t in load.accepted[before : before + 20])
        assert during == {"SUCCESS": 20}, during
        down = time.monotonic() - killed
        lost.start()
        wait_for(cluster.whole, timeout=90, interval=1, what="the node back in the cluster and every queue")
        whole_after = time.monotonic() - killed
        time.sleep(3)
    assert set(load.answers) <= {"202", "503 rabbitmq"}, load.answers
    assert len(load.accepted) > 50, load.answers
    with httpx.Client(base_url=own.api.url, headers=headers, timeout=10) as api:
        states = Counter(wait_for_task(api, task, timeout=120)["state"] for task in load.accepted)
    assert states == {"SUCCESS": len(load.accepted)}, states
    assert own.beat.running
    errors = max(load.failing) - min(load.failing) if load.failing else 0.0
    print(
        f"\nkilled {lost.nodename} ({'the leader' if led else 'not the leader'}), down {down:.0f}s:"
        f" {len(load.accepted)} submits accepted, all SUCCESS, 20 of them run while it was down;"
        f" answers {dict(load.answers)}; errors over {errors:.1f}s; cluster whole {whole_after:.0f}s after the kill"
    )
