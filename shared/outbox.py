"""Unit of work with a transactional outbox, and the relay that publishes the outbox.

A handler's state change and the events it emits commit in one PostgreSQL transaction.
The relay (its own process) publishes unpublished rows in position order with publisher
confirms and only then marks them published: a crash in between publishes again (the
consumers' inboxes absorb the duplicate), never drops. Only one relay per database is
active at a time (a PostgreSQL advisory lock), so per-case order is kept with replicas.
"""

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import NamedTuple
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import aio_pika
import aiormq
import asyncpg
from opentelemetry.trace import Span, StatusCode

from shared import tracing
from shared.catalogue import EventData, event_type_of
from shared.envelope import CONTENT_TYPE, Envelope
from shared.log import get_logger
from shared.metrics import RelayMetrics
from shared.topology import declare_core

log = get_logger()

RELAY_LOCK = 7_310_002
NOTIFY_CHANNEL = "outbox"  # migrations/0003_outbox_notify.sql
PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)

class OutboxRow(NamedTuple):
    envelope: Envelope  # numbered (`sequence`) only when written: see write_outbox
    headers: dict[str, str] | None


class Emitted(NamedTuple):
    """What `emit` tells: the event's id, type and subject (its sequence number is given
    when the unit of work writes its events)."""

    id: UUID
    type: str
    subject: str


