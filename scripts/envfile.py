#!/usr/bin/env python3
"""Write and edit the compose stack's `.env`.

    scripts/envfile.py generate [--file .env]          fresh secrets (refuses to overwrite)
    scripts/envfile.py use-local-images [--file .env]  point image variables at local/* images

Standard library only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from topology import IMAGE_VARIABLES, IMAGES, VERSION  # noqa: E402 - standard library only, from the checkout

OFFICIAL_IMAGES = {IMAGE_VARIABLES[name]: image for name, image in IMAGES.items()}
LOCAL_IMAGES = {
    "PYTHON_IMAGE": "local/python:3.11",
    "MONGO_IMAGE": "local/secantus:7-tools",
    "REDIS_IMAGE": "local/redis:7",
    "RABBITMQ_IMAGE": "local/rabbitmq:3-management",
    "NGINX_IMAGE": "local/nginx:1.30",
}


def token(nbytes: int = 24) -> str:
    # URL-safe, so the passwords can sit in connection URLs unescaped.
    return secrets.token_urlsafe(nbytes)


def generate(path: Path) -> str:
    images = "\n".join(f"{name}={image}" for name, image in OFFICIAL_IMAGES.items())
    return f"""\
# The compose stack's settings, written by `make env` with freshly generated secrets.
# Keep this file: the data volumes were initialised with these passwords. Never commit it.
COMPOSE_PROJECT_NAME=microservices

# --- secrets (generated) ---------------------------------------------------------------
MONGO_ROOT_USERNAME=root
MONGO_ROOT_PASSWORD={token()}
MONGO_APP_USERNAME=app
MONGO_APP_PASSWORD={token()}
# Redis: the app's user, and the operators' (the default user).
REDIS_PASSWORD={token()}
REDIS_ADMIN_PASSWORD={token()}
# The broker's administrator (management UI), and the app's own user (its vhost only).
RABBITMQ_ADMIN_USER=admin
RABBITMQ_ADMIN_PASSWORD={token()}
RABBITMQ_USER=app
RABBITMQ_PASSWORD={token()}
# Keys accepted in X-API-Key (comma-separated, 32+ characters each).
API_KEYS={token(32)}

# --- images (official by default; `make local-images` switches to ones built from Debian)
{images}
APP_IMAGE=microservices-app:{VERSION}

# --- networks and published ports -------------------------------------------------------
# nginx and the API's network: the API trusts X-Forwarded-For from it only. Change it if it
# overlaps a network of this host (or another stack on it).
FRONTEND_SUBNET=172.28.231.0/24
# The data services' network (fixed too, so it never overlaps the one above).
BACKEND_SUBNET=172.28.230.0/24
HTTP_PORT=80
HTTPS_PORT=443
# RabbitMQ's management UI, on the loopback interface only.
RABBITMQ_UI_PORT=15672

# --- TLS: set both to enable the HTTPS server block (files readable by nginx) ---------
TLS_CERT_FILE=
TLS_KEY_FILE=

# --- the environment ---------------------------------------------------------------------
# development: this machine, over plain HTTP. production serves HTTPS only: nginx refuses to
# start without the files above, unless ALLOW_PLAIN_HTTP=true (TLS ends before this stack).
ENVIRONMENT=development
ALLOW_PLAIN_HTTP=false
"""


def set_values(path: Path, values: dict[str, str]) -> None:
    lines = path.read_text().splitlines()
    seen = set()
    for index, line in enumerate(lines):
        name = line.split("=", 1)[0].strip()
        if name in values and not line.lstrip().startswith("#"):
            lines[index] = f"{name}={values[name]}"
            seen.add(name)
    lines += [f"{name}={value}" for name, value in values.items() if name not in seen]
    path.write_text("\n".join(lines) + "\n")


def add_missing(path: Path) -> list[str]:
    """Add the settings (and secrets, freshly generated) that a newer version brought and the
    file lacks; what it holds stays. Returns their names."""
    present = {line.split("=", 1)[0].strip() for line in path.read_text().splitlines() if "=" in line}
    fresh = dict(line.split("=", 1) for line in generate(path).splitlines() if "=" in line and not line.startswith("#"))
    missing = {name: value for name, value in fresh.items() if name not in present}
    if missing:
        set_values(path, missing)
    return list(missing)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["generate", "use-local-images", "use-official-images"])
    parser.add_argument("--file", type=Path, default=Path(".env"))
    args = parser.parse_args()

    if args.command == "generate":
        if args.file.exists():
            added = add_missing(args.file)
            print(
                f"{args.file} exists; keeping it (its passwords match the data volumes). "
                f"Remove it and the volumes (`docker compose down -v`) to start over."
                + (f" Added what this version needs: {', '.join(added)}." if added else ""),
                file=sys.stderr,
            )
            return 0
        args.file.write_text(generate(args.file))
        args.file.chmod(0o600)
        print(f"wrote {args.file} with generated secrets")
        return 0

    if not args.file.exists():
        args.file.write_text(generate(args.file))
        args.file.chmod(0o600)
    images = LOCAL_IMAGES if args.command == "use-local-images" else OFFICIAL_IMAGES
    set_values(args.file, images)
    print(f"{args.file}: " + ", ".join(f"{k}={v}" for k, v in images.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
