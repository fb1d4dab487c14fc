"""Metrics and traces of the live chain (three services and their relays as processes, on
the real broker and database): a run of households shows in every service's and relay's
`/metrics`, no label value is personal or a case id, and the trace UDI's vedtak starts is
carried by every event of its case, through kartlegging and bosetting to bosetting.bosatt."""

import json
import re
from collections import defaultdict

import aio_pika
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sim.environment import SERVICES
from sim.workload import households
from tests.conftest import eventually
from tests.test_chain import KOMMUNAR, db, outcome, run_households

pytestmark = pytest.mark.usefixtures("chain")

LABELS = {"service", "queue", "type", "outcome", "le"}
# A fødselsnummer (11 digits), a case, kommune or person subject, a UUID: none may be a label value.
PERSONAL = re.compile(r"\d{11}|sak-|kommune-|p-[0-9a-f]{8}|[0-9a-f]{8}-[0-9a-f]{4}-")


async def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    async with httpx.AsyncClient(timeout=5.0) as http:
        response = await http.get(url)
    assert response.status_code == 200, url
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(samples: dict, name: str, **labels) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape_all(env) -> dict[str, dict]:
    urls = {s: f"{env.url(s)}/metrics" for s in SERVICES} | {f"{s}-relay": env.relay_metrics_url(s) for s in SERVICES}
    return {name: await scrape(url) for name, url in urls.items()}


async def test_a_run_shows_in_every_services_and_relays_metrics(env):
    before = await scrape_all(env)
    workload = households(8, seed=4101, kommunar=KOMMUNAR)
    sim = await run_households(env, workload)
    assert not sim.errors
    settle, _ = outcome(workload)
    n = len(workload)

    async def backlogs_empty():
        after = await scrape_all(env)
        return after if all(total(after[s], "chain_outbox_backlog") == 0 for s in SERVICES) else None

    after = await eventually(backlogs_empty, timeout=30, interval=0.5)

    def grew(process: str, name: str, **labels) -> float:
        return total(after[process], name, **labels) - total(before[process], name, **labels)

    # every vedtak was applied once by kartlegging and by bosetting
    for service in ("kartlegging", "bosetting"):
        assert grew(service, "chain_river_events_total", queue=service, type="vedtak.fattet", outcome="applied") >= n
        assert grew(service, "chain_river_delivery_seconds_count", queue=service, type="vedtak.fattet") >= n
        assert grew(service, "chain_river_batch_size_count", queue=service) >= 1
        assert grew(service, "chain_river_batch_seconds_count", queue=service) >= 1
    # the mottak systems' events passed kartlegging's intake queue
    assert grew("kartlegging", "chain_river_events_total", queue="kartlegging.mottak-inn", outcome="applied") >= 1
    assert grew("kompetanse", "chain_river_events_total", queue="kompetanse", outcome="applied") >= n
    # what bosetting emitted was published by its relay: a bosatt per settled case
    assert grew("bosetting-relay", "chain_relay_published_total", service="bosetting", type="bosetting.bosatt") >= len(settle)
    assert grew("kartlegging-relay", "chain_relay_published_total", service="kartlegging", type="kartlegging.startet") >= n
    for service in SERVICES:
        assert total(after[f"{service}-relay"], "chain_relay_active", service=service) == 1
        assert total(after[service], "chain_outbox_oldest_age_seconds", service=service) == 0
        assert total(after[f"{service}-relay"], "chain_relay_publish_failures_total") == 0


async def test_no_metric_label_is_personal_or_a_case_id(env):
    workload = households(3, seed=4102, kommunar=KOMMUNAR)
    await run_households(env, workload)
    for process, samples in (await scrape_all(env)).items():
        chain = {ls for (name, ls) in samples if name.startswith("chain_")}
        assert chain, process
        assert {k for ls in chain for k, _ in ls} <= LABELS, process
        values = {v for ls in chain for _, v in ls}
        assert not [v for v in values if PERSONAL.search(v)], process
        subjects = {h.sak_id for h in workload} | {p.person_id for h in workload for p in h.vedtak.personar}
        assert not values & subjects


async def test_the_vedtaks_trace_is_carried_to_bosatt(env):
    """Every event of a settled case (same correlation id) in the three services' outboxes
    carries the trace id of UDI's vedtak.fattet, read back from the event log; each one
    caused by the vedtak is a child with a span id of its own."""
    workload = households(4, seed=4103, kommunar=KOMMUNAR)
    await run_households(env, workload)
    settle, _ = outcome(workload)
    vedtak = await _vedtak_from_eventlog(env, settle)
    assert set(vedtak) == settle

    emitted = defaultdict(list)  # correlation id -> [(source, type, traceparent, causationid)]
    for service in SERVICES:
        conn = await db(env, service)
        try:
            for row in await conn.fetch("SELECT body FROM outbox"):
                e = json.loads(row["body"])
                emitted[e["correlationid"]].append((e["source"], e["type"], e.get("traceparent"), e["causationid"]))
        finally:
            await conn.close()

    for sak_id, v in vedtak.items():
        _, trace_id, span_id, _ = v["traceparent"].split("-")
        events = emitted[v["correlationid"]]
        assert {t for _, t, _, _ in events} >= {"kartlegging.startet", "kartlegging.fullfort", "bosetting.bosatt"}, sak_id
        assert {s for s, _, _, _ in events} >= {"urn:chain:kartlegging", "urn:chain:bosetting"}
        for source, type_, traceparent, causationid in events:
            assert traceparent and traceparent.split("-")[1] == trace_id, (sak_id, source, type_)
            if causationid == v["id"]:  # caused by the vedtak: a child, not a copy of its context
                assert traceparent.split("-")[2] != span_id


async def _vedtak_from_eventlog(env, sak_ids: set[str]) -> dict[str, dict]:
    found: dict[str, dict] = {}
    connection = await aio_pika.connect(env.settings().amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        queue = await channel.get_queue("chain.eventlog", ensure=False)
        async with queue.iterator(arguments={"x-stream-offset": "first"}, timeout=3) as messages:
            try:
                async for m in messages:
                    await m.ack()
                    e = _json(m.body) if m.type == "vedtak.fattet" else None
                    if isinstance(e, dict) and e.get("subject") in sak_ids:
                        found[e["subject"]] = e
            except TimeoutError:  # read to the end: a stream takes no nack of what was prefetched
                pass
    return found


def _json(body: bytes):
    """The log holds other tests' malformed messages too."""
    try:
        return json.loads(body)
    except ValueError:
        return None