class UnitOfWork:
    """One transaction: the state change and the events it causes (`emit`).

    The emitted events are numbered and written to the outbox when the unit of work ends,
    still inside its transaction (`write_outbox`): two statements, however many events
    (a river's batch writes the events of all its deliveries together)."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        source: str,
        cause: Envelope | None,
        correlationid: UUID | None,
        span: tracing.AnySpan | None = None,
    ):
        self.conn = conn
        self.source = source
        self.cause = cause
        # A case keeps one correlation id from its vedtak to settlement.
        self.correlationid = correlationid or (cause.correlationid if cause else uuid4())
        self.span = span  # the river's span of applying `cause`
        self.pending: list[OutboxRow] = []  # emitted, not yet written to the outbox
        self._case_traces: dict[UUID, tracing.Carried] = {}

    def _trace(self) -> tracing.Carried:
        """The trace attributes of an event emitted now (shared/tracing.py): a child of the
        delivery being applied, unless the handler moved the work to another case's
        correlation (then, like work outside a delivery, into that case's trace)."""
        if self.span is not None and self.cause is not None and self.correlationid == self.cause.correlationid:
            return tracing.carried(self.span)
        carried = self._case_traces.get(self.correlationid)
        if carried is None:  # one producer span per case and unit of work
            carried = self._case_traces[self.correlationid] = tracing.for_case(self.correlationid, f"{self.source} emit")
        return carried

    async def emit(self, data: EventData, subject: str, headers: dict[str, str] | None = None) -> Emitted:
        """Emit `data` about `subject`; `headers` go on the AMQP message, for headers-exchange routing."""
        et = event_type_of(data)
        traceparent, tracestate = self._trace()
        # Validated here, so that a bad event fails the handler that emits it.
        envelope = Envelope(
            source=self.source,
            type=et.name,
            subject=subject,
            dataschema=et.dataschema,
            data=data.model_dump(mode="json"),
            correlationid=self.correlationid,
            causationid=self.cause.id if self.cause else None,
            sequence=1,  # the next one of the subject's, when written
            traceparent=traceparent,
            tracestate=tracestate,
        )
        self.pending.append(OutboxRow(envelope, headers))
        return Emitted(envelope.id, envelope.type, envelope.subject)


async def write_outbox(conn: asyncpg.Connection, rows: list[OutboxRow]) -> None:
    """Number the emitted events per subject and write them to the outbox, in list order."""
    if not rows:
        return
    numbered = await _numbered(conn, [r.envelope for r in rows])
    await conn.execute(
        """
        INSERT INTO outbox (event_id, type, subject, sequence, body, headers)
        SELECT event_id, type, subject, sequence, body, headers::jsonb
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])
            WITH ORDINALITY AS r(event_id, type, subject, sequence, body, headers, n)
        ORDER BY n
        """,
        [e.id for e in numbered],
        [e.type for e in numbered],
        [e.subject for e in numbered],
        [e.sequence for e in numbered],
        [e.model_dump_json() for e in numbered],
        [json.dumps(r.headers) if r.headers else None for r in rows],
    )


async def _numbered(conn: asyncpg.Connection, envelopes: list[Envelope]) -> list[Envelope]:
    """The envelopes with their sequence numbers: each subject's counter moves on by its
    number of events. The update locks the subjects' counter rows until commit, so a
    subject's events get their numbers (and outbox positions) in commit order; in subject
    order, so two transactions never wait for each other's counters the other way round."""
    counts = Counter(e.subject for e in envelopes)
    subjects = sorted(counts)
    rows = await conn.fetch(_ADVANCE_COUNTERS, subjects, [counts[s] for s in subjects])
    following = {r["subject"]: r["last_sequence"] - counts[r["subject"]] + 1 for r in rows}
    numbered = []
    for envelope in envelopes:
        numbered.append(envelope.model_copy(update={"sequence": following[envelope.subject]}))
        following[envelope.subject] += 1
    return numbered


_ADVANCE_COUNTERS = """
INSERT INTO outbox_sequence AS s (subject, last_sequence)
SELECT subject, n FROM unnest($1::text[], $2::bigint[]) AS c(subject, n) ORDER BY subject
ON CONFLICT (subject) DO UPDATE SET last_sequence = s.last_sequence + excluded.last_sequence
RETURNING subject, last_sequence
"""


@contextlib.asynccontextmanager
async def unit_of_work(
    pool: asyncpg.Pool, source: str, cause: Envelope | None = None, correlationid: UUID | None = None
) -> AsyncIterator[UnitOfWork]:
    async with pool.acquire() as conn, conn.transaction():
        uow = UnitOfWork(conn, source, cause, correlationid)
        yield uow
        await write_outbox(conn, uow.pending)


class Relay:
    """Publishes a service's outbox to `chain.events`, in order, with confirms."""

    def __init__(
        self, db_url: str, amqp_url: str, eventlog_max_age: str, batch: int = 500, publish_timeout: float = 10.0,
        poll_interval: float = 1.0, service: str = "",
    ):
        self.db_url = db_url
        self.amqp_url = amqp_url
        self.eventlog_max_age = eventlog_max_age
        self.batch = batch
        self.publish_timeout = publish_timeout
        self.poll_interval = poll_interval
        self.published = 0
        self.metrics = RelayMetrics(service or urlsplit(db_url).path.lstrip("/"))
        self._pruned_at = float("-inf")

    async def run(self, stop: asyncio.Event) -> None:
        listener = await asyncpg.connect(self.db_url)
        try:
            while not await listener.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK):
                log.info("relay_standby")  # another relay is active for this database
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
                if stop.is_set():
                    return
            connection = await aio_pika.connect_robust(self.amqp_url)
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                exchange = await declare_core(channel, self.eventlog_max_age)
                # Woken by the outbox's trigger (migration 0003) when events are written;
                # polling every 20 ms instead was most of a hop's latency (bench/chain.py).
                # A notifying transaction commits under PostgreSQL's notify queue lock, which
                # capped a hop at about 290 msg/s when every delivery committed alone; a
                # river's batch commits once, so that is now one notification per batch.
                written = asyncio.Event()
                await listener.add_listener(NOTIFY_CHANNEL, lambda *_: written.set())
                log.info("relay_active")
                self.metrics.active.set(1)
                while not stop.is_set():
                    written.clear()  # before reading: what is written after it wakes us again
                    await self.prune(listener)
                    sent = await self.publish_batch(listener, exchange)
                    if sent < self.batch:
                        await _first(written.wait(), stop.wait(), timeout=self.poll_interval)
        finally:
            self.metrics.active.set(0)
            await listener.close()

    async def prune(self, conn: asyncpg.Connection) -> None:
        """Published rows are kept a week for inspection (the event log keeps the events)."""
        now = asyncio.get_running_loop().time()
        if now - self._pruned_at > 600:
            self._pruned_at = now
            await conn.execute("DELETE FROM outbox WHERE published_at < now() - interval '7 days'")

    async def publish_batch(self, conn: asyncpg.Connection, exchange) -> int:
        rows = await conn.fetch(
            "SELECT position, type, event_id, body, headers FROM outbox WHERE published_at IS NULL ORDER BY position LIMIT $1",
            self.batch,
        )
        if not rows:
            return 0
        # All the batch's publishes in flight on one channel: the broker keeps their order,
        # and the confirms come back together. A publish not confirmed in time is given up.
        # Straight on the AMQP channel (aiormq, under aio-pika's Exchange and Message): an
        # aio-pika Message per row showed in the relay's profile at hundreds a second.
        # (Waiting for a lost connection to come back is bounded too: run() starts over.)
        channel = await asyncio.wait_for(exchange.channel.get_underlay_channel(), self.publish_timeout)
        spans = [tracing.publish_span(r["body"], exchange.name, r["type"]) for r in rows] if tracing.exporting() else []
        publishes = [asyncio.ensure_future(self._publish(channel, exchange.name, r)) for r in rows]
        _, late = await asyncio.wait(publishes, timeout=self.publish_timeout)
        for publish in late:
            publish.cancel()
        confirmed = [_confirmed(p) for p in publishes]
        done = [r["position"] for r, ok in zip(rows, confirmed, strict=True) if ok]
        failed = len(rows) - len(done)
        if done:
            await conn.execute("UPDATE outbox SET published_at = now() WHERE position = ANY($1::bigint[])", done)
            self.published += len(done)
        self._observe(rows, confirmed, spans)
        if failed:
            # Kept unpublished: retried next round. A consumer holds a later event of the
            # same case until this one arrives (sequence gap), so order is still kept.
            first = next(p for p, ok in zip(publishes, confirmed, strict=True) if not ok)
            error = type(first.exception()).__name__ if first.done() else "TimeoutError"
            log.warning("relay_publish_failed", failed=failed, error=error)
            await asyncio.sleep(0.5)
        return len(done)

    def _observe(self, rows: list[asyncpg.Record], confirmed: list[bool], spans: list[Span]) -> None:
        """Count the batch's publishes by event type and end their spans (if any)."""
        for row, ok in zip(rows, confirmed, strict=True):
            if ok:
                self.metrics.published(row["type"])
            else:
                self.metrics.failed(row["type"])
        for span, ok in zip(spans, confirmed, strict=bool(spans)):  # no spans when none are exported
            if not ok:
                span.set_status(StatusCode.ERROR, "not confirmed")
            span.end()

    async def _publish(self, channel: aiormq.abc.AbstractChannel, exchange: str, row: asyncpg.Record) -> None:
        properties = aiormq.spec.Basic.Properties(
            content_type=CONTENT_TYPE,
            message_id=str(row["event_id"]),
            message_type=row["type"],
            headers=json.loads(row["headers"]) if row["headers"] else None,
            delivery_mode=PERSISTENT,
        )
        # A Basic.Nack from the broker raises (aiormq's DeliveryError): not published.
        await channel.basic_publish(row["body"].encode(), exchange=exchange, routing_key=row["type"], properties=properties, mandatory=True)


async def _first(*waits, timeout: float) -> None:
    """Until the first of `waits` is done, or `timeout` seconds."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _confirmed(publish: asyncio.Future) -> bool:
    return publish.done() and not publish.cancelled() and publish.exception() is None


async def outbox_backlog(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")

