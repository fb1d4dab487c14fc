"""A service's river: the one consumer of its queue (after NAV's rapids-and-rivers).

For every delivery: parse the CloudEvents envelope and the typed data from the catalogue,
then in one transaction record the event in the inbox, check its sequence, run the
handler (state change + outbox) and commit; ack only after the commit.

- duplicate (inbox hit) or stale sequence: ack, nothing changes;
- sequence gap, a transient error, or a handler saying `NotReady`: delayed retry through
  the queue's TTL retry tiers, with the attempt count in `x-attempt`;
- malformed input, an unknown event, a `Rejected` command, or retries exhausted:
  dead-lettered to `<queue>.dlq` with the reason in the headers. It never blocks the queue.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import structlog
from faststream.rabbit import RabbitBroker, RabbitExchange, RabbitMessage
from pydantic import ValidationError

from shared.catalogue import EventData, UnknownEvent, parse_data
from shared.envelope import Envelope, parse_envelope
from shared.log import get_logger
from shared.outbox import UnitOfWork, unit_of_work
from shared.topology import DLX, ServiceQueue

log = get_logger()

Handler = Callable[[UnitOfWork, Envelope, EventData], Awaitable[None]]


class NotReady(Exception):
    """The event cannot be applied yet (e.g. the case it refers to is not known yet)."""


class Rejected(Exception):
    """The event can never be applied (a permanent business rule violation)."""


class SequenceGap(Exception):
    pass


@dataclass
class Outcome:
    applied: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0


@dataclass
class River:
    service: str  # also the CloudEvents source of what the handlers emit: urn:chain:<service>
    queue: ServiceQueue
    pool: asyncpg.Pool
    broker: RabbitBroker
    handlers: dict[str, Handler]
    max_attempts: int = 8
    stats: Outcome = field(default_factory=Outcome)

    @property
    def source(self) -> str:
        return f"urn:chain:{self.service}"

    async def handle(self, message: RabbitMessage) -> None:
        """Process one delivery and settle it (ack) exactly once."""
        attempt = _attempt(message.headers)
        try:
            envelope = parse_envelope(message.body)
            data = parse_data(envelope)
        except (ValidationError, UnknownEvent, ValueError) as exc:
            await self._dead_letter(message, "invalid", _describe(exc), attempt)
            return
        structlog.contextvars.bind_contextvars(
            event_type=envelope.type, case_id=envelope.subject, correlation_id=str(envelope.correlationid)
        )
        try:
            result = await self._apply(envelope, data)
        except Rejected as exc:
            await self._dead_letter(message, "rejected", str(exc), attempt)
        except (SequenceGap, NotReady) as exc:
            await self._retry(message, attempt, type(exc).__name__, str(exc))
        except Exception as exc:  # transient by default: a database restart, a lost connection
            log.warning("handler_failed", error=type(exc).__name__, attempt=attempt)
            await self._retry(message, attempt, "error", _describe(exc))
        else:
            await message.ack()
            if result == "applied":
                self.stats.applied += 1
            else:
                self.stats.duplicates += 1
                log.info("event_ignored", reason=result)
        finally:
            structlog.contextvars.unbind_contextvars("event_type", "case_id", "correlation_id")

    async def _apply(self, envelope: Envelope, data: EventData) -> str:
        handler = self.handlers.get(envelope.type)
        async with unit_of_work(self.pool, self.source, cause=envelope) as uow:
            conn = uow.conn
            fresh = await conn.fetchval(
                "INSERT INTO inbox (source, event_id, type) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true",
                envelope.source,
                envelope.id,
                envelope.type,
            )
            if not fresh:
                return "duplicate"
            await conn.execute(
                "INSERT INTO inbox_sequence (source, subject, last_sequence) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
                envelope.source,
                envelope.subject,
            )
            # The row lock serialises concurrent deliveries of one case from one producer.
            last = await conn.fetchval(
                "SELECT last_sequence FROM inbox_sequence WHERE source = $1 AND subject = $2 FOR UPDATE",
                envelope.source,
                envelope.subject,
            )
            if envelope.sequence <= last:
                return "stale"
            if envelope.sequence > last + 1:
                raise SequenceGap(f"expected sequence {last + 1}, got {envelope.sequence}")
            if handler is not None:  # events bound only to keep the sequence need no handler
                await handler(uow, envelope, data)
            await conn.execute(
                "UPDATE inbox_sequence SET last_sequence = $3 WHERE source = $1 AND subject = $2",
                envelope.source,
                envelope.subject,
                envelope.sequence,
            )
        return "applied"

    async def _retry(self, message: RabbitMessage, attempt: int, kind: str, reason: str) -> None:
        if attempt + 1 >= self.max_attempts:
            await self._dead_letter(message, "retries_exhausted", f"{kind}: {reason}", attempt)
            return
        tier = min(attempt, len(self.queue.retry_delays_ms) - 1)
        headers = dict(message.headers or {})
        headers.update({"x-attempt": attempt + 1, "x-last-error": f"{kind}: {reason}"[:500]})
        await self._republish(message, headers, DEFAULT_EXCHANGE, self.queue.retry_queue(tier))
        await message.ack()  # only after the broker confirmed the retry copy
        self.stats.retried += 1

    async def _dead_letter(self, message: RabbitMessage, kind: str, reason: str, attempt: int) -> None:
        headers = dict(message.headers or {})
        headers.update(
            {
                "x-error-kind": kind,
                "x-error-reason": reason[:1000],
                "x-failed-queue": self.queue.name,
                "x-original-routing-key": message.raw_message.routing_key or "",
                "x-attempt": attempt,
                "x-dead-lettered-at": datetime.now(UTC).isoformat(),
            }
        )
        await self._republish(message, headers, DEAD_LETTERS, self.queue.name)
        await message.ack()
        self.stats.dead_lettered += 1
        log.warning("dead_lettered", kind=kind, reason=reason[:300])

    async def _republish(self, message: RabbitMessage, headers: dict, exchange: RabbitExchange, key: str) -> None:
        raw = message.raw_message
        await self.broker.publish(
            raw.body,
            exchange=exchange,
            routing_key=key,
            headers=headers,
            persist=True,
            content_type=raw.content_type,
            message_id=raw.message_id,
            message_type=raw.type,
        )


DEFAULT_EXCHANGE = RabbitExchange("", declare=False)
DEAD_LETTERS = RabbitExchange(DLX, declare=False)


def _attempt(headers: dict | None) -> int:
    try:
        return max(0, int((headers or {}).get("x-attempt", 0)))
    except (TypeError, ValueError):
        return 0  # a forged or broken header must not wedge the message


def _describe(exc: Exception) -> str:
    """A reason for operators: field locations and error types, never the offending values."""
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['type']}" for e in exc.errors()[:10]]
        return f"{exc.title}: " + "; ".join(parts)
    return f"{type(exc).__name__}: {str(exc)[:300]}"
