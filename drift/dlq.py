"""Dead letters (`chain dlq`): list and show what the services could not process, redrive
it after the cause is fixed, or drop it.

Every service queue `<queue>` dead-letters to `<queue>.dlq` (shared/topology.py): the river
does it with its reason in `x-error-*` headers, the broker does it for a poison message past
the delivery limit with its own `x-death` headers.

Reading loses and reorders nothing: messages are fetched with `basic.get` and manual ack on
one channel; those an operator does not redrive or drop are never acked, and closing the
channel hands them all back to the broker, in their order. A DLQ is a quorum queue without
a delivery limit, so the delivery count each read adds is harmless.

Redrive publishes a copy to the queue the letter failed on, waits for the broker's confirm,
and only then acks the DLQ copy: a crash in between leaves at worst a duplicate, which the
consumer's inbox absorbs.
"""

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.exceptions import ChannelNotFoundEntity

from drift import journal
from shared.config import Settings
from shared.envelope import parse_envelope

# The DLQs of the services' queues and of kartlegging's intake (services/*/app.py).
DLQS = ("kartlegging.dlq", "kartlegging.mottak-inn.dlq", "bosetting.dlq", "kompetanse.dlq")
SUFFIX = ".dlq"

# Headers that describe the failed attempts: a redriven letter starts afresh without them.
_FAILURE_HEADERS = frozenset(
    {"x-attempt", "x-death", "x-last-error", "x-failed-queue", "x-dead-lettered-at", "x-delivery-count"}
)
_FAILURE_PREFIXES = ("x-error-", "x-first-death-", "x-last-death-")

OnStart = Callable[[int], None]  # how many letters were selected
OnLetter = Callable[["DeadLetter"], None]  # one letter redriven or dropped


class DlqFeil(Exception):
    """An operator error with a clear message; nothing was changed."""


@dataclass(frozen=True)
class DeadLetter:
    dlq: str
    message_id: str  # the AMQP message id; for a message without one, a hash of its body
    type: str | None
    subject: str | None  # these two only if the body is a valid CloudEvents envelope
    event_id: str | None
    error_kind: str | None
    reason: str | None
    attempts: int | None
    failed_queue: str
    dead_lettered_at: str | None
    size: int
    properties: dict[str, Any] = field(default_factory=dict, repr=False)
    headers: dict[str, Any] = field(default_factory=dict, repr=False)
    body: bytes = field(default=b"", repr=False)

    def summary(self) -> dict[str, Any]:
        """Everything but headers, properties and body: safe to print in bulk."""
        return {k: v for k, v in asdict(self).items() if k not in ("properties", "headers", "body")}

    def body_text(self) -> str:
        """The body as pretty JSON if it parses, else as text."""
        try:
            return json.dumps(json.loads(self.body), indent=2, ensure_ascii=False)
        except ValueError:
            return self.body.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Utval:
    """Which dead letters an operation takes: every given filter must match."""

    queue: str | None = None
    message_id: str | None = None
    event_type: str | None = None
    reason_contains: str | None = None  # case-insensitive, in the error kind or reason
    all_: bool = False
    only: frozenset[str] | None = None  # message ids an operator confirmed (drop)

    def check(self) -> None:
        if not (self.all_ or self.queue or self.message_id or self.event_type or self.reason_contains):
            raise DlqFeil("give a filter (queue, id, type, reason) or all: refusing to take every dead letter by default")

    def matches(self, letter: DeadLetter) -> bool:
        reason = f"{letter.error_kind or ''}: {letter.reason or ''}".lower()
        return (
            (self.message_id is None or letter.message_id == self.message_id)
            and (self.event_type is None or letter.type == self.event_type)
            and (self.reason_contains is None or self.reason_contains.lower() in reason)
            and (self.only is None or letter.message_id in self.only)
        )

    def params(self) -> dict[str, Any]:
        """For the journal: the filters that were given."""
        d = {"queue": self.queue, "id": self.message_id, "type": self.event_type, "reason": self.reason_contains}
        return {k: v for k, v in d.items() if v is not None} | ({"all": True} if self.all_ else {})


def dlq_name(queue: str) -> str:
    """`bosetting` and `bosetting.dlq` both name bosetting's DLQ."""
    return queue if queue.endswith(SUFFIX) else queue + SUFFIX


# --- reading ---------------------------------------------------------------------------


async def list_dead_letters(cfg: Settings, queue: str | None = None, limit: int = 1000) -> list[DeadLetter]:
    """The dead letters in every known DLQ (or one), oldest first, at most `limit`."""
    async with _connection(cfg) as conn, _reader(conn) as channel:
        return [letter async for _, letter in _read(conn, channel, queue, limit)]


async def select(cfg: Settings, utval: Utval) -> list[DeadLetter]:
    """The dead letters an operation with this selection would take; changes nothing."""
    utval.check()
    async with _connection(cfg) as conn, _reader(conn) as channel:
        return [letter async for _, letter in _read(conn, channel, utval.queue) if utval.matches(letter)]


