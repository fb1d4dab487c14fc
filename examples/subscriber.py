#!/usr/bin/env python3
"""A partner's subscriber to the chain's events: plain aio-pika (`pip install aio-pika`),
nothing else from the chain. Copy it and put your own handling in `handle`.

It consumes the partner's own queue (`partner.NAME`, made by the operator with
`chain partner add`), checks the CloudEvents envelope fields it needs, prints one line per
event, and acknowledges each message after handling it. A redelivered message (after a
lost connection or a crash between handling and ack) is recognised by its `source` and
`id` and acknowledged without being handled twice; with `--seen FILE` that memory
survives restarts. It stops cleanly on SIGINT/SIGTERM, or after `--max N` events.

Connection details, as `chain partner add` prints them, from the environment or options:

    PARTNER_HOST PARTNER_PORT PARTNER_VHOST PARTNER_USER PARTNER_PASSWORD PARTNER_QUEUE
    (or PARTNER_AMQP_URL=amqp://USER:PASSWORD@HOST:PORT/VHOST with PARTNER_QUEUE)

    python examples/subscriber.py --max 10
    python examples/subscriber.py --host broker.example --user partner-acme --password ... --queue partner.acme

Exit status: 0 stopped as asked, 1 the broker refused or could not be reached, 2 bad usage.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import sys
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

DATASCHEMA = re.compile(r"^urn:chain:schema:(?P<type>[a-z_]+\.[a-z_]+):v(?P<version>[0-9]+)$")
REQUIRED = ("specversion", "id", "source", "type", "time", "subject", "dataschema", "data")


class Invalid(ValueError):
    pass


def envelope(body: bytes) -> dict:
    """The CloudEvents 1.0 envelope (structured JSON mode), checked for what we use."""
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise Invalid(f"not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise Invalid("not a JSON object")
    missing = [f for f in REQUIRED if f not in event]
    if missing:
        raise Invalid(f"missing {', '.join(missing)}")
    if event["specversion"] != "1.0":
        raise Invalid(f"specversion {event['specversion']!r}, expected '1.0'")
    for name in ("id", "source", "type", "subject"):
        if not isinstance(event[name], str) or not event[name]:
            raise Invalid(f"{name} must be a non-empty string")
    try:
        datetime.fromisoformat(event["time"])
    except (TypeError, ValueError):
        raise Invalid(f"time {event['time']!r} is not RFC 3339") from None
    match = DATASCHEMA.match(str(event["dataschema"]))
    if not match or match["type"] != event["type"]:
        raise Invalid(f"dataschema {event['dataschema']!r} does not name type {event['type']!r}")
    if not isinstance(event["data"], dict):
        raise Invalid("data must be a JSON object")
    event["version"] = int(match["version"])
    return event


def handle(event: dict) -> None:
    """Your handling goes here. Tolerant reader: ignore fields you do not know, treat an
    unknown enum value as unknown, and tell versions apart by `dataschema`."""
    data = json.dumps(event["data"], ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    print(f"{event['time']} {event['type']} v{event['version']} {event['subject']} {event['id']} {data}", flush=True)


class Seen:
    """Events already handled, by (source, id); optionally kept in a file across restarts."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.keys: set[str] = set()
        if path and path.exists():
            self.keys = set(path.read_text(encoding="utf-8").split("\n")) - {""}
        self.file = path.open("a", encoding="utf-8") if path else None

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def add(self, key: str) -> None:
        self.keys.add(key)
        if self.file:
            self.file.write(key + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())


async def consume(url: str, queue_name: str, max_events: int | None, seen: Seen, stop: asyncio.Event) -> int:
    handled = 0
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=20)
        queue = await channel.get_queue(queue_name, ensure=False)  # the partner may not declare
        print(f"listening on {queue_name}", file=sys.stderr, flush=True)
        async with queue.iterator() as messages:
            async for message in _until(messages, stop):
                if await on_message(message, seen):
                    handled += 1
                    if max_events is not None and handled >= max_events:
                        break
    return handled


async def on_message(message: AbstractIncomingMessage, seen: Seen) -> bool:
    """Handle one message; True when it was a new event."""
    try:
        event = envelope(message.body)
    except Invalid as exc:
        # Requeueing would bring it back for ever: drop it, say so (the operator can replay).
        print(f"dropped an invalid message ({message.message_id}): {exc}", file=sys.stderr, flush=True)
        await message.reject(requeue=False)
        return False
    key = f"{event['source']} {event['id']}"
    if key in seen:  # redelivered or replayed: already handled
        await message.ack()
        return False
    handle(event)
    seen.add(key)  # first remember, then acknowledge: a crash in between means a harmless redelivery
    await message.ack()
    return True


async def _until(messages, stop: asyncio.Event):
    """The messages, until `stop` is set (a signal)."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            receiving = asyncio.ensure_future(messages.__anext__())
            done, _ = await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if receiving not in done:
                receiving.cancel()
                return
            try:
                yield receiving.result()
            except StopAsyncIteration:
                return
    finally:
        stopping.cancel()


def url_from(args: argparse.Namespace) -> str:
    if args.url:
        return args.url
    if not (args.user and args.password):
        raise SystemExit("error: give PARTNER_AMQP_URL, or PARTNER_USER and PARTNER_PASSWORD (or --user/--password)")
    vhost = "" if args.vhost == "/" else quote(args.vhost, safe="")
    return f"amqp://{quote(args.user, safe='')}:{quote(args.password, safe='')}@{args.host}:{args.port}/{vhost}"


def main() -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="Consume a partner's queue of the chain's events and print them.")
    parser.add_argument("--url", default=env("PARTNER_AMQP_URL"), help="amqp://USER:PASSWORD@HOST:PORT/VHOST (PARTNER_AMQP_URL)")
    parser.add_argument("--host", default=env("PARTNER_HOST", "127.0.0.1"), help="PARTNER_HOST")
    parser.add_argument("--port", type=int, default=int(env("PARTNER_PORT", "5672")), help="PARTNER_PORT")
    parser.add_argument("--vhost", default=env("PARTNER_VHOST", "/"), help="PARTNER_VHOST")
    parser.add_argument("--user", default=env("PARTNER_USER"), help="PARTNER_USER")
    parser.add_argument("--password", default=env("PARTNER_PASSWORD"), help="PARTNER_PASSWORD")
    parser.add_argument("--queue", default=env("PARTNER_QUEUE"), help="the partner's queue, partner.NAME (PARTNER_QUEUE)")
    parser.add_argument("--max", type=int, default=None, help="stop after this many events")
    parser.add_argument("--seen", type=Path, default=None, help="a file remembering handled events across restarts")
    args = parser.parse_args()
    if not args.queue:
        parser.error("give the queue: PARTNER_QUEUE or --queue")
    try:
        url = url_from(args)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            handled = await consume(url, args.queue, args.max, Seen(args.seen), stop)
        except (aio_pika.exceptions.AMQPError, OSError) as exc:
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"stopped after {handled} events", file=sys.stderr)
        return 0

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
