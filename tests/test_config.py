"""Configuration: production refuses missing or placeholder secrets, with a message that says which."""

from __future__ import annotations

from pathlib import Path

import pytest
from dotenv import dotenv_values
from pydantic import ValidationError

from app.core.config import Settings
from devstack.servers import ApiServer, ServerError

GOOD = {
    "environment": "production",
    "api_keys": "k" * 40,
    "mongo_url": "mongodb://app:Zq9dX2p1Lw@db:27017/app",
    "redis_url": "redis://:Zq9dX2p1Lw@redis:6379/0",
    "celery_broker_url": "amqp://app:Zq9dX2p1Lw@rabbitmq:5672//",
    "celery_result_backend": "redis://:Zq9dX2p1Lw@redis:6379/1",
}


def settings(**overrides) -> Settings:
    return Settings(_env_file=None, **{**GOOD, **overrides})


def test_generated_secrets_are_accepted():
    assert settings().api_key_values == ["k" * 40]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"api_keys": ""}, "API_KEYS"),
        ({"api_keys": "changeme"}, "API_KEYS"),
        ({"api_keys": "short-key"}, "API_KEYS"),
        ({"mongo_url": "mongodb://db:27017/app"}, "MONGO_URL"),
        ({"redis_url": "redis://:changeme@redis:6379/0"}, "REDIS_URL"),
        ({"celery_broker_url": "amqp://guest:guest@rabbitmq:5672//"}, "CELERY_BROKER_URL"),
        ({"celery_result_backend": "redis://redis:6379/1"}, "CELERY_RESULT_BACKEND"),
        ({"redis_sentinels": "10.0.3.41:26379"}, "REDIS_SENTINEL_PASSWORD"),
        ({"redis_sentinels": "10.0.3.41:26379", "redis_sentinel_password": "changeme"}, "REDIS_SENTINEL_PASSWORD"),
    ],
)
@pytest.mark.parametrize("environment", ["production", "staging"])
def test_production_refuses_placeholder_secrets(override, named, environment):
    with pytest.raises(ValidationError) as error:
        settings(environment=environment, **override)
    assert named in str(error.value) and f"refusing to start with ENVIRONMENT={environment}" in str(error.value)


def test_development_only_warns():
    with pytest.warns(UserWarning, match="API_KEYS is empty"):
        settings(environment="development", api_keys="")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"mongo_min_pool_size": 50, "mongo_max_pool_size": 10}, "MONGO_MIN_POOL_SIZE"),
        ({"mongo_max_pool_size": 0}, "mongo_max_pool_size"),
        ({"cleanup_crontab": "daily"}, "5-field crontab"),
        ({"cache_ttl_seconds": 1800}, "CACHE_TTL_SECONDS"),
        ({"task_soft_time_limit_seconds": 400}, "TASK_SOFT_TIME_LIMIT_SECONDS"),
        ({"redis_sentinels": "10.0.3.41"}, r"redis_sentinels\n.*'10.0.3.41' is not host:port"),
        ({"redis_sentinels": "10.0.3.41:26379,:26379"}, "':26379' is not host:port"),
        ({"redis_sentinel_master": "app primary"}, "redis_sentinel_master"),
    ],
)
def test_inconsistent_settings_are_named(override, message):
    with pytest.raises(ValidationError, match=message):
        settings(**override)


def test_the_server_refuses_to_start_with_a_placeholder_key(stack, tmp_path):
    server = ApiServer(tmp_path, {**stack.env, "API_KEYS": "changeme"}, workers=1)
    server.ready_timeout = 20
    with pytest.raises(ServerError, match="exited"):
        server.start()
    assert "API_KEYS" in server.tail(200) and "refusing to start" in server.tail(200)
    server.stop()


ENV_EXAMPLE = Path(__file__).resolve().parent.parent / ".env.example"


def test_env_example_documents_every_setting():
    text = ENV_EXAMPLE.read_text()
    documented = {line.lstrip("# ").split("=", 1)[0] for line in text.splitlines() if "=" in line}
    missing = {name.upper() for name in Settings.model_fields} - documented
    assert not missing, f".env.example does not document {sorted(missing)}"


def test_env_example_as_is_is_refused_in_production(monkeypatch):
    for name in Settings.model_fields:  # the suite's own environment would take precedence
        monkeypatch.delenv(name.upper(), raising=False)
    assert dotenv_values(ENV_EXAMPLE)["ENVIRONMENT"] == "production"
    with pytest.raises(ValidationError) as error:
        Settings(_env_file=ENV_EXAMPLE)
    for name in ("API_KEYS", "MONGO_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        assert name in str(error.value)
