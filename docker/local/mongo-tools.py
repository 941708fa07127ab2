#!/opt/secantus/bin/python
"""Stand-ins for mongodump and mongorestore in the SecantusDB image (mongo:7 ships the real
MongoDB Database Tools; no registry or Debian package has them here).

They take the options the backup uses, and write and read mongodump's directory layout:
OUT/<db>/<collection>.bson[.gz] (the documents, one BSON document after another) and
<collection>.metadata.json[.gz] (its indexes), so the real tools can read what these write.

    mongodump    --config FILE --db DB [--gzip] --out DIR
    mongorestore --config FILE --nsInclude 'DB.*' [--gzip] [--drop] --dir DIR

FILE is YAML with `uri: mongodb://...`, as the real tools read it (the password stays out
of the process list).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import bson
import pymongo

KEEP = ("unique", "sparse", "expireAfterSeconds", "partialFilterExpression")


def uri_from(config: Path) -> str:
    for line in config.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "uri":
            return value.strip().strip("'\"")
    sys.exit(f"{config}: no `uri:` line")


def opener(gz: bool):
    return gzip.open if gz else open


def dump(args: argparse.Namespace) -> None:
    suffix = ".gz" if args.gzip else ""
    with pymongo.MongoClient(uri_from(args.config), serverSelectionTimeoutMS=10000) as client:
        database = client[args.db]
        target = args.out / args.db
        target.mkdir(parents=True, exist_ok=True)
        for name in sorted(database.list_collection_names()):
            if name.startswith("system."):
                continue
            count = 0
            with opener(args.gzip)(target / f"{name}.bson{suffix}", "wb") as out:
                for document in database[name].find(sort=[("_id", 1)]):
                    out.write(bson.encode(document))
                    count += 1
            indexes = [
                {"v": 2, "key": dict(index["key"]), "name": index["name"], **{k: index[k] for k in KEEP if k in index}}
                for index in database[name].list_indexes()
            ]
            metadata = {"indexes": indexes, "collectionName": name, "type": "collection"}
            with opener(args.gzip)(target / f"{name}.metadata.json{suffix}", "wt") as out:
                json.dump(metadata, out, default=str)
            print(f"done dumping {args.db}.{name} ({count} documents)", file=sys.stderr)


def restore(args: argparse.Namespace) -> None:
    database_name = args.nsInclude.split(".", 1)[0]
    suffix = ".gz" if args.gzip else ""
    source = args.dir / database_name
    with pymongo.MongoClient(uri_from(args.config), serverSelectionTimeoutMS=10000) as client:
        database = client[database_name]
        total = 0
        for path in sorted(source.glob(f"*.bson{suffix}")):
            name = path.name.removesuffix(f".bson{suffix}")
            if args.drop:
                database.drop_collection(name)
            with opener(args.gzip)(path, "rb") as data:
                documents = bson.decode_all(data.read())
            if documents:
                database[name].insert_many(documents, ordered=False)
            with opener(args.gzip)(source / f"{name}.metadata.json{suffix}", "rt") as meta:
                for index in json.load(meta)["indexes"]:
                    if index["name"] == "_id_":
                        continue
                    options = {k: index[k] for k in KEEP if k in index}
                    database[name].create_index(list(index["key"].items()), name=index["name"], **options)
            total += len(documents)
            print(f"restored {database_name}.{name} ({len(documents)} documents)", file=sys.stderr)
        print(f"{total} document(s) restored successfully", file=sys.stderr)


def main() -> None:
    tool = Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(prog=tool)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--gzip", action="store_true")
    if tool == "mongodump":
        parser.add_argument("--db", required=True)
        parser.add_argument("--out", type=Path, required=True)
        dump(parser.parse_args())
    else:
        parser.add_argument("--nsInclude", required=True)
        parser.add_argument("--drop", action="store_true")
        parser.add_argument("--dir", type=Path, required=True)
        restore(parser.parse_args())


if __name__ == "__main__":
    main()
