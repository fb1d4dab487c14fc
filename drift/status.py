"""`chain status`: is the chain healthy, and if not, what is wrong? Reads only.

What the broker tells without consuming (a passive declare per queue): depth and consumer
count of every service queue, kartlegging's intake queue, every DLQ, the retry tiers
(summed per queue they return to), each consumer's notification queue, and the number of
messages in the event-log stream (the broker updates a stream's count every few seconds,
so it lags). What the databases tell: per service, events processed
and published per second over the last minute, the outbox backlog and its oldest row, and
bosetting's cases (and persons) per status.

The age of the oldest unprocessed message cannot be had from the broker: a quorum queue
does not report its head's age, and peeking (get + nack) would count as a delivery and
push the message towards the delivery limit and the DLQ. So the status reports two
stand-ins per service instead: the age of the oldest unpublished outbox row (how long an
event has waited to leave), and for a queue with messages the estimated wait, depth /
processed per second (infinite when nothing was processed in the last minute).
"""

import asyncio
import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

import aio_pika
import asyncpg
from rich.console import Group
from rich.table import Table
from rich.text import Text

from services.kompetanse.policy import last as policyar
from services.kompetanse.varsel import konsument_ko
from shared.config import Settings
from shared.topology import EVENTLOG, ServiceQueue
from sim.environment import SERVICES

INTAKE = "kartlegging.mottak-inn"  # services/kartlegging/app.py: Intake("mottak-inn", ...)
WINDOW_S = 60  # rates are counted over the last minute
TIMEOUT_S = 5.0  # an unreachable broker or database must not hang the command


@dataclass(frozen=True)
class Thresholds:
    outbox_age_s: float = 60.0
    wait_s: float = 300.0


@dataclass
class Queue:
    name: str  # for retry tiers: `<queue>.retry.*`, the tiers summed
    kind: str  # service, intake, dlq, retry, varsel
    service: str
    depth: int = 0
    consumers: int = 0
    missing: list[str] = field(default_factory=list)  # broker queues that were not found


@dataclass
class Service:
    name: str
    error: str | None = None  # the database could not be read
    processed_per_s: float = 0.0
    published_per_s: float = 0.0
    outbox_backlog: int = 0
    oldest_unpublished_s: float | None = None
    queued: int = 0  # messages in the service's own queues (service and intake)

    @property
    def estimated_wait_s(self) -> float | None:
        """How long the queued messages take at the last minute's pace (None: nothing queued)."""
        if self.queued == 0:
            return None
        return self.queued / self.processed_per_s if self.processed_per_s else math.inf


@dataclass
class Status:
    at: datetime
    broker_error: str | None
    queues: list[Queue]
    services: list[Service]
    saker_per_status: dict[str, int]
    personar_per_status: dict[str, int]
    eventlog_messages: int | None  # lags by seconds; None: not known (broker unreachable or stream missing)

    @property
    def unreachable(self) -> bool:
        return self.broker_error is not None or any(s.error for s in self.services)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["at"] = self.at.isoformat()
        for out, s in zip(d["services"], self.services, strict=True):
            wait = s.estimated_wait_s
            # JSON has no infinity: a stalled queue is `stalled`, its wait null.
            out["stalled"] = wait == math.inf
            out["estimated_wait_s"] = None if wait in (None, math.inf) else round(wait, 1)
        return d


# --- collecting ---------------------------------------------------------------------------


def expected_queues(cfg: Settings) -> list[tuple[Queue, list[str]]]:
    """Every queue the topology declares, with the broker queues it is made of."""
    delays = tuple(cfg.retry_delays_ms)
    owners = [(ServiceQueue(s, (), delays), "service", s) for s in SERVICES]
    owners.append((ServiceQueue(INTAKE, (), delays), "intake", "kartlegging"))
    out = []
    for sq, kind, service in owners:
        out.append((Queue(sq.name, kind, service), [sq.name]))
        out.append((Queue(sq.dlq, "dlq", service), [sq.dlq]))
        tiers = [sq.retry_queue(i) for i in range(len(delays))]
        out.append((Queue(f"{sq.name}.retry.*", "retry", service), tiers))
    for k in policyar(cfg.kompetanse_policy).konsument.values():
        out.append((Queue(konsument_ko(k), "varsel", "kompetanse"), [konsument_ko(k)]))
    return out


