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
from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import aio_pika
import asyncpg

from shared.catalogue import EventData, event_type_of
from shared.envelope import CONTENT_TYPE, Envelope
from shared.log import get_logger
from shared.topology import declare_core

log = get_logger()

RELAY_LOCK = 7_310_002

_NEXT_SEQUENCE = """
INSERT INTO outbox_sequence (subject, last_sequence) VALUES ($1, 1)
ON CONFLICT (subject) DO UPDATE SET last_sequence = outbox_sequence.last_sequence + 1
RETURNING last_sequence
"""


class UnitOfWork:
    """One transaction: the state change and the events it causes (`emit`)."""

    def __init__(self, conn: asyncpg.Connection, source: str, cause: Envelope | None, correlationid: UUID | None):
        self.conn = conn
        self.source = source
        self.cause = cause
        # A case keeps one correlation id from its vedtak to settlement.
        self.correlationid = correlationid or (cause.correlationid if cause else uuid4())
        self.emitted: list[Envelope] = []

    async def emit(self, data: EventData, subject: str, headers: dict[str, str] | None = None) -> Envelope:
        """Emit `data` about `subject`; `headers` go on the AMQP message, for headers-exchange routing."""
        et = event_type_of(data)
        # The upsert locks the case's counter row until commit, so a case's events get
        # their sequence numbers (and outbox positions) in commit order.
        sequence = await self.conn.fetchval(_NEXT_SEQUENCE, subject)
        envelope = Envelope(
            source=self.source,
            type=et.name,
            subject=subject,
            dataschema=et.dataschema,
            data=data.model_dump(mode="json"),
            correlationid=self.correlationid,
            causationid=self.cause.id if self.cause else None,
            sequence=sequence,
        )
        await self.conn.execute(
            "INSERT INTO outbox (event_id, type, subject, sequence, body, headers) VALUES ($1, $2, $3, $4, $5, $6)",
            envelope.id,
            et.name,
            subject,
            sequence,
            envelope.model_dump_json(),
            json.dumps(headers) if headers else None,
        )
        self.emitted.append(envelope)
        return envelope


@contextlib.asynccontextmanager
async def unit_of_work(
    pool: asyncpg.Pool, source: str, cause: Envelope | None = None, correlationid: UUID | None = None
) -> AsyncIterator[UnitOfWork]:
    async with pool.acquire() as conn, conn.transaction():
        yield UnitOfWork(conn, source, cause, correlationid)


class Relay:
    """Publishes a service's outbox to `chain.events`, in order, with confirms."""

    def __init__(self, db_url: str, amqp_url: str, eventlog_max_age: str, batch: int = 500, publish_timeout: float = 10.0, poll_interval: float = 0.02):
        self.db_url = db_url
        self.amqp_url = amqp_url
        self.eventlog_max_age = eventlog_max_age
        self.batch = batch
        self.publish_timeout = publish_timeout
        self.poll_interval = poll_interval
        self.published = 0
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
                log.info("relay_active")
                while not stop.is_set():
                    await self.prune(listener)
                    sent = await self.publish_batch(listener, exchange)
                    if sent < self.batch:
                        # Polling, not LISTEN/NOTIFY: a NOTIFY in every handler transaction
                        # serialises all commits on PostgreSQL's notify queue lock, which
                        # capped a hop at about 290 msg/s here (bench/hop.py).
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), self.poll_interval)
        finally:
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
        # Many publishes in flight on one channel: the broker keeps their order, and the
        # confirms come back together.
        results = await asyncio.gather(
            *(self._publish(exchange, r) for r in rows), return_exceptions=True
        )
        done = [r["position"] for r, ok in zip(rows, results, strict=True) if ok is True]
        failed = len(rows) - len(done)
        if done:
            await conn.execute("UPDATE outbox SET published_at = now() WHERE position = ANY($1::bigint[])", done)
            self.published += len(done)
        if failed:
            # Kept unpublished: retried next round. A consumer holds a later event of the
            # same case until this one arrives (sequence gap), so order is still kept.
            first_error = next(r for r in results if r is not True)
            log.warning("relay_publish_failed", failed=failed, error=type(first_error).__name__)
            await asyncio.sleep(0.5)
        return len(done)

    async def _publish(self, exchange, row) -> bool:
        message = aio_pika.Message(
            body=row["body"].encode(),
            content_type=CONTENT_TYPE,
            message_id=str(row["event_id"]),
            type=row["type"],
            headers=json.loads(row["headers"]) if row["headers"] else None,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await asyncio.wait_for(exchange.publish(message, routing_key=row["type"]), self.publish_timeout)
        return True


async def outbox_backlog(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")

