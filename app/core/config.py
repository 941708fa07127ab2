"""All configuration, read once from the environment (or `.env`) by pydantic-settings.

Every variable is documented in `.env.example`. A deployed stack (`ENVIRONMENT=production`,
which the fleet sets only behind HTTPS, or `staging`, a fleet on plain HTTP) refuses to start
when a secret is empty or looks like a placeholder.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core import liveness

# Environments that refuse insecure secrets.
DEPLOYED = frozenset({"staging", "production"})

# Values that someone copied from an example instead of generating a secret.
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "changethis",
        "password",
        "secret",
        "guest",
        "admin",
        "example",
        "default",
        "test",
        "root",
        "pass",
        "123456",
        "xxx",
        "todo",
    }
)
MIN_API_KEY_LENGTH = 32


def is_placeholder(secret: str) -> bool:
    value = secret.strip().lower()
    return (
        value in PLACEHOLDER_SECRETS
        or (value.startswith("<") and value.endswith(">"))  # a template's "<password>"
        or any(marker in value for marker in ("changeme", "change-me", "replace-me", "your-"))
    )


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _url_password(url: str) -> str | None:
    return urlsplit(url).password


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["development", "test", "staging", "production"] = "development"
    app_name: str = "microservices-api"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The API's JSON access line per request: "errors" (4xx, 5xx and requests slower than a
    # second), "all", or "off". nginx logs every request with the same request id; writing a
    # second line per request costs the API about a third of its /health rate.
    access_log: Literal["all", "errors", "off"] = "errors"
    # Admission control (app/api/admission.py): each API process answers 503 with Retry-After
    # at once, instead of queueing, when its event loop runs this late (smoothed) or this many
    # requests are in flight. 0 turns a measure off.
    admission_max_lag_ms: int = Field(100, ge=0, le=10_000)
    admission_max_in_flight: int = Field(40, ge=0, le=10_000)

    # --- MongoDB -------------------------------------------------------------------------
    mongo_url: str = "mongodb://127.0.0.1:27017"
    mongo_db: str = "app"
    mongo_min_pool_size: int = Field(10, ge=0, le=1000)
    mongo_max_pool_size: int = Field(100, ge=1, le=1000)
    # Budget for one MongoDB operation in the API, server selection included (pymongo's
    # timeoutMS), so a down or stuck database answers 503 instead of hanging: a request ends at
    # its first failed operation. pymongo looks for a server every 0.5 s, so the 503 comes
    # within this plus up to half a second.
    mongo_timeout_ms: int = Field(800, ge=100, le=60_000)
    # Workers run longer queries (reports) and may wait longer.
    mongo_worker_timeout_ms: int = Field(30_000, ge=100, le=600_000)

    # --- Redis: read cache ---------------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6379/0"
    cache_enabled: bool = True
    cache_ttl_seconds: int = Field(60, ge=1, le=3600)
    # Socket timeout for cache calls: a slow Redis costs at most this per request.
    cache_timeout_seconds: float = Field(0.25, gt=0, le=5)
    # After a cache failure, skip Redis for this long instead of paying the timeout again.
    cache_retry_after_seconds: float = Field(5.0, ge=0, le=300)
    # Redis Sentinel (a primary with replicas): the Sentinels, host:port each. Set, every Redis
    # client (cache, results, beat's lock) asks them for the primary of REDIS_SENTINEL_MASTER and
    # follows it through a failover; REDIS_URL and CELERY_RESULT_BACKEND still give the user,
    # password and database, and their host is not used (app/data/redis_servers.py).
    redis_sentinels: Annotated[list[tuple[str, int]], NoDecode] = []
    redis_sentinel_master: str = Field("app", pattern=r"^[A-Za-z0-9._-]+$")
    redis_sentinel_password: SecretStr = SecretStr("")

    # --- Celery --------------------------------------------------------------------------
    # One URL, or one per node of a RabbitMQ cluster separated by `;`: the API, workers and beat
    # go to the next node when theirs is lost (kombu's failover).
    celery_broker_url: str = "amqp://127.0.0.1:5672//"
    celery_result_backend: str = "redis://127.0.0.1:6379/1"
    # Quorum queues are replicated on a RabbitMQ cluster (and work on a single node too).
    celery_queue_type: Literal["classic", "quorum"] = "quorum"
    result_ttl_seconds: int = Field(3600, ge=60)
    broker_timeout_seconds: float = Field(2.0, gt=0, le=30)
    # Messages a task queue holds at most; past it, submits answer 503 (the queue refuses more).
    task_queue_max_length: int = Field(10_000, ge=1)
    # Deliveries of a task that may end without an acknowledgement (its worker died, or lost the
    # broker) before it goes to the dead-letter queue and reads FAILURE. Quorum queues only.
    task_max_deliveries: int = Field(3, ge=1, le=100)
    task_max_retries: int = Field(3, ge=0, le=20)
    task_retry_backoff_seconds: int = Field(2, ge=1, le=600)
    task_retry_backoff_max_seconds: int = Field(600, ge=1)
    # Full jitter (Celery's): each delay is random between 0 and the backoff, which spreads
    # retries out; off, each delay is exactly the backoff.
    task_retry_jitter: bool = True
    # Where a worker's consumer keeps its liveness file, and beside it beat its lease, for the
    # container health check (app/core/liveness.py); on the container's tmpfs.
    worker_heartbeat_dir: Path = liveness.DEFAULT_DIRECTORY
    task_soft_time_limit_seconds: int = Field(300, ge=1)
    task_time_limit_seconds: int = Field(330, ge=1)
    # CPU work per iteration of the data-processing task (PBKDF2 rounds).
    process_rounds_per_iteration: int = Field(20_000, ge=1, le=10_000_000)
    # How long task records and report documents are kept before the daily cleanup removes them.
    task_record_ttl_hours: int = Field(24, ge=1)
    report_retention_days: int = Field(7, ge=1)
    # Call-out task: only these hosts may be called (empty = call-outs disabled), on these ports;
    # internal addresses only when an entry names them (app/worker/callout.py).
    callout_allowed_hosts: Annotated[list[str], NoDecode] = []
    callout_allowed_ports: Annotated[list[int], NoDecode] = [443]
    callout_timeout_seconds: float = Field(5.0, gt=0, le=60)

    # --- Celery beat ---------------------------------------------------------------------
    cleanup_crontab: str = "0 2 * * *"
    timezone: str = "UTC"
    # The beat lock in Redis (RedBeat) keeps a second beat instance on standby.
    beat_lock_timeout_seconds: int = Field(60, ge=5)

    # --- HTTP ----------------------------------------------------------------------------
    api_keys: Annotated[list[SecretStr], NoDecode] = []
    auth_protect_reads: bool = False
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # How long the answer to a request with an Idempotency-Key is kept (and replayed).
    idempotency_key_ttl_hours: int = Field(24, ge=24, le=24 * 30)
    items_page_max: int = Field(100, ge=1, le=1000)

    @field_validator("api_keys", "callout_allowed_hosts", "callout_allowed_ports", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _host_ports(cls, value: object) -> object:
        """Comma-separated host:port entries, held as (host, port) pairs."""
        pairs = []
        for entry in _split_csv(value):
            if not isinstance(entry, str):
                pairs.append(entry)  # already a pair
                continue
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{entry!r} is not host:port (for example 10.0.3.41:26379)")
            pairs.append((host, int(port)))
        return pairs

    @field_validator("callout_allowed_hosts")
    @classmethod
    def _callout_entries(cls, value: list[str]) -> list[str]:
        from app.worker.callout import Entry  # the one place that knows what an entry may be

        for entry in value:
            Entry.parse(entry)
        return value

    @field_validator("callout_allowed_ports")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        if not all(0 < port < 65536 for port in value):
            raise ValueError("ports are between 1 and 65535")
        return value

    @field_validator("cleanup_crontab")
    @classmethod
    def _crontab_has_five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("must be a 5-field crontab expression such as '0 2 * * *'")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.mongo_min_pool_size > self.mongo_max_pool_size:
            raise ValueError("MONGO_MIN_POOL_SIZE must not exceed MONGO_MAX_POOL_SIZE")
        if self.task_soft_time_limit_seconds >= self.task_time_limit_seconds:
            raise ValueError("TASK_SOFT_TIME_LIMIT_SECONDS must be below TASK_TIME_LIMIT_SECONDS")
        # Redis evicts the keys nearest to expiry first (volatile-ttl): cache entries must
        # live much shorter than task results so that they are always evicted first.
        if self.cache_ttl_seconds * 4 > self.result_ttl_seconds:
            raise ValueError("CACHE_TTL_SECONDS must be at most a quarter of RESULT_TTL_SECONDS")
        problems = self.secret_problems()
        if problems:
            message = "insecure configuration: " + "; ".join(problems)
            if self.environment in DEPLOYED:
                raise ValueError(message + f" (refusing to start with ENVIRONMENT={self.environment})")
            warnings.warn(message, stacklevel=2)
        return self

    def secret_problems(self) -> list[str]:
        """Secrets that are missing or look like placeholders, one message per variable."""
        problems = []
        if not self.api_keys:
            problems.append("API_KEYS is empty; generate one with `make env`")
        for key in self.api_keys:
            raw = key.get_secret_value()
            if is_placeholder(raw) or len(raw) < MIN_API_KEY_LENGTH:
                problems.append(f"API_KEYS holds a key shorter than {MIN_API_KEY_LENGTH} characters or a placeholder")
                break
        for name in ("mongo_url", "redis_url", "celery_broker_url", "celery_result_backend"):
            # A RabbitMQ cluster's broker URL is one URL per node, separated by `;`.
            passwords = [_url_password(url) for url in getattr(self, name).split(";")]
            if any(password is None or is_placeholder(password) for password in passwords):
                problems.append(f"{name.upper()} has no password or a placeholder one")
        sentinel_password = self.redis_sentinel_password.get_secret_value()
        if self.redis_sentinels and (not sentinel_password or is_placeholder(sentinel_password)):
            problems.append("REDIS_SENTINELS is set and REDIS_SENTINEL_PASSWORD is empty or a placeholder")
        return problems

    @property
    def api_key_values(self) -> list[str]:
        return [key.get_secret_value() for key in self.api_keys]


@functools.lru_cache
def get_settings() -> Settings:
    return Settings()
