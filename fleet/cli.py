"""fleet: one front door for operating an environment.

    fleet setup                 converge every host (ansible/site.yml)
    fleet deploy [IMAGE]        roll out an image, host by host, gated on health
    fleet rollback              roll back to the image before the current one
    fleet maintain              restart the data nodes one at a time, each back in its clusters first
    fleet health                every host checked over SSH (the same as fleet-health)
    fleet logs SERVICE [-f]     a service's logs from every host that runs it
    fleet details               what runs where, on which image; the deploy lock
    fleet audit                 every host's release history, merged and sorted
    fleet lock [-m MESSAGE]     hold the deploy lock: the verbs that change the fleet refuse to start
    fleet unlock                free it

-i INVENTORY names the environment (default ansible/inventory/pulumi.py, which reads the stack
from PULUMI_STACK or PULUMI_OUTPUTS_FILE).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from fleet import health, playbooks, views
from fleet.inventory import REPO_ROOT, InventoryError, Target, load

DEFAULT_INVENTORY = "ansible/inventory/pulumi.py"  # in this checkout, wherever fleet is run from


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="fleet", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    inventory_help = f"the environment's Ansible inventory (default {DEFAULT_INVENTORY})"
    top.add_argument("-i", "--inventory", default=str(REPO_ROOT / DEFAULT_INVENTORY), help=inventory_help)
    # -i also after the verb; SUPPRESS keeps the verb's parser from resetting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-i", "--inventory", default=argparse.SUPPRESS, help=inventory_help)
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help: str) -> argparse.ArgumentParser:
        return verbs.add_parser(name, parents=[common], help=help, description=help)

    verb("setup", "converge every host into the running system (ansible/site.yml)")
    deploy = verb("deploy", "roll out an app image: API hosts one at a time, gated on health (ansible/deploy.yml)")
    deploy.add_argument("image", nargs="?", help="the image to run (default: the inventory's app_image)")
    verb("rollback", "roll back to the image the fleet ran before the current one (ansible/rollback.yml)")
    verb(
        "maintain",
        "restart the data nodes one at a time, each back in its clusters before the next (ansible/maintain.yml)",
    )
    sweep = verb("health", "check every host over SSH; exit 0 healthy, 1 degraded, 2 down, 3 at risk")
    health.add_arguments(sweep)
    logs = verb("logs", "a service's container logs from every host that runs it")
    logs.add_argument("service", choices=sorted(views.SERVICES), help="which service")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until interrupted")
    logs.add_argument("-n", "--lines", type=int, default=100, metavar="N", help="lines per host (default 100)")
    details = verb("details", "what runs where: each host's containers, images and status; the deploy lock")
    details.add_argument("--json", action="store_true", help="print JSON instead of a table")
    audit = verb("audit", "every host's release history, merged and sorted by time")
    audit.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lock = verb("lock", "hold the deploy lock: setup, deploy, rollback and maintain refuse to start until unlock")
    lock.add_argument("-m", "--message", default="", help="why, shown to whoever is refused")
    verb("unlock", "free the deploy lock, whoever holds it")
    return top


def on_hosts(args: argparse.Namespace, view: Callable[[list[Target]], object]) -> int:
    targets = load(args.inventory)
    return asyncio.run(view(targets))


def main(argv: list[str] | None = None) -> int:
    top = parser()
    args = top.parse_args(argv)
    if args.verb == "logs" and args.lines < 0:
        top.error("--lines needs a number of lines, 0 or more")
    try:
        match args.verb:
            case "health":
                return health.check(top, args)
            case "setup":
                return playbooks.locked(args.inventory, "site.yml", {})
            case "deploy":
                return playbooks.locked(args.inventory, "deploy.yml", {"app_image": args.image} if args.image else {})
            case "rollback":
                return playbooks.locked(args.inventory, "rollback.yml", {})
            case "maintain":
                return playbooks.locked(args.inventory, "maintain.yml", {})
            case "lock":
                return playbooks.lock(args.inventory, args.message)
            case "unlock":
                return playbooks.unlock(args.inventory)
            case "details":
                return on_hosts(args, lambda targets: views.details(targets, args.json))
            case "audit":
                return on_hosts(args, lambda targets: views.audit(targets, args.json))
            case "logs":
                return on_hosts(args, lambda targets: views.logs(targets, args.service, args.follow, args.lines))
    except InventoryError as error:
        print(f"fleet: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    raise AssertionError(args.verb)


if __name__ == "__main__":
    sys.exit(main())