async def _declared(connection: aio_pika.abc.AbstractConnection, name: str) -> tuple[int, int] | None:
    """(depth, consumers) of a queue, or None when it does not exist."""
    # A passive declare of a missing queue closes its channel: one channel each.
    channel = await connection.channel()
    try:
        result = (await channel.declare_queue(name, passive=True)).declaration_result
        return result.message_count, result.consumer_count
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return None
    finally:
        if not channel.is_closed:
            await channel.close()


async def _broker(cfg: Settings) -> tuple[list[Queue], int | None]:
    connection = await aio_pika.connect(cfg.amqp_url, timeout=TIMEOUT_S)
    async with connection:
        queues = []
        for queue, parts in expected_queues(cfg):
            for name in parts:
                found = await _declared(connection, name)
                if found is None:
                    queue.missing.append(name)
                else:
                    queue.depth += found[0]
                    queue.consumers += found[1]
            queues.append(queue)
        eventlog = await _declared(connection, EVENTLOG)
    return queues, eventlog[0] if eventlog else None


_RATES = f"""
SELECT
  (SELECT count(*) FROM inbox WHERE received_at > now() - interval '{WINDOW_S} seconds') AS processed,
  (SELECT count(*) FROM outbox WHERE published_at > now() - interval '{WINDOW_S} seconds') AS published,
  (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS backlog,
  -- the next row the relay publishes: the partial index finds it without a scan
  (SELECT extract(epoch FROM now() - created_at)::float8 FROM outbox
    WHERE published_at IS NULL ORDER BY position LIMIT 1) AS oldest
"""

_SAKER = "SELECT status, count(*) AS saker, sum(jsonb_array_length(personar))::int AS personar FROM sak GROUP BY status"


async def _service(cfg: Settings, name: str) -> tuple[Service, list]:
    try:
        conn = await asyncpg.connect(cfg.database_url(name), timeout=TIMEOUT_S)
        try:
            row = await conn.fetchrow(_RATES)
            saker = await conn.fetch(_SAKER) if name == "bosetting" else []
        finally:
            await conn.close()
    # No server, no database or no tables yet (the service never started): unreadable alike.
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return Service(name, error=_why(exc)), []
    service = Service(
        name,
        processed_per_s=row["processed"] / WINDOW_S,
        published_per_s=row["published"] / WINDOW_S,
        outbox_backlog=row["backlog"],
        oldest_unpublished_s=row["oldest"],
    )
    return service, saker


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")[:200]


async def collect(cfg: Settings) -> Status:
    """Everything `chain status` shows, read from the broker and the service databases."""
    broker, *services = await asyncio.gather(
        _broker(cfg), *(_service(cfg, s) for s in SERVICES), return_exceptions=True
    )
    if isinstance(broker, BaseException):
        if not isinstance(broker, (OSError, TimeoutError)):  # AMQPConnectionError is an OSError
            raise broker
        queues, eventlog, broker_error = [], None, _why(broker)
    else:
        (queues, eventlog), broker_error = broker, None
    for result in services:
        if isinstance(result, BaseException):
            raise result
    saker = next(rows for s, rows in services if s.name == "bosetting")
    for service, _ in services:
        service.queued = sum(q.depth for q in queues if q.service == service.name and q.kind in ("service", "intake"))
    return Status(
        at=datetime.now(timezone.utc),
        broker_error=broker_error,
        queues=queues,
        services=[s for s, _ in services],
        saker_per_status={r["status"]: r["saker"] for r in saker},
        personar_per_status={r["status"]: r["personar"] for r in saker},
        eventlog_messages=eventlog,
    )


