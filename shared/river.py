"""A service's river: the one consumer of its queue (after NAV's rapids-and-rivers).

For every delivery: parse the CloudEvents envelope and the typed data from the catalogue;
record the event in the inbox, check its sequence, run the handler (state change +
outbox) in a transaction; ack only after the commit that holds its effect.

Deliveries are applied in batches (group commit): those that arrive together (up to
`batch_size`, waiting at most `batch_wait` seconds for more) share one transaction, so
one commit and one WAL flush, and the inbox, sequence and outbox work of the whole batch
takes a few statements instead of several per delivery; their acks go as one frame where
that is safe (`UpTo`). A delivery that fails is undone alone (a savepoint, see
`River._apply_batch`) and settled as it would be on its own:

- duplicate (inbox hit) or stale sequence: ack, nothing changes;
- sequence gap, a transient error, or a handler saying `NotReady`: delayed retry through
  the queue's TTL retry tiers, with the attempt count in `x-attempt`;
- malformed input, an unknown event, a `Rejected` command, data the database refuses
  (PostgreSQL's class 22, e.g. a NUL in text: no retry would store it), or retries exhausted:
  dead-lettered to `<queue>.dlq` with the reason in the headers. It never blocks the queue.

If the batch's transaction itself fails (a lost connection, a failed commit), nothing in
it took effect, and every delivery in it is retried as a transient error.

Each delivery is a span (shared/tracing.py), a child of its envelope's `traceparent`; what
its handler emits carries that span's context. Each is counted by event type and outcome,
with its time from arrival to settlement, and each batch by size and time (shared/metrics.py).
"""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar
from uuid import UUID

import aiormq
import asyncpg
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from faststream.rabbit import RabbitBroker, RabbitExchange
from opentelemetry.trace import StatusCode
from pydantic import ValidationError

from shared import tracing
from shared.catalogue import EventData, UnknownEvent, parse_data
from shared.envelope import Envelope, parse_envelope
from shared.log import get_logger
from shared.metrics import INVALID, RiverMetrics, type_label
from shared.outbox import OutboxRow, UnitOfWork, write_outbox
from shared.topology import DLX, ServiceQueue

log = get_logger()

Handler = Callable[[UnitOfWork, Envelope, EventData], Awaitable[None]]


class NotReady(Exception):
    """The event cannot be applied yet (e.g. the case it refers to is not known yet)."""


class Rejected(Exception):
    """The event can never be applied (a permanent business rule violation)."""


class SequenceGap(Exception):
    pass


class _HandlerFailed(Exception):
    """A handler failed in a batch run without savepoints: run the batch again with them."""


@dataclass
class Outcome:
    applied: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0


@dataclass(frozen=True)
class Delivery:
    """A parsed delivery waiting for its batch."""

    message: AbstractIncomingMessage
    envelope: Envelope
    data: EventData
    span: tracing.AnySpan  # applying it; what its handler emits is the span's child


# What applying a delivery came to: "applied", "duplicate", "stale", or the exception that
# undid it (its handler failed, or the whole batch's transaction did).
Result = str | Exception

Case = tuple[str, str]  # (source, subject): sequences are per producer and case

# At most this many savepoints in a transaction: PostgreSQL keeps 64 subtransactions per
# session in shared memory, and past that every other session's snapshots look them up
# in pg_subtrans (the "subtransaction overflow" slowdown).
SAVEPOINTS = 50


