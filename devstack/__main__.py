"""Run the whole system as local processes: `python -m devstack` (or `make run`).

Redis, RabbitMQ and SecantusDB (a MongoDB-protocol server) on their own ports, the API under
gunicorn, Celery workers and beat. Data and generated passwords stay in `.devstack/` so a
restart keeps items and queued tasks. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from devstack.servers import REPO_ROOT, ServerError
from devstack.stack import Stack
from topology import API_PORT


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".devstack", help="data directory (default: .devstack)")
    parser.add_argument("--api-port", type=int, default=API_PORT)
    parser.add_argument("--redis-port", type=int, default=6380)
    parser.add_argument("--rabbitmq-port", type=int, default=5673)
    parser.add_argument("--mongo-port", type=int, default=27018)
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes (default: 1)")
    parser.add_argument("--mongo-url", help="use this MongoDB instead of starting SecantusDB")
    args = parser.parse_args()

    args.dir.mkdir(parents=True, exist_ok=True)
    secrets_file = args.dir / "secrets.json"
    passwords = json.loads(secrets_file.read_text()) if secrets_file.exists() else None
    stack = Stack(
        args.dir,
        mongo_url=args.mongo_url,
        ports={
            "api": args.api_port,
            "redis": args.redis_port,
            "rabbitmq": args.rabbitmq_port,
            "mongo": args.mongo_port,
        },
        passwords=passwords,
        settings={"ENVIRONMENT": "development", "CALLOUT_ALLOWED_HOSTS": "127.0.0.1,localhost"},
    )
    # The users created on first start keep these passwords: they must survive restarts.
    secrets_file.write_text(json.dumps(stack.passwords, indent=2))
    os.chmod(secrets_file, 0o600)
    os.environ.update(stack.env)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        print("starting Redis, RabbitMQ and MongoDB ...", flush=True)
        stack.start_services()
        print("starting the API, workers and beat ...", flush=True)
        stack.start_app(workers=args.workers)
        print(
            f"\nAPI        {stack.api.url}  (docs: {stack.api.url}/docs)\n"
            f"API key    {stack.api_key}   (send as X-API-Key)\n"
            f"logs       {args.dir}/*/*.log\n"
            f"try        curl -H 'X-API-Key: {stack.api_key}' -H 'Content-Type: application/json' "
            f'-d \'{{"name": "widget", "price": 9.5}}\' {stack.api.url}/api/items\n\n'
            "Ctrl-C stops everything.",
            flush=True,
        )
        while True:
            for process in [stack.api, *stack.workers, stack.beat]:
                if not process.running:
                    raise ServerError(f"{process.name} exited; see {process.log_path}:\n{process.tail()}")
            time.sleep(1)
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping ...", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