# --- evaluating ---------------------------------------------------------------------------


def problems(status: Status, thresholds: Thresholds = Thresholds()) -> list[str]:
    """What is unhealthy, one short sentence each; empty when the chain is healthy."""
    found = []
    if status.broker_error:
        found.append(f"the broker is unreachable ({status.broker_error})")
    for q in status.queues:
        found += [f"queue {name} is missing" for name in q.missing]
        if q.kind == "dlq" and q.depth:
            found.append(f"{q.name} holds {q.depth} dead-lettered message(s)")
        if q.kind in ("service", "intake") and not q.missing and not q.consumers:
            found.append(f"queue {q.name} has no consumer")
    for s in status.services:
        if s.error:
            found.append(f"the {s.name} database is unreachable ({s.error})")
            continue
        if s.oldest_unpublished_s is not None and s.oldest_unpublished_s > thresholds.outbox_age_s:
            found.append(
                f"{s.name}: the oldest unpublished outbox row is {s.oldest_unpublished_s:.0f} s old"
                f" (limit {thresholds.outbox_age_s:.0f} s); is its relay running?"
            )
        wait = s.estimated_wait_s
        if wait == math.inf:
            found.append(f"{s.name}: {s.queued} message(s) queued and none processed in the last minute")
        elif wait is not None and wait > thresholds.wait_s:
            found.append(f"{s.name}: estimated wait {wait:.0f} s for {s.queued} queued message(s) (limit {thresholds.wait_s:.0f} s)")
    return found


# --- rendering ----------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return "∞" if value == math.inf else f"{value:.1f} s"


def queue_table(status: Status) -> Table:
    table = Table(title="Queues")
    for col in ("queue", "kind", "depth", "consumers"):
        table.add_column(col, justify="left" if col in ("queue", "kind") else "right")
    for q in status.queues:
        bad = q.missing or (q.kind == "dlq" and q.depth) or (q.kind in ("service", "intake") and not q.consumers)
        name = Text(q.name, style="red" if bad else "")
        if q.missing:
            name.append(f" (missing: {', '.join(q.missing)})")
        table.add_row(name, q.kind, str(q.depth), str(q.consumers))
    return table


def service_table(status: Status) -> Table:
    table = Table(title=f"Services (rates over the last {WINDOW_S} s)")
    for col in ("service", "processed/s", "published/s", "outbox backlog", "oldest unpublished", "queued", "estimated wait"):
        table.add_column(col, justify="left" if col == "service" else "right")
    for s in status.services:
        if s.error:
            table.add_row(s.name, Text("unreachable", style="red"))  # why: under problems
            continue
        table.add_row(
            s.name, f"{s.processed_per_s:.2f}", f"{s.published_per_s:.2f}", str(s.outbox_backlog),
            _seconds(s.oldest_unpublished_s), str(s.queued), _seconds(s.estimated_wait_s),
        )
    return table


def saker_table(status: Status) -> Table:
    table = Table(title="Cases per status (bosetting)")
    for col in ("status", "saker", "personar"):
        table.add_column(col, justify="left" if col == "status" else "right")
    for name in sorted(status.saker_per_status):
        table.add_row(name, str(status.saker_per_status[name]), str(status.personar_per_status[name]))
    table.add_row("total", str(sum(status.saker_per_status.values())), str(sum(status.personar_per_status.values())), style="bold")
    return table


def render(status: Status, found: list[str]) -> Group:
    eventlog = "unknown" if status.eventlog_messages is None else str(status.eventlog_messages)
    verdict = (
        Text("\n".join(f"✗ {p}" for p in found), style="bold red") if found else Text("✓ healthy", style="bold green")
    )
    return Group(
        Text(f"chain status at {status.at:%Y-%m-%d %H:%M:%S} UTC; event log {EVENTLOG}: {eventlog} message(s)"),
        queue_table(status), service_table(status), saker_table(status), verdict,
    )
