#!/opt/secantus/bin/python
"""Health check of the SecantusDB container (mongo:7 uses mongosh instead)."""

import sys

import pymongo

try:
    pymongo.MongoClient("mongodb://127.0.0.1:27017", serverSelectionTimeoutMS=3000).admin.command("ping")
except Exception as exc:  # noqa: BLE001
    sys.exit(f"unhealthy: {exc}")