async def show(cfg: Settings, message_id: str, queue: str | None = None) -> list[DeadLetter]:
    """The dead letter(s) with this id, with headers and body. One event that several
    services failed on is in each one's DLQ: every copy is returned."""
    found = await select(cfg, Utval(queue=queue, message_id=message_id))
    if not found:
        raise DlqFeil(f"no dead letter with id {message_id}" + (f" in {dlq_name(queue)}" if queue else ""))
    return found


# --- changing --------------------------------------------------------------------------


async def redrive(
    cfg: Settings,
    *,
    queue: str | None = None,
    message_id: str | None = None,
    event_type: str | None = None,
    reason_contains: str | None = None,
    all_: bool = False,
    dry_run: bool = False,
    on_start: OnStart | None = None,
    on_letter: OnLetter | None = None,
) -> int:
    """Republish the selected dead letters to the queues they failed on, with a fresh set
    of attempts; returns how many (or would, with `dry_run`). Fix the cause first: a letter
    redriven into the same failure comes straight back."""
    utval = Utval(queue, message_id, event_type, reason_contains, all_)
    utval.check()
    async with _connection(cfg) as conn, _reader(conn) as channel:
        picked = [(m, letter) async for m, letter in _read(conn, channel, queue) if utval.matches(letter)]
        await _check_targets(conn, [letter for _, letter in picked])
        _notify(on_start, len(picked))
        if dry_run:
            for _, letter in picked:
                _notify(on_letter, letter)
            return len(picked)
        who = journal.operator()
        async with journal.record(cfg, "dlq redrive", utval.params()) as op:
            op.resultat.update(antal=0, dead_letters=[])
            publisher = await conn.channel(publisher_confirms=True, on_return_raises=True)
            for message, letter in picked:
                # Waits for the broker's confirm (an unroutable or refused copy raises) ...
                await publisher.default_exchange.publish(_redriven(message, who), routing_key=letter.failed_queue)
                await message.ack()  # ... and only then is the DLQ copy deleted.
                op.resultat["antal"] += 1
                op.resultat["dead_letters"].append({"id": letter.message_id, "type": letter.type, "til": letter.failed_queue})
                _notify(on_letter, letter)
        return len(picked)


async def drop(
    cfg: Settings,
    *,
    queue: str | None = None,
    message_id: str | None = None,
    event_type: str | None = None,
    reason_contains: str | None = None,
    all_: bool = False,
    only: Collection[str] | None = None,
    yes: bool = False,
    on_start: OnStart | None = None,
    on_letter: OnLetter | None = None,
) -> int:
    """Delete the selected dead letters for good (journaled with ids and types, never
    bodies); returns how many. `only` restricts it to the ids an operator confirmed."""
    if not yes:
        raise DlqFeil("dropping deletes dead letters for good: confirm it (yes)")
    utval = Utval(queue, message_id, event_type, reason_contains, all_, frozenset(only) if only is not None else None)
    utval.check()
    async with _connection(cfg) as conn, _reader(conn) as channel:
        picked = [(m, letter) async for m, letter in _read(conn, channel, queue) if utval.matches(letter)]
        _notify(on_start, len(picked))
        async with journal.record(cfg, "dlq drop", utval.params()) as op:
            op.resultat.update(antal=0, dead_letters=[])
            for message, letter in picked:
                await message.ack()
                op.resultat["antal"] += 1
                op.resultat["dead_letters"].append({"dlq": letter.dlq, "id": letter.message_id, "type": letter.type})
                _notify(on_letter, letter)
        return len(picked)


# --- the broker ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _connection(cfg: Settings) -> AsyncIterator[AbstractConnection]:
    conn = await aio_pika.connect(cfg.amqp_url)
    try:
        yield conn
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _reader(conn: AbstractConnection) -> AsyncIterator[AbstractChannel]:
    """The channel letters are read on: closing it requeues every letter not acked."""
    channel = await conn.channel()
    try:
        yield channel
    finally:
        await channel.close()


async def _read(
    conn: AbstractConnection, channel: AbstractChannel, queue: str | None, limit: int | None = None
) -> AsyncIterator[tuple[AbstractIncomingMessage, DeadLetter]]:
    """Fetch letters unacked, DLQ by DLQ. Each DLQ is read only as deep as it was when we
    came to it: a redriven letter that fails again lands behind, and is not read twice."""
    left = limit
    for dlq, depth in await _dlqs(conn, queue):
        source = await channel.get_queue(dlq, ensure=False)
        for _ in range(depth if left is None else min(depth, left)):
            # Manual ack: unacked, it goes back when the channel closes. Each read adds to
            # its delivery count, harmless in a DLQ (a quorum queue without delivery limit).
            message = await source.get(no_ack=False, fail=False)
            if message is None:
                break
            if left is not None:
                left -= 1
            yield message, _letter(dlq, message)


