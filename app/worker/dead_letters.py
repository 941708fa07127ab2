"""Dead-lettered tasks: recorded as failed by the workers, listed and sent again by operators.

A task delivered TASK_MAX_DELIVERIES times without being acknowledged is moved by RabbitMQ to
the dead-letter queue (app/worker/celery_app.py). Every worker also consumes that queue
(`DeadLetterRecorder`). If workers started fewer than all of those deliveries (the record counts
the starts), the others were given back by a broker restart or a lost connection, not a crash:
the task is sent again as it was (at most CHURN_RESENDS times), so an outage never dead-letters
a good task. Otherwise it crashed its worker each time: its record turns FAILURE with the
reason, and keeps the message, so that

    python -m app.worker.dead_letters list
    python -m app.worker.dead_letters resend TASK_ID [TASK_ID ...]     (or --all)

show them and send them again (in compose: `docker compose exec worker python -m app.worker.dead_letters list`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from celery import bootsteps
from kombu import Consumer, Exchange, Queue
from kombu.message import Message
from pymongo.errors import PyMongoError

from app.core.config import get_settings
from app.data import task_records
from app.worker.celery_app import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, celery_app

log = logging.getLogger(__name__)

# While MongoDB is unavailable, a dead letter goes back to its queue and is tried again after this.
RECORD_RETRY_SECONDS = 5.0
# How often a task dead-lettered by broker churn alone is sent again before it counts as failed.
CHURN_RESENDS = 5


def dead_letter_queue() -> Queue:
    exchange = Exchange(DEAD_LETTER_EXCHANGE, type="fanout", durable=True)
    return Queue(DEAD_LETTER_QUEUE, exchange, durable=True, queue_arguments={"x-queue-type": "quorum"})


class DeadLetterRecorder(bootsteps.ConsumerStep):
    """Records each task that reaches the dead-letter queue as FAILURE, with its message."""

    def start(self, c: Any) -> None:
        self.timer = c.timer
        super().start(c)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        return [Consumer(channel, queues=[dead_letter_queue()], callbacks=[self.on_message], accept=["json"])]

    def on_message(self, body: Any, message: Message) -> None:
        headers = message.headers
        deaths = headers.get("x-death") or [{}]
        task_id = headers.get("id")
        try:
            args, kwargs = body[0], body[1]
            queue = deaths[0].get("queue")
            attempt = int(headers.get("retries") or 0)
            if deaths[0].get("reason") == "delivery_limit" and task_records.reopen_after_churn(
                task_id, attempt, CHURN_RESENDS
            ):
                try:
                    self._send_again(body, message, queue)
                except Exception as exc:  # noqa: BLE001 - kombu's errors: tried again, the record stays open
                    log.warning("cannot send dead-lettered task %s again yet (%s); trying shortly", task_id, exc)
                    self.timer.call_after(RECORD_RETRY_SECONDS, message.requeue)
                    return
                log.warning("task %s dead-lettered without crashing its workers each time: sent again", task_id)
                message.ack()
                return
            recorded = task_records.dead_lettered(
                task_id,
                task=headers.get("task"),
                queue=queue,
                message=json.dumps([args, kwargs]),
                # Dead-lettered for its delivery limit: it was delivered that many times.
                deliveries=get_settings().task_max_deliveries,
                reason=deaths[0].get("reason") or "rejected",
            )
        except PyMongoError as exc:
            log.warning("cannot record dead-lettered task %s yet (%s); trying again shortly", task_id, exc)
            self.timer.call_after(RECORD_RETRY_SECONDS, message.requeue)
            return
        except (TypeError, IndexError, KeyError, ValueError):
            log.error("dropping a dead letter that is not a task message: headers %r", headers)
            message.ack()
            return
        log.warning("task %s dead-lettered%s", task_id, "" if recorded else " (its record had already ended)")
        message.ack()

    @staticmethod
    def _send_again(body: Any, message: Message, queue: str) -> None:
        """The task's message as it was (its id, retries and headers), straight to its queue."""
        headers = {name: value for name, value in message.headers.items() if not name.startswith("x-")}
        with celery_app.producer_or_acquire() as producer:
            producer.publish(
                body,
                exchange="",
                routing_key=queue,
                headers=headers,
                serializer="json",
                correlation_id=message.properties.get("correlation_id"),
                retry=True,
            )


def resend(task_id: str) -> str | None:
    """Send a dead-lettered task again; None on success, else why not."""
    record = task_records.take_dead_letter(task_id)
    if record is None:
        return "not a dead-lettered task (unknown id, or already sent again)"
    dead = record["dead_letter"]
    args, kwargs = json.loads(dead["message"])
    try:
        celery_app.backend.forget(task_id)  # the live state of its last, crashed attempt
        celery_app.send_task(dead["task"], args=args, kwargs=kwargs, task_id=task_id, queue=dead["queue"])
    except Exception as exc:  # noqa: BLE001 - reported, and the task stays dead-lettered
        task_records.restore_dead_letter(record)
        return f"could not send it ({type(exc).__name__}: {exc}); it stays dead-lettered"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.worker.dead_letters", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the dead-lettered tasks, oldest first")
    again = commands.add_parser("resend", help="send dead-lettered tasks again")
    again.add_argument("task_ids", nargs="*", metavar="TASK_ID")
    again.add_argument("--all", action="store_true", help="every dead-lettered task")
    args = parser.parse_args(argv)

    try:
        records = task_records.dead_letters()
        if args.command == "list":
            print(f"{'TASK ID':36}  {'KIND':8}  {'QUEUE':8}  {'DEAD SINCE (UTC)':19}  DELIVERIES")
            for record in records:
                dead = record["dead_letter"]
                at = dead["at"].strftime("%Y-%m-%d %H:%M:%S")
                print(
                    f"{record['_id']:36}  {record['kind']:8}  {dead['queue'] or '-':8}  {at:19}  {dead['deliveries']}"
                )
            print(f"{len(records)} dead-lettered task(s)")
            return 0
        if args.all == bool(args.task_ids):
            parser.error("give TASK_IDs or --all (one of the two)")
        failed = 0
        for task_id in [record["_id"] for record in records] if args.all else args.task_ids:
            problem = resend(task_id)
            print(f"{task_id}: {problem or 'sent again'}")
            failed += problem is not None
    except PyMongoError as exc:
        print(f"error: MongoDB is unavailable ({exc}); try again when it is back", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