@dataclass
class River:
    service: str  # also the CloudEvents source of what the handlers emit: urn:chain:<service>
    queue: ServiceQueue
    pool: asyncpg.Pool
    broker: RabbitBroker  # its connection carries the river's channel; it publishes retries and dead letters
    handlers: dict[str, Handler]
    max_attempts: int = 8
    batch_size: int = 100
    batch_wait: float = 0.002
    stats: Outcome = field(default_factory=Outcome)

    def __post_init__(self) -> None:
        self._batches = Batches(self._apply_batch, self.batch_size, self.batch_wait)
        self._savepoints = False  # whether batches run their handlers in savepoints (see _apply_batch)
        self._channel: AbstractChannel | None = None
        self._consumer: tuple[AbstractQueue, str] | None = None
        self._acks = OneByOne()  # on a channel of our own (start), UpTo: many with one frame
        self._in_hand = 0  # deliveries received and not settled yet
        self._all_settled = asyncio.Event()
        self.metrics = RiverMetrics(self.service, self.queue.name)

    @property
    def source(self) -> str:
        return f"urn:chain:{self.service}"

    async def start(self, prefetch: int) -> None:
        """Consume the river's queue, on a channel of its own on the broker's connection
        (after `broker.start()`); per-consumer prefetch, as quorum queues refuse global QoS.

        With aio-pika, below FastStream: a FastStream subscriber runs its whole pipeline
        (context, middlewares, parser, handler call) for every delivery, and FastStream's
        RabbitMQ subscribers have no batch mode; that pipeline was a quarter of the river's
        time (bench/hop.py). aio-pika runs `handle` in a task per delivery, up to
        `prefetch` at once, and those meet in a batch: keep `prefetch` above `batch_size`."""
        connection = await self.broker.connect()  # the one `broker.start()` opened
        self._channel = await connection.channel()
        self._acks = UpTo()
        await self._channel.set_qos(prefetch_count=prefetch)
        queue = await self._channel.declare_queue(self.queue.name, passive=True)
        self._consumer = (queue, await queue.consume(self.handle))

    async def stop(self, timeout: float = 20.0) -> None:
        """Stop consuming and let the deliveries in hand be applied and settled; what is
        left after `timeout` the broker delivers again (unacked when the channel closes)."""
        channel, self._channel = self._channel, None
        if channel is None:
            return
        if not channel.is_closed:  # else the connection is gone: nothing to cancel or close
            queue, tag = self._consumer
            with contextlib.suppress(Exception):
                await asyncio.wait_for(queue.cancel(tag), timeout)
        if self._in_hand:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_settled.wait(), timeout)
        if not channel.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), timeout)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Process one delivery and settle it (ack) exactly once. Called concurrently, a
        task per delivery; the deliveries meet in a batch."""
        arrived = time.perf_counter()
        self._in_hand += 1
        self._all_settled.clear()
        self._acks.received(message)
        try:
            await self._process(message, arrived)
        except Exception as exc:  # the broker refused the retry or dead-letter copy
            log.error("message_returned", error=type(exc).__name__)
            # Back to the queue; the delivery limit dead-letters it if this keeps happening.
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            self._acks.settled(message)
            # The AMQP type is the sender's too: only a catalogue name passes type_label.
            self.metrics.settled(type_label(message.type or ""), "returned", time.perf_counter() - arrived)
        finally:
            self._in_hand -= 1
            if not self._in_hand:
                self._all_settled.set()

    async def _process(self, message: AbstractIncomingMessage, arrived: float) -> None:
        attempt = _attempt(message.headers)
        try:
            envelope = parse_envelope(message.body)
            data = parse_data(envelope)
        except (ValidationError, UnknownEvent, ValueError) as exc:
            await self._dead_letter(message, "invalid", _describe(exc), attempt)
            self._count(INVALID, "dead_lettered", arrived)
            return
        span = tracing.delivery_span(envelope, self.queue.name)
        try:
            result = await self._batches.submit(Delivery(message, envelope, data, span))
            with _log_context(envelope):
                outcome = await self._settle(message, attempt, result)
            self._count(envelope.type, outcome, arrived)  # a catalogue name: parse_data passed
            _close(span, outcome)
        except BaseException:
            _close(span, "returned")
            raise

    async def _settle(self, message: AbstractIncomingMessage, attempt: int, result: Result) -> str:
        """A failed delivery goes to its retry tier or the DLQ (acked once the broker
        confirmed the copy); what the batch committed it has acked already. Returns the outcome."""
        match result:
            case Rejected():
                return await self._dead_letter(message, "rejected", str(result), attempt)
            case SequenceGap() | NotReady():
                return await self._retry(message, attempt, type(result).__name__, str(result))
            case asyncpg.DataError():  # the event's data cannot be stored (a NUL, a number too large): never will
                return await self._dead_letter(message, "invalid", f"data the database refuses: {type(result).__name__}", attempt)
            case Exception():  # transient by default: a database restart, a lost connection
                log.warning("handler_failed", error=type(result).__name__, attempt=attempt)
                return await self._retry(message, attempt, "error", _describe(result))
            case "applied":
                return "applied"
            case _:
                log.info("event_ignored", reason=result)
                return result  # "duplicate" or "stale"

    def _count(self, event_type: str, outcome: str, arrived: float) -> None:
        match outcome:
            case "applied":
                self.stats.applied += 1
            case "duplicate" | "stale":
                self.stats.duplicates += 1
            case "retried":
                self.stats.retried += 1
            case "dead_lettered":
                self.stats.dead_lettered += 1
        self.metrics.settled(event_type, outcome, time.perf_counter() - arrived)

    async def _apply_batch(self, batch: list[Delivery]) -> list[Result]:
        """Apply a batch in one transaction: a few statements for the whole batch (inbox,
        sequences, outbox) and the deliveries' handlers one by one.

        A handler runs in a savepoint so that its failure undoes that delivery only. As
        handlers seldom fail, a batch first runs without savepoints (each costs a round
        trip); if a handler fails, the batch is rolled back and run again with them, as
        are the batches after it until one passes without a failing handler."""
        # A task per delivery hands them over; the delivery tag restores the broker's
        # order, so two events of one case are applied as they came.
        started = time.perf_counter()
        order = sorted(range(len(batch)), key=lambda i: batch[i].message.delivery_tag or 0)
        ordered = [batch[i] for i in order]
        results = None
        if not self._savepoints:
            with contextlib.suppress(_HandlerFailed):
                results = await self._transaction(ordered, savepoints=False)
        if results is None:
            results = []
            for part in range(0, len(ordered), SAVEPOINTS):
                results += await self._transaction(ordered[part : part + SAVEPOINTS], savepoints=True)
            self._savepoints = any(isinstance(r, Exception) and not isinstance(r, SequenceGap) for r in results)
        # Acked only now, after the commit that holds their effect.
        await self._acks.ack([d.message for d, r in zip(ordered, results, strict=True) if isinstance(r, str)])
        self.metrics.batch(len(batch), time.perf_counter() - started)
        in_batch_order: list[Result] = [""] * len(batch)
        for i, result in zip(order, results, strict=True):
            in_batch_order[i] = result
        return in_batch_order

    async def _transaction(self, deliveries: list[Delivery], savepoints: bool) -> list[Result]:
        """Apply the deliveries in order in one transaction; their results, in that order."""
        results: list[Result] = []
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                tx = await BatchTransaction.begin(conn, [d.envelope for d in deliveries], savepoints)
                for d in deliveries:
                    with _log_context(d.envelope):
                        results.append(await self._apply(tx, d))
                await tx.finish()
        except _HandlerFailed:
            raise
        except Exception as exc:  # nothing in the transaction took effect: retry every delivery
            log.warning("batch_failed", error=type(exc).__name__, size=len(deliveries))
            return [exc] * len(deliveries)
        return results

    async def _apply(self, tx: "BatchTransaction", delivery: Delivery) -> Result:
        envelope = delivery.envelope
        if not tx.first_receipt(envelope):
            return "duplicate"
        last = tx.last_sequence[(envelope.source, envelope.subject)]
        if envelope.sequence <= last:
            return "stale"  # recorded in the inbox; nothing else changes
        try:
            if envelope.sequence > last + 1:
                raise SequenceGap(f"expected sequence {last + 1}, got {envelope.sequence}")
            emitted = await self._run_handler(tx, delivery)
        except _HandlerFailed:
            raise
        except Exception as exc:
            if tx.conn.is_closed():
                raise  # the batch's transaction is gone with it
            tx.not_applied(envelope)
            return exc
        tx.applied(envelope, emitted)
        return "applied"

    async def _run_handler(self, tx: "BatchTransaction", delivery: Delivery) -> list[OutboxRow]:
        """The handler's state change; returns the events it emitted, for the batch to
        write to the outbox."""
        envelope, data = delivery.envelope, delivery.data
        handler = self.handlers.get(envelope.type)
        if handler is None:  # events bound only to keep the sequence need no handler
            return []
        uow = UnitOfWork(tx.conn, self.source, envelope, None, delivery.span)
        if not tx.savepoints:
            try:
                await handler(uow, envelope, data)
            except Exception as exc:
                if tx.conn.is_closed():
                    raise  # the batch's transaction is gone with it
                raise _HandlerFailed() from exc  # its partial work cannot be undone alone
            return uow.pending
        # Never released: each savepoint stays open until the commit, nested under the
        # next delivery's, which saves a round trip per delivery. ROLLBACK TO undoes the
        # newest savepoint of the name: this delivery's work, nothing before it.
        await tx.conn.execute("SAVEPOINT delivery")
        try:
            await handler(uow, envelope, data)
        except Exception:
            await tx.conn.execute("ROLLBACK TO SAVEPOINT delivery")
            raise
        return uow.pending

    async def _retry(self, message: AbstractIncomingMessage, attempt: int, kind: str, reason: str) -> str:
        if attempt + 1 >= self.max_attempts:
            return await self._dead_letter(message, "retries_exhausted", f"{kind}: {reason}", attempt)
        tier = min(attempt, len(self.queue.retry_delays_ms) - 1)
        headers = dict(message.headers or {})
        headers.update({"x-attempt": attempt + 1, "x-last-error": f"{kind}: {reason}"[:500]})
        await self._republish(message, headers, DEFAULT_EXCHANGE, self.queue.retry_queue(tier))
        await message.ack()  # only after the broker confirmed the retry copy
        self._acks.settled(message)
        return "retried"

    async def _dead_letter(self, message: AbstractIncomingMessage, kind: str, reason: str, attempt: int) -> str:
        headers = dict(message.headers or {})
        headers.update(
            {
                "x-error-kind": kind,
                "x-error-reason": reason[:1000],
                "x-failed-queue": self.queue.name,
                "x-original-routing-key": message.routing_key or "",
                "x-attempt": attempt,
                "x-dead-lettered-at": datetime.now(UTC).isoformat(),
            }
        )
        await self._republish(message, headers, DEAD_LETTERS, self.queue.name)
        await message.ack()
        self._acks.settled(message)
        log.warning("dead_lettered", kind=kind, reason=reason[:300])
        return "dead_lettered"

    async def _republish(self, message: AbstractIncomingMessage, headers: dict, exchange: RabbitExchange, key: str) -> None:
        await self.broker.publish(
            message.body,
            exchange=exchange,
            routing_key=key,
            headers=headers,
            persist=True,
            content_type=message.content_type,
            message_id=message.message_id,
            message_type=message.type,
        )


@dataclass
class BatchTransaction:
    """What one batch's transaction found and owes: the inbox and sequence statements for
    the whole batch, around the deliveries applied one by one in between."""

    conn: asyncpg.Connection
    savepoints: bool  # a savepoint per handler (see River._apply_batch)
    fresh: set[tuple[str, UUID]]  # new to the inbox, not yet claimed by a delivery
    last_sequence: dict[Case, int]  # per case of a fresh event, its row locked until commit
    advanced: set[Case] = field(default_factory=set)
    not_recorded: list[Envelope] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)

    @classmethod
    async def begin(cls, conn: asyncpg.Connection, envelopes: list[Envelope], savepoints: bool) -> "BatchTransaction":
        """Record the batch's events in the inbox, and lock and read the sequences of the
        cases of those that are new."""
        rows = await conn.fetch(
            _RECORD,
            [e.source for e in envelopes],
            [e.id for e in envelopes],
            [e.type for e in envelopes],
        )
        fresh = {(r["source"], r["event_id"]) for r in rows}
        cases = sorted({(e.source, e.subject) for e in envelopes if (e.source, e.id) in fresh})
        last: dict[Case, int] = {}
        if cases:
            sources, subjects = [c[0] for c in cases], [c[1] for c in cases]
            await conn.execute(_NEW_CASES, sources, subjects)
            # Sorted, so two batches (another replica's) lock shared cases in one order.
            # The row lock serialises concurrent deliveries of one case from one producer.
            locked = await conn.fetch(_LOCK_CASES, sources, subjects)
            last = {(r["source"], r["subject"]): r["last_sequence"] for r in locked}
        return cls(conn, savepoints, fresh, last)

    def first_receipt(self, envelope: Envelope) -> bool:
        """True for the first delivery of an event new to the inbox; any other is a duplicate,
        a copy in the same batch too."""
        key = (envelope.source, envelope.id)
        if key not in self.fresh:
            return False
        self.fresh.discard(key)
        return True

    def applied(self, envelope: Envelope, emitted: list[OutboxRow]) -> None:
        case = (envelope.source, envelope.subject)
        self.last_sequence[case] = envelope.sequence  # the case's next delivery checks against it
        self.advanced.add(case)
        self.outbox.extend(emitted)

    def not_applied(self, envelope: Envelope) -> None:
        """Out of the inbox again, so that its retry is not taken for a duplicate."""
        self.not_recorded.append(envelope)

    async def finish(self) -> None:
        """Before the commit: forget the failed deliveries, advance the applied cases'
        sequences, write the emitted events to the outbox."""
        if self.not_recorded:
            await self.conn.execute(
                _FORGET, [e.source for e in self.not_recorded], [e.id for e in self.not_recorded]
            )
        if self.advanced:
            cases = sorted(self.advanced)
            await self.conn.execute(
                _ADVANCE, [c[0] for c in cases], [c[1] for c in cases], [self.last_sequence[c] for c in cases]
            )
        await write_outbox(self.conn, self.outbox)


# Two copies of one event in a batch insert one row: the first delivery is the fresh one.
_RECORD = """
INSERT INTO inbox (source, event_id, type)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[])
ON CONFLICT DO NOTHING
RETURNING source, event_id
"""

_NEW_CASES = """
INSERT INTO inbox_sequence (source, subject, last_sequence)
SELECT source, subject, 0 FROM unnest($1::text[], $2::text[]) AS c(source, subject)
ON CONFLICT DO NOTHING
"""

_LOCK_CASES = """
SELECT s.source, s.subject, s.last_sequence
FROM inbox_sequence s JOIN unnest($1::text[], $2::text[]) AS c(source, subject) USING (source, subject)
ORDER BY s.source, s.subject
FOR UPDATE OF s
"""

_FORGET = "DELETE FROM inbox WHERE (source, event_id) IN (SELECT * FROM unnest($1::text[], $2::uuid[]))"

_ADVANCE = """
UPDATE inbox_sequence s SET last_sequence = c.last_sequence
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS c(source, subject, last_sequence)
WHERE s.source = c.source AND s.subject = c.subject
"""


class OneByOne:
    """Acks what a batch committed, one ack per delivery: on a channel the river may share
    (a FastStream subscriber's)."""

    def received(self, message: AbstractIncomingMessage) -> None:
        """`message` has arrived (before its batch)."""

    async def ack(self, messages: list[AbstractIncomingMessage]) -> None:
        await asyncio.gather(*(_quietly(m.ack()) for m in messages))

    def settled(self, message: AbstractIncomingMessage) -> None:
        """`message` was acked (or nacked) alone: after its retry or dead-letter copy."""


@dataclass
class UpTo(OneByOne):
    """Acks on the river's own channel: a batch's deliveries with one frame where that is
    safe. `basic.ack` with `multiple` acks every unacked delivery on the channel up to a
    delivery tag, and a channel's tags count 1, 2, 3, ...; so one frame acks up to the end
    of an unbroken run of tags known settled (committed, or acked alone after a retry or
    dead-letter copy), and a delivery past a gap is acked alone. Acking past a tag not
    settled would lose that delivery; naming a tag acked already closes the channel.)"""

    channel: aiormq.abc.AbstractChannel | None = None  # the one delivering now; tags are its
    floor: int = 0  # every tag up to it is acked
    done: set[int] = field(default_factory=set)  # settled tags above the floor

    def received(self, message: AbstractIncomingMessage) -> None:
        channel = _channel_of(message)
        if channel is not None and channel is not self.channel:  # reopened after a lost connection
            self.channel, self.floor, self.done = channel, 0, set()

    async def ack(self, messages: list[AbstractIncomingMessage]) -> None:
        channel = self.channel
        ours = [m.delivery_tag for m in messages if _channel_of(m) is channel]
        self.done.update(ours)
        floor = self.floor
        while floor + 1 in self.done:
            floor += 1
            self.done.discard(floor)
        self.floor = floor
        # The frame names a tag still unacked (the broker refuses one acked already, and
        # closes the channel): the last of these deliveries up to the floor.
        if up_to := max((tag for tag in ours if tag <= floor), default=None):
            await _quietly(channel.basic_ack(up_to, multiple=True))
        # Past a gap (a delivery before them not settled yet), or from a channel now closed.
        alone = [m for m in messages if m.delivery_tag > floor or _channel_of(m) is not channel]
        await asyncio.gather(*(_quietly(m.ack()) for m in alone))

    def settled(self, message: AbstractIncomingMessage) -> None:
        if _channel_of(message) is self.channel and message.delivery_tag > self.floor:
            self.done.add(message.delivery_tag)


def _channel_of(message: AbstractIncomingMessage) -> aiormq.abc.AbstractChannel | None:
    try:
        return message.channel
    except aiormq.exceptions.ChannelInvalidStateError:  # closed with its connection
        return None


async def _quietly(ack: Awaitable[None]) -> None:
    try:
        await ack
    except Exception as exc:  # the channel is gone: the broker delivers them again
        log.warning("ack_failed", error=type(exc).__name__)


T = TypeVar("T")
R = TypeVar("R")


class Batches(Generic[T, R]):
    """Gathers items submitted by concurrent tasks into batches for one worker.

    A batch closes at `size` items or `wait` seconds after the worker found the first one
    waiting, whichever comes first; while a batch is being worked on, the next one fills.
    One batch at a time: a later batch never overtakes an earlier one (per-case order),
    and two batches never lock the same cases in opposite orders (deadlocks).
    """

    def __init__(self, work: Callable[[list[T]], Awaitable[list[R]]], size: int, wait: float):
        self._work = work
        self._size = max(1, size)
        self._wait = wait
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._full = asyncio.Event()
        self._worker: asyncio.Task | None = None

    async def submit(self, item: T) -> R:
        """Wait for the batch holding `item` to be worked on; its result for `item`."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if len(self._waiting) >= self._size:
            self._full.set()
        if self._worker is None or self._worker.done():  # started on demand, ends when idle
            self._worker = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                await self._fill()
                batch, self._waiting = self._waiting[: self._size], self._waiting[self._size :]
                await self._work_on(batch)
                batch = []
        except BaseException:  # cancelled (the process stops): what waits is neither applied nor acked
            for _, future in batch + self._waiting:
                future.cancel()
            self._waiting = []
            raise

    async def _work_on(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._work([item for item, _ in batch])
        except Exception as exc:  # a submitter must never be left waiting
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # done: its submitter was cancelled
                future.set_result(result)

    async def _fill(self) -> None:
        if len(self._waiting) >= self._size or self._wait <= 0:
            return
        self._full.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._wait):
                await self._full.wait()


DEFAULT_EXCHANGE = RabbitExchange("", declare=False)
DEAD_LETTERS = RabbitExchange(DLX, declare=False)


@contextlib.contextmanager
def _log_context(envelope: Envelope) -> Iterator[None]:
    """The delivery's case in every log line meanwhile (tokens, not structlog's
    bound_contextvars, which copies the whole context: twice per delivery adds up)."""
    tokens = structlog.contextvars.bind_contextvars(
        event_type=envelope.type, case_id=envelope.subject, correlation_id=str(envelope.correlationid)
    )
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def _close(span: tracing.AnySpan, outcome: str) -> None:
    """End a delivery's span with its outcome (recorded only if someone records spans)."""
    if span.is_recording():
        span.set_attribute("chain.outcome", outcome)
        if outcome in ("dead_lettered", "returned"):
            span.set_status(StatusCode.ERROR, outcome)
    span.end()


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
