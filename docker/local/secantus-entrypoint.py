#!/opt/secantus/bin/python
"""Start SecantusDB like the official mongo image starts mongod.

On first start (no users yet) it starts the server on localhost without authentication,
creates the root user from MONGO_INITDB_ROOT_USERNAME/PASSWORD and the application user
from MONGO_APP_USERNAME/PASSWORD (readWrite on MONGO_INITDB_DATABASE), stops it, and then
runs it with --auth on all interfaces.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pymongo

DATA = Path(os.environ.get("SECANTUS_DATA", "/data/db"))
MARKER = DATA / ".users-created"
PORT = "27017"


def server(*extra: str) -> list[str]:
    # --standalone: a single server, as mongo:7 runs here (no replica-set advertisement of
    # its bind address, which clients could not reach).
    return [sys.executable, "-m", "secantus", "--standalone", "--port", PORT, "--storage-path", str(DATA), *extra]


def required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"error: {name} is not set; the database will not start without credentials")
    return value


def create_users() -> None:
    root_user, root_password = required("MONGO_INITDB_ROOT_USERNAME"), required("MONGO_INITDB_ROOT_PASSWORD")
    app_user, app_password = required("MONGO_APP_USERNAME"), required("MONGO_APP_PASSWORD")
    database = os.environ.get("MONGO_INITDB_DATABASE", "app")
    process = subprocess.Popen(server("--host", "127.0.0.1"))
    try:
        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{PORT}", serverSelectionTimeoutMS=30_000)
        client.admin.command("createUser", root_user, pwd=root_password, roles=["root"])
        client[database].command(
            "createUser", app_user, pwd=app_password, roles=[{"role": "readWrite", "db": database}]
        )
        client.close()
        MARKER.write_text(f"root={root_user} app={app_user}@{database}\n")
        print(f"created users {root_user} (root) and {app_user} (readWrite on {database})", flush=True)
    finally:
        process.terminate()
        process.wait(60)
    time.sleep(0.5)


if __name__ == "__main__":
    if not MARKER.exists():
        create_users()
    os.execv(sys.executable, server("--host", "0.0.0.0", "--auth"))
