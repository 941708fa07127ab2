"""Start the real servers the service needs, as local processes on chosen ports.

Used by the test suite (each session gets its own ports, data and generated passwords),
by `python -m devstack` (run the whole system locally) and by the benchmarks. Redis and
RabbitMQ come from Debian packages; the MongoDB-protocol server is SecantusDB from PyPI.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from topology import REDIS_APP_USER, REDIS_USERS
from topology.app import API_COMMAND, WORKER_QUEUES, beat_command, worker_command

REPO_ROOT = Path(__file__).resolve().parent.parent
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
REDIS_CONF = REPO_ROOT / "conf" / "redis.conf"


class ServerError(RuntimeError):
    pass


# Below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 by default): a
# port chosen there can be taken as the local port of any outgoing connection before the server
# that was given it starts listening (seconds later, for a RabbitMQ node that joins a cluster).
FREE_PORTS = range(20000, 32768)


# Handed out in turn from a random start, not drawn at random each time: the servers of a stack
# are given their ports before any of them listens, and two random draws from this range met
# about once a CI run (a gunicorn found its port taken by a sibling). A process walks its own
# stretch of the range; parallel test processes start at other points of it.
_next_port = itertools.count(secrets.randbelow(len(FREE_PORTS)))


def free_port() -> int:
    """A port nothing listens on now, outside the ephemeral range, not handed out lately."""
    for _ in range(200):
        port = FREE_PORTS[next(_next_port) % len(FREE_PORTS)]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ServerError(f"no free port in {FREE_PORTS.start}-{FREE_PORTS.stop - 1} after 200 tries")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def generate_secret() -> str:
    return secrets.token_urlsafe(24)


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
            pass
        time.sleep(interval)
    raise ServerError(f"{what} not ready after {timeout:.0f}s")


class Process:
    """A server process in its own process group, logging to a file."""

    name = "process"
    ready_timeout = 30.0

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{self.name}.log"
        self.log_offset = 0
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait: bool = True) -> Process:
        if self.running:
            return self
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.log_offset = self.log_path.stat().st_size  # where this run's lines begin (a restart appends)
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.environment(),
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        def check() -> bool:
            if not self.running:
                raise ServerError(f"{self.name} exited; see {self.log_path}:\n{self.tail()}")
            return self.ready()

        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except ServerError:
                raise
            except Exception:  # noqa: BLE001 - not ready yet
                pass
            time.sleep(0.1)
        raise ServerError(f"{self.name} not ready after {self.ready_timeout:.0f}s; see {self.log_path}:\n{self.tail()}")

    def signal(self, sig: int) -> None:
        if self.running:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        if not self.running:
            return
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap_group()

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash or an OOM kill would."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)
        self._reap_group()

    def _reap_group(self) -> None:
        # Children (pool processes) may outlive their parent briefly; make sure they are gone.
        if self.proc is None:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


class RedisServer(Process):
    """Redis with the shipped redis.conf and topology's users: the app's (`url`) and the
    operators' default user (`client`, for the tests' looks at what Redis holds)."""

    name = "redis"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        password: str | None = None,
        admin_password: str | None = None,
        maxmemory: str = "256mb",
        replica_of: int | None = None,
    ) -> None:
        super().__init__(workdir)
        self.port = port or free_port()
        self.password = password or generate_secret()
        self.admin_password = admin_password or generate_secret()
        self.maxmemory = maxmemory
        self.replica_of = replica_of  # the port of the primary this server starts as a replica of

    def command(self) -> list[str]:
        # The users in a file of the workdir, as compose and Ansible do: no password on the command line.
        passwords = {"redis_password": self.password, "redis_admin_password": self.admin_password}
        users = self.workdir / "users.conf"
        users.write_text(
            "".join(
                f"user {user} on >{passwords[spec['password']]} {spec['rules']}\n" for user, spec in REDIS_USERS.items()
            )
            # Whichever server is the primary, the others replicate from it as the operators' user.
            + f"masteruser default\nmasterauth {self.admin_password}\n"
        )
        users.chmod(0o600)
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "include": str(users),
            "dir": str(self.workdir),
            "maxmemory": self.maxmemory,
        }
        if self.replica_of:
            options["replicaof"] = f"127.0.0.1 {self.replica_of}"
        flags = [part for key, value in options.items() for part in (f"--{key}", value)]
        # A copy of the shipped file for each start: Sentinel makes a server rewrite its
        # configuration file (CONFIG REWRITE) when it changes its role.
        conf = self.workdir / "redis.conf"
        shutil.copyfile(REDIS_CONF, conf)
        return [shutil.which("redis-server") or "redis-server", str(conf), *flags]

    def url(self, db: int = 0) -> str:
        """The app's URL (its own user)."""
        return f"redis://{REDIS_APP_USER}:{self.password}@127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0):  # noqa: ANN201 - redis.Redis, imported lazily
        """A client as the operators' default user."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=db, password=self.admin_password, socket_timeout=2)

    def ready(self) -> bool:
        with self.client() as client:
            return bool(client.ping())


class RedisSentinel(Process):
    """A Redis Sentinel watching `primary` as `master` (the servers' operators' user), with a
    password of its own. It rewrites its configuration file as it learns the replicas, the other
    Sentinels and failovers, so the file lives in its workdir."""

    name = "sentinel"

    def __init__(
        self, workdir: Path, primary: RedisServer, master: str, password: str, port: int | None = None, quorum: int = 2
    ) -> None:
        super().__init__(workdir)
        self.port = port or free_port()
        self.primary, self.master, self.password, self.quorum = primary, master, password, quorum

    def command(self) -> list[str]:
        conf = self.workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\nrequirepass {self.password}\n"
            f"sentinel monitor {self.master} 127.0.0.1 {self.primary.port} {self.quorum}\n"
            f"sentinel auth-user {self.master} default\n"
            f"sentinel auth-pass {self.master} {self.primary.admin_password}\n"
            # Quick to decide, for tests: a primary silent for 1 s is down.
            f"sentinel down-after-milliseconds {self.master} 1000\n"
            f"sentinel failover-timeout {self.master} 5000\n"
        )
        conf.chmod(0o600)
        return [shutil.which("redis-server") or "redis-server", str(conf), "--sentinel"]

    def client(self):  # noqa: ANN201 - redis.Redis, imported lazily
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2)

    def primary_port(self) -> int:
        """The port of the server this Sentinel calls the primary now."""
        with self.client() as client:
            return int(client.sentinel_get_master_addr_by_name(self.master)[1])

    def ready(self) -> bool:
        with self.client() as client:
            return bool(client.ping())


class RabbitMQServer(Process):
    """RabbitMQ with an administrator (its default user, no guest) and the app's own user and
    vhost, made by app/worker/broker_setup.py over the management API, as the compose stack does."""

    name = "rabbitmq"
    ready_timeout = 60.0

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        user: str = "app",
        password: str | None = None,
        admin_password: str | None = None,
        vhost: str = "app",
    ) -> None:
        super().__init__(workdir)
        self.port = port or free_port()
        self.dist_port = free_port()
        self.management_port = free_port()
        self.user = user
        self.password = password or generate_secret()
        self.admin_user = "admin"
        self.admin_password = admin_password or generate_secret()
        self.vhost = vhost
        self.nodename = f"devstack{self.port}@localhost"
        # A cluster's nodes share an Erlang cookie, and a node that starts empty joins the ones
        # listed (RabbitMQ's classic_config peer discovery) instead of forming its own cluster.
        self.cookie: str | None = None
        self.cluster_nodes: list[str] = []

    def environment(self) -> dict[str, str]:
        config = self.workdir / "rabbitmq.conf"
        cookie = self.workdir / ".erlang.cookie"
        if self.cookie and not cookie.exists():
            cookie.write_text(self.cookie)
            cookie.chmod(0o400)
        discovery = "".join(
            f"cluster_formation.classic_config.nodes.{index} = {node}\n"
            for index, node in enumerate(self.cluster_nodes, start=1)
        )
        if discovery:
            discovery = "cluster_formation.peer_discovery_backend = classic_config\n" + discovery
        config.write_text(
            discovery + f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"management.tcp.ip = 127.0.0.1\n"
            f"management.tcp.port = {self.management_port}\n"
            f"default_user = {self.admin_user}\n"
            f"default_pass = {self.admin_password}\n"
            "default_vhost = /\n"
            "loopback_users = none\n"
            "log.console = true\n"
            "log.console.level = warning\n"
            "log.file = false\n"
        )
        (self.workdir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        return {
            **os.environ,
            "HOME": str(self.workdir),  # the Erlang cookie lives here
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
            "RABBITMQ_PID_FILE": str(self.workdir / "rabbitmq.pid"),
        }

    def command(self) -> list[str]:
        if not os.path.exists(RABBITMQ_SERVER):
            raise ServerError("rabbitmq-server is not installed; run `make deps` (apt-get install rabbitmq-server)")
        return [RABBITMQ_SERVER]

    def url(self) -> str:
        return f"amqp://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.vhost}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def start(self, wait: bool = True) -> RabbitMQServer:
        super().start(wait=True)
        from app.worker.broker_setup import ensure_app_account

        ensure_app_account(self.management_url, (self.admin_user, self.admin_password), self.url())
        return self

    def ctl(self, *args: str) -> str:
        """Run rabbitmqctl against this node."""
        result = subprocess.run(
            ["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", self.nodename, *args],
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise ServerError(f"rabbitmqctl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def ready(self) -> bool:
        import amqp

        connection = amqp.Connection(
            f"127.0.0.1:{self.port}", userid=self.admin_user, password=self.admin_password, connect_timeout=1
        )
        connection.connect()
        connection.close()
        return True


class MongoServer(Process):
    """SecantusDB with authentication: an admin user and a readWrite user for the app database."""

    name = "mongo"

    def __init__(
        self, workdir: Path, port: int | None = None, database: str = "app", password: str | None = None
    ) -> None:
        super().__init__(workdir)
        self.port = port or free_port()
        self.database = database
        self.user = "app"
        self.password = password or generate_secret()
        self._auth = (self.workdir / "users-created").exists()

    def command(self) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "secantus",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            str(self.workdir / "data"),
            "--log-level",
            "WARNING",
        ]
        return command + (["--auth"] if self._auth else [])

    def start(self, wait: bool = True) -> MongoServer:
        if self.running:
            return self
        if not self._auth:
            # SecantusDB, like mongod, creates users on an open server, then restarts with --auth.
            super().start(wait=True)
            import pymongo

            with pymongo.MongoClient(f"mongodb://127.0.0.1:{self.port}", serverSelectionTimeoutMS=5000) as client:
                client[self.database].command(
                    "createUser", self.user, pwd=self.password, roles=[{"role": "readWrite", "db": self.database}]
                )
            self.stop()
            (self.workdir / "users-created").write_text("")
            self._auth = True
        return super().start(wait=wait)

    def url(self) -> str:
        return f"mongodb://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}?authSource={self.database}"

    def ready(self) -> bool:
        import pymongo

        with pymongo.MongoClient(
            self.url() if self._auth else f"mongodb://127.0.0.1:{self.port}", serverSelectionTimeoutMS=500
        ) as client:
            client[self.database].command("ping")
        return True


class AppProcess(Process):
    """A process of the app itself (API, worker or beat) with the stack's environment."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        super().__init__(workdir)
        self.env = env

    def environment(self) -> dict[str, str]:
        pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        return {**os.environ, **self.env, "PYTHONPATH": pythonpath}


