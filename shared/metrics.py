"""Prometheus metrics of the rivers, the relays and the outboxes (prometheus_client).

Every label value is a service, queue or relay name, an event type from the catalogue, or
an outcome: never anything from an event's data or subject (no case ids, no personal
data), and a type a sender made up is counted as "invalid" (a label per made-up name would
also let any sender grow our series without bound).

A service serves them at `GET /metrics` on its HTTP port; a relay, a separate process with
no HTTP of its own, on CHAIN_RELAY_METRICS_PORT (`serve_relay_metrics`).
"""

import asyncpg
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from shared.catalogue import CATALOGUE
from shared.log import get_logger

log = get_logger()

INVALID = "invalid"  # the event type label of a delivery that did not parse as a known event
KNOWN_TYPES = frozenset(et.name for et in CATALOGUE.values())

# Deliveries settle in about a millisecond in a batch, and in seconds when the database is slow.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

RIVER_EVENTS = Counter(
    "chain_river_events",
    "Deliveries a river settled, by outcome: applied; duplicate or stale (acked, nothing"
    " changed); retried (to a delay tier); dead_lettered; returned (requeued: the broker refused the copy)",
    ["service", "queue", "type", "outcome"],
)
RIVER_DELIVERY_SECONDS = Histogram(
    "chain_river_delivery_seconds",
    "From a delivery's arrival to its settlement (waiting for its batch, the batch's transaction and commit, the ack)",
    ["service", "queue", "type"],
    buckets=_SECONDS,
)
RIVER_BATCH_SIZE = Histogram(
    "chain_river_batch_size",
    "Deliveries applied together in one transaction",
    ["service", "queue"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
RIVER_BATCH_SECONDS = Histogram(
    "chain_river_batch_seconds",
    "One batch: its transaction (inbox, sequences, handlers, outbox), the commit and the acks",
    ["service", "queue"],
    buckets=_SECONDS,
)
RELAY_PUBLISHED = Counter("chain_relay_published", "Outbox events published and confirmed by the broker", ["service", "type"])
RELAY_FAILURES = Counter(
    "chain_relay_publish_failures", "Publishes not confirmed (nacked or timed out; published again later)", ["service", "type"]
)
RELAY_ACTIVE = Gauge("chain_relay_active", "1 while this relay holds its database's relay lock (else it is in standby)", ["service"])
OUTBOX_BACKLOG = Gauge("chain_outbox_backlog", "Outbox rows not published yet (read from the database at scrape time)", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "chain_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row (0 when there is none)", ["service"]
)


def type_label(event_type: str) -> str:
    return event_type if event_type in KNOWN_TYPES else INVALID


class RiverMetrics:
    """One river's metrics, with the labelled children kept: `labels()` takes a lock and
    builds a key each call, a dictionary lookup here does not (hundreds of deliveries a second)."""

    def __init__(self, service: str, queue: str):
        self._labels = (service, queue)
        self._events: dict[tuple[str, str], Counter] = {}
        self._latency: dict[str, Histogram] = {}
        self.batch_size = RIVER_BATCH_SIZE.labels(service, queue)
        self.batch_seconds = RIVER_BATCH_SECONDS.labels(service, queue)

    def settled(self, event_type: str, outcome: str, seconds: float) -> None:
        counter = self._events.get((event_type, outcome))
        if counter is None:
            counter = self._events[(event_type, outcome)] = RIVER_EVENTS.labels(*self._labels, type_label(event_type), outcome)
        counter.inc()
        latency = self._latency.get(event_type)
        if latency is None:
            latency = self._latency[event_type] = RIVER_DELIVERY_SECONDS.labels(*self._labels, type_label(event_type))
        latency.observe(seconds)

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)


class RelayMetrics:
    def __init__(self, service: str):
        self.service = service
        self.active = RELAY_ACTIVE.labels(service)
        self._published: dict[str, Counter] = {}
        self._failed: dict[str, Counter] = {}

    def published(self, event_type: str) -> None:
        counter = self._published.get(event_type)
        if counter is None:
            counter = self._published[event_type] = RELAY_PUBLISHED.labels(self.service, type_label(event_type))
        counter.inc()

    def failed(self, event_type: str) -> None:
        counter = self._failed.get(event_type)
        if counter is None:
            counter = self._failed[event_type] = RELAY_FAILURES.labels(self.service, type_label(event_type))
        counter.inc()


_BACKLOG = """
SELECT count(*) AS backlog,
       coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest
FROM outbox WHERE published_at IS NULL
"""


async def observe_outbox(service: str, pool: asyncpg.Pool) -> None:
    """The outbox backlog, read at scrape time by the service (not by its relay): it is the
    database's, and it matters most when no relay is publishing (all in standby, or down),
    which a relay cannot report. Every replica reports the same value: aggregate with max.
    The partial index on unpublished rows keeps this cheap while the backlog is small."""
    try:
        row = await pool.fetchrow(_BACKLOG, timeout=2.0)
    except Exception:  # database unreachable: no value rather than a stale one
        for gauge in (OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE):
            try:
                gauge.remove(service)
            except KeyError:
                pass
        return
    OUTBOX_BACKLOG.labels(service).set(row["backlog"])
    OUTBOX_OLDEST_AGE.labels(service).set(float(row["oldest"]))


def serve_relay_metrics(port: int, host: str) -> None:
    """A relay's /metrics on a port of its own (a thread); port 0: none. A port that is
    taken is logged, not fatal: publishing the outbox matters more than being watched."""
    if not port:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.error("metrics_port_unavailable", port=port, error=type(exc).__name__)
