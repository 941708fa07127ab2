"""The whole system as local processes: data servers, the API under gunicorn, workers and beat."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devstack.servers import (
    ApiServer,
    CeleryBeat,
    CeleryWorker,
    MongoServer,
    RabbitMQServer,
    RedisServer,
)
from topology.app import WORKER_QUEUES


class Stack:
    """Ports and passwords are chosen here (free ports unless given; secrets generated)."""

    def __init__(
        self,
        root: Path,
        *,
        mongo_url: str | None = None,
        mongo_db: str = "app",
        ports: dict[str, int] | None = None,
        passwords: dict[str, str] | None = None,
        settings: dict[str, str] | None = None,
        api_workers: int = 2,
    ) -> None:
        ports = ports or {}
        passwords = passwords or {}
        self.root = root
        self.redis = RedisServer(
            root / "redis",
            port=ports.get("redis"),
            password=passwords.get("redis"),
            admin_password=passwords.get("redis_admin"),
        )
        self.rabbitmq = RabbitMQServer(
            root / "rabbitmq",
            port=ports.get("rabbitmq"),
            password=passwords.get("rabbitmq"),
            admin_password=passwords.get("rabbitmq_admin"),
        )
        self.mongo = (
            None
            if mongo_url
            else MongoServer(
                root / "mongo", port=ports.get("mongo"), database=mongo_db, password=passwords.get("mongo")
            )
        )
        self.mongo_url = mongo_url or self.mongo.url()
        self.mongo_db = mongo_db
        self.api_key = passwords.get("api_key") or secrets.token_urlsafe(32)
        self.settings = settings or {}
        self._api_port, self._api_workers = ports.get("api"), api_workers
        self.workers: list[CeleryWorker] = []
        self._make_app()

    def _make_app(self) -> None:
        self.api = ApiServer(self.root / "api", self.env, port=self._api_port, workers=self._api_workers)
        self.beat = CeleryBeat(self.root / "beat", self.env)

    def configure(self, settings: dict[str, str]) -> None:
        """Change the app's settings before its processes start (the servers' addresses, once
        they are known: a Redis with Sentinels, a RabbitMQ cluster)."""
        self.settings |= settings
        self._make_app()

    @property
    def env(self) -> dict[str, str]:
        """The app's configuration, as environment variables."""
        return {
            "ENVIRONMENT": "staging",
            "MONGO_URL": self.mongo_url,
            "MONGO_DB": self.mongo_db,
            "REDIS_URL": self.redis.url(0),
            "CELERY_RESULT_BACKEND": self.redis.url(1),
            "CELERY_BROKER_URL": self.rabbitmq.url(),
            "API_KEYS": self.api_key,
            "WORKER_HEARTBEAT_DIR": str(self.root / "heartbeat"),
            **self.settings,
        }

    @property
    def passwords(self) -> dict[str, str]:
        passwords = {
            "redis": self.redis.password,
            "redis_admin": self.redis.admin_password,
            "rabbitmq": self.rabbitmq.password,
            "rabbitmq_admin": self.rabbitmq.admin_password,
            "api_key": self.api_key,
        }
        if self.mongo is not None:
            passwords["mongo"] = self.mongo.password
        return passwords

    def start_services(self) -> None:
        servers = [s for s in (self.redis, self.rabbitmq, self.mongo) if s is not None]
        with ThreadPoolExecutor(len(servers)) as pool:
            for future in [pool.submit(server.start) for server in servers]:
                future.result()

    def add_worker(self, node: str, concurrency: int = 2, queues: str = ",".join(WORKER_QUEUES)) -> CeleryWorker:
        worker = CeleryWorker(self.root / node, self.env, node=node, concurrency=concurrency, queues=queues)
        self.workers.append(worker)
        return worker

    def start_app(self, workers: int = 1) -> None:
        if not self.workers:
            for index in range(1, workers + 1):
                self.add_worker(f"worker{index}")
        processes = [self.api, *self.workers, self.beat]
        for process in processes:
            process.start(wait=False)
        for process in processes:
            process.wait_ready()

    def stop(self) -> None:
        for process in [self.beat, *self.workers, self.api, self.mongo, self.rabbitmq, self.redis]:
            if process is not None:
                process.stop()