class ApiServer(AppProcess):
    name = "api"

    def __init__(self, workdir: Path, env: dict[str, str], port: int | None = None, workers: int = 2) -> None:
        super().__init__(workdir, env)
        self.port = port or free_port()
        self.workers = workers

    def environment(self) -> dict[str, str]:
        return {
            **super().environment(),
            "BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(self.workers),
            "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / "prometheus"),
        }

    def command(self) -> list[str]:
        return [sys.executable, "-m", *API_COMMAND]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        import httpx

        return httpx.get(self.url + "/health", timeout=1).status_code == 200


class CeleryWorker(AppProcess):
    def __init__(
        self,
        workdir: Path,
        env: dict[str, str],
        node: str = "worker1",
        concurrency: int = 2,
        queues: str = ",".join(WORKER_QUEUES),
    ) -> None:
        self.name = node
        super().__init__(workdir, env)
        self.node = f"{node}@{socket.gethostname()}"
        self.concurrency = concurrency
        self.queues = queues

    def command(self) -> list[str]:
        command = worker_command(self.concurrency, queues=self.queues, node=self.node)
        return [sys.executable, "-m", *command, "--loglevel", "INFO"]

    def ready(self) -> bool:
        from celery import Celery

        # A Celery app of its own for each look: a fresh connection (a pooled one may be stale
        # after a broker restart) to this worker's broker, which need not be this process's.
        # Control commands go through the app's write URL, and CELERY_BROKER_URL in this
        # process's environment would win over a broker given to the app.
        with Celery(set_as_current=False) as app:
            app.conf.broker_write_url = self.env["CELERY_BROKER_URL"]
            return bool(app.control.ping(destination=[self.node], timeout=1.0))


class CeleryBeat(AppProcess):
    name = "beat"

    def command(self) -> list[str]:
        return [sys.executable, "-m", *beat_command(pidfile=str(self.workdir / "beat.pid")), "--loglevel", "INFO"]

    def ready(self) -> bool:
        # RedBeat logs this once it holds the lock; a second beat waits before it. In this run's
        # lines: after a restart, the last run's would say it at once.
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            return b"beat: Acquired lock" in log.read()