async def _dlqs(conn: AbstractConnection, queue: str | None) -> list[tuple[str, int]]:
    """The DLQs to read and their depths. A known DLQ that does not exist yet (its service
    never started) is skipped; one asked for by name must exist."""
    found = []
    for name in [dlq_name(queue)] if queue else DLQS:
        depth = await _depth(conn, name)
        if depth is None and queue:
            raise DlqFeil(f"no queue {name}")
        if depth is not None:
            found.append((name, depth))
    return found


async def _depth(conn: AbstractConnection, name: str) -> int | None:
    # A failed passive declare closes its channel: use one of its own.
    channel = await conn.channel()
    try:
        declared = await channel.declare_queue(name, passive=True)
    except ChannelNotFoundEntity:
        return None
    with contextlib.suppress(Exception):
        await channel.close()
    return declared.declaration_result.message_count


async def _check_targets(conn: AbstractConnection, letters: list[DeadLetter]) -> None:
    """Refuse before anything changes. A letter's headers name where it failed, but whoever
    published it could have set them: the DLQ it is in must be that queue's own. And the
    queue must exist, or the copy would have nowhere to go."""
    odd = [lt.message_id for lt in letters if lt.dlq != dlq_name(lt.failed_queue)]
    if odd:
        raise DlqFeil(f"{len(odd)} dead letter(s) name a failed queue that does not feed their DLQ (e.g. {odd[0]}): refusing to redrive")
    for target in sorted({lt.failed_queue for lt in letters}):
        if await _depth(conn, target) is None:
            raise DlqFeil(f"queue {target} does not exist: refusing to redrive into it")


def _redriven(message: AbstractIncomingMessage, who: str) -> aio_pika.Message:
    """The original body and properties, headers without the failure details."""
    headers = {
        k: v for k, v in (message.headers or {}).items() if k not in _FAILURE_HEADERS and not k.startswith(_FAILURE_PREFIXES)
    }
    headers |= {"x-redriven-at": datetime.now(UTC).isoformat(), "x-redriven-by": who}
    # Not user_id (the broker refuses one that is not ours: a mottak system's user) and not
    # expiration (a letter must not vanish on its way back).
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )


# --- reading a letter ------------------------------------------------------------------


def _letter(dlq: str, message: AbstractIncomingMessage) -> DeadLetter:
    headers = dict(message.headers or {})
    envelope = _envelope(message.body)
    return DeadLetter(
        dlq=dlq,
        message_id=message.message_id or "sha256:" + hashlib.sha256(message.body).hexdigest()[:16],
        type=message.type or (envelope.type if envelope else None) or _text(headers.get("x-original-routing-key")),
        subject=envelope.subject if envelope else None,
        event_id=str(envelope.id) if envelope else None,
        error_kind=_text(headers.get("x-error-kind")) or _broker_reason(headers),
        reason=_text(headers.get("x-error-reason")) or _text(headers.get("x-last-error")),
        attempts=_int(headers.get("x-attempt")),
        failed_queue=_failed_queue(dlq, headers),
        dead_lettered_at=_text(headers.get("x-dead-lettered-at")) or _text(_last_death(headers).get("time")),
        size=len(message.body),
        properties=_properties(message),
        headers=headers,
        body=message.body,
    )


def _envelope(body: bytes):
    try:
        return parse_envelope(body)
    except Exception:  # garbage is exactly what a DLQ holds: show what we can
        return None


def _failed_queue(dlq: str, headers: dict) -> str:
    """Where the river says it failed; else the queue the broker dead-lettered it from last
    (`x-first-death-queue` can be a retry tier the letter passed through before);
    else the queue whose DLQ this is."""
    return (
        _text(headers.get("x-failed-queue"))
        or _text(_last_death(headers).get("queue"))
        or _text(headers.get("x-first-death-queue"))
        or dlq.removesuffix(SUFFIX)
    )


def _last_death(headers: dict) -> dict:
    deaths = headers.get("x-death")
    return deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}


def _broker_reason(headers: dict) -> str | None:
    reason = _text(_last_death(headers).get("reason")) or _text(headers.get("x-first-death-reason"))
    return f"broker:{reason}" if reason else None


def _properties(message: AbstractIncomingMessage) -> dict[str, Any]:
    props = {
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "message_id": message.message_id,
        "type": message.type,
        "correlation_id": message.correlation_id,
        "timestamp": message.timestamp,
        "app_id": message.app_id,
        "user_id": message.user_id,
        "delivery_mode": int(message.delivery_mode) if message.delivery_mode else None,
        "redelivered": message.redelivered,
    }
    return {k: v for k, v in props.items() if v is not None}


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _notify(callback: Callable | None, value: Any) -> None:
    if callback is not None:
        callback(value)
