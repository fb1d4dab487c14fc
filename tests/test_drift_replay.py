"""`chain replay` against the running chain: re-delivery from the event-log stream reaches
the one target queue and nothing else, the target's inbox absorbs what it already has,
filters select exactly what they say, refused targets are refused, real replays are
journaled."""

import asyncio
import contextlib
import re
from datetime import timedelta

import aio_pika
import aiormq
import httpx
import pytest
import typer
from typer.testing import CliRunner

from drift import journal
from drift.replay import Refused, RefusedTarget, deliveries, publish_batch, replay
from drift.replay_cli import register
from shared.config import settings
from shared.envelope import parse_envelope
from shared.topology import EVENTS
from sim.environment import SERVICES
from sim.workload import households
from tests.conftest import eventually
from tests.test_chain import KOMMUNAR, db, dlq_depths, outcome, run_households

pytestmark = pytest.mark.usefixtures("chain")

PARTNER = "partner.test"


@pytest.fixture(scope="module")
async def saker(env) -> list[str]:
    """A small workload through the running chain; the cases it settled."""
    workload = households(10, seed=81, kommunar=KOMMUNAR)
    sim = await run_households(env, workload)
    assert not sim.errors
    settle, _ = outcome(workload)
    await eventually(lambda: _quiet(env), timeout=60, interval=0.5)
    return sorted(settle)


# What the test partner is entitled to: its bindings on the events exchange.
ENTITLED = ("kartlegging.startet", "bosetting.avtale_inngatt", "bosetting.bosatt", "bosetting.trukke")


@pytest.fixture
async def partner(env):
    """A partner-like quorum queue, empty, bound to the ENTITLED types (and so getting them
    live too while the test runs: drained before and after)."""
    connection = await aio_pika.connect(env.settings().amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(PARTNER, durable=True, arguments={"x-queue-type": "quorum"})
        for event_type in ENTITLED:
            await queue.bind(EVENTS, event_type)
        await queue.purge()
        yield channel
        await queue.delete(if_unused=False, if_empty=False)


@pytest.fixture
def operator(monkeypatch) -> str:
    monkeypatch.setenv("CHAIN_OPERATOR", "ola.drift")
    return "ola.drift"


async def test_replay_to_one_service_is_absorbed_and_reaches_no_other(env, saker):
    cfg = env.settings()
    sak = saker[0]
    expected = (await replay(cfg, target="kompetanse", sak=sak, dry_run=True)).matched
    assert expected >= 4  # vedtak, mapping, allocation, settlement at least
    before = await _snapshot(env)
    for round_ in (1, 2):  # repeating a replay is as safe as doing it once
        result = await replay(cfg, target="kompetanse", sak=sak)
        assert (result.matched, result.published, result.stopped) == (expected, expected, "end")
        # kompetanse got every one of them again and recognised each as a duplicate
        await eventually(lambda n=round_: _absorbed(env, before, n * expected), timeout=30)
    await asyncio.sleep(1.0)  # anything stray would have arrived by now
    after = await _snapshot(env)
    assert after["inbox"] == before["inbox"]  # no new inbox rows anywhere
    assert after["dlq"] == before["dlq"] == {s: 0 for s in SERVICES}
    assert after["depth"] == before["depth"] == {"kartlegging": 0, "bosetting": 0}
    for service in ("kartlegging", "bosetting"):  # the other services received nothing at all
        assert after["stats"][service] == before["stats"][service]
    k0, k1 = before["stats"]["kompetanse"], after["stats"]["kompetanse"]
    assert k1 == k0 | {"duplicates": k0["duplicates"] + 2 * expected}


async def test_replay_to_a_partner_queue_carries_exactly_the_matching_events(env, saker, partner, operator):
    cfg = env.settings()
    outbox = await _outbox(env, "bosetting", "bosetting.bosatt")
    assert len(outbox) >= len(saker)
    result = await replay(cfg, target=PARTNER, types=["bosetting.bosatt"])
    # A relay killed between publishing and marking a row (as test_chain's SIGKILL test can) publishes
    # it again: the stream then holds the event twice, and so does the replay (at least once;
    # the consumer's inbox absorbs the copy).
    assert result.matched == result.published >= len(outbox)
    messages = await _drain(partner)
    # the same events, byte for byte, with their properties and the replay's mark
    assert {m.message_id: m.body.decode() for m in messages} == outbox
    assert len(messages) == result.published
    for m in messages:
        assert m.type == "bosetting.bosatt" and m.content_type == "application/cloudevents+json"
        assert m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert m.headers["x-replay-id"] == result.replay_id and "x-stream-offset" not in m.headers
    # the journal has it: who, what, and what came of it
    entry = next(e for e in await journal.entries(cfg) if e["parametrar"].get("replay_id") == result.replay_id)
    assert entry["operator"] == operator and entry["kommando"] == "replay"
    assert {k: entry["parametrar"][k] for k in ("target", "types", "sak", "since")} == {
        "target": PARTNER, "types": ["bosetting.bosatt"], "sak": None, "since": None}
    assert entry["resultat"]["published"] == len(outbox) and entry["resultat"]["rate"] > 0


async def test_a_dry_run_counts_and_publishes_nothing(env, saker, partner):
    cfg = env.settings()
    journaled = len(await journal.entries(cfg, 1000))
    result = await replay(cfg, target=PARTNER, types=["kartlegging.startet"], dry_run=True)
    assert result.matched >= len(saker) and result.published == 0
    assert result.matched == len([1 for m in await _stream(env) if m.type == "kartlegging.startet"])
    await asyncio.sleep(0.5)
    assert await _drain(partner) == []
    assert len(await journal.entries(cfg, 1000)) == journaled  # a dry run changes nothing: not journaled


async def test_a_time_window_selects_by_envelope_time(env, saker, partner):
    cfg = env.settings()
    sak = saker[1]
    case = sorted((e for e in await _stream(env) if e.subject == sak), key=lambda e: e.time)
    assert len(case) >= 5
    since, until = case[1].time, case[-2].time
    result = await replay(cfg, target=PARTNER, sak=sak, since=since, until=until)
    got = {m.message_id for m in await _drain(partner)}
    # only the types the partner is entitled to, though no --type was given
    assert got == {str(e.id) for e in case if since <= e.time <= until and e.type in ENTITLED} and result.published == len(got)
    assert got and result.matched == len(got)
    # a naive datetime is UTC; a window before everything reads to the end and finds nothing
    early = case[0].time.replace(tzinfo=None) - timedelta(days=3)
    assert (await replay(cfg, target=PARTNER, until=early, dry_run=True)).matched == 0
    with pytest.raises(Refused, match="after until"):
        await replay(cfg, target=PARTNER, since=until, until=since)


async def test_a_partner_gets_no_type_it_is_not_entitled_to(env, saker, partner):
    cfg = env.settings()
    for asked in (["vedtak.fattet"], ["bosetting.bosatt", "kartlegging.fullfort"]):
        with pytest.raises(Refused, match="not entitled"):
            await replay(cfg, target=PARTNER, types=asked, dry_run=True)
    everything = (await replay(cfg, target=PARTNER, dry_run=True)).matched
    assert everything == len([1 for m in await _stream(env) if m.type in ENTITLED])


async def test_a_consumers_notification_queue_is_no_target(env):
    with pytest.raises(RefusedTarget):
        await replay(env.settings(), target="kompetanse.varsel.889640782", dry_run=True)


async def test_since_seeks_into_the_stream_instead_of_reading_it_all(env, saker, partner, monkeypatch):
    cfg = env.settings()
    everything = await replay(cfg, target=PARTNER, dry_run=True)
    latest = max(e.time for e in await _stream(env) if e.type in ENTITLED)
    monkeypatch.setattr("drift.replay.SLACK", timedelta(0))  # the workload took seconds, not the minute of slack
    tail = await replay(cfg, target=PARTNER, since=latest, dry_run=True)
    assert tail.matched >= 1 and tail.read < everything.read / 2 and tail.first_offset > 0


@pytest.mark.parametrize(
    "target", ["chain.eventlog", "bosetting.dlq", "bosetting.retry.100ms", "partner.missing", "chain.events", "sim.actors"]
)
async def test_refused_targets(env, partner, target):
    cfg = env.settings()
    journaled = len(await journal.entries(cfg, 1000))
    with pytest.raises(RefusedTarget, match="refusing to replay to"):
        await replay(cfg, target=target, sak="sak-ingen-slik")
    assert len(await journal.entries(cfg, 1000)) == journaled


async def test_unparseable_entries_are_counted_and_skipped(env, saker, partner):
    cfg = env.settings()
    before = await replay(cfg, target=PARTNER, dry_run=True)
    connection = await aio_pika.connect(cfg.amqp_url)
    async with connection:  # a routing key no service binds: it lands in the event log only
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS)
        await exchange.publish(aio_pika.Message(b"not an envelope"), routing_key="drift.test.garbage")
    result = await replay(cfg, target=PARTNER)
    assert result.unparseable == before.unparseable + 1
    assert result.read == before.read + 1 and result.published == before.matched
    assert len(await _drain(partner)) == before.matched


async def test_a_batch_to_a_queue_that_vanished_fails_loudly(env, saker):
    """Publishing is mandatory: an unroutable replay raises instead of dropping events."""
    connection = await aiormq.connect(env.settings().amqp_url)
    try:
        reader = await connection.channel(publisher_confirms=False)
        await reader.basic_qos(prefetch_count=10)
        async with contextlib.aclosing(deliveries(reader, "first", 2.0)) as batches:
            batch = await anext(batches)
        out = await connection.channel(publisher_confirms=True, on_return_raises=True)
        with pytest.raises(aiormq.exceptions.PublishError):
            await (await publish_batch(out, batch, "partner.vanished", "test"))
    finally:
        await connection.close()


def test_the_cli(env, saker, partner, monkeypatch):
    cfg = env.settings()
    monkeypatch.setenv("CHAIN_AMQP_URL", cfg.amqp_url)
    monkeypatch.setenv("CHAIN_DB_PREFIX", cfg.db_prefix)
    settings.cache_clear()
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # with one command Typer would make `replay` the app itself
    runner = CliRunner()
    try:
        sak = saker[2]
        what = ["replay", "--to", PARTNER, "--sak", sak, "--type", "kartlegging.startet", "--type", "bosetting.bosatt"]
        dry = runner.invoke(app, [*what, "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert re.search(rf"dry run: would replay 2 of \d+ read events to {PARTNER} in [\d.]+ s \([\d,]+ events/s\)", dry.output)
        real = runner.invoke(app, [*what, "--since", "2000-01-01T00:00"])
        assert real.exit_code == 0, real.output
        assert re.search(rf"replayed 2 of \d+ read events to {PARTNER} in [\d.]+ s \([\d,]+ events/s\)", real.output)
        assert "events read" in real.output  # the progress bar
        refused = runner.invoke(app, ["replay", "--to", "bosetting.dlq"])
        assert refused.exit_code == 2 and "refusing to replay to 'bosetting.dlq'" in refused.output
        bad = runner.invoke(app, ["replay", "--to", PARTNER, "--since", "yesterday"])
        assert bad.exit_code == 2 and "not an ISO 8601 time" in bad.output
    finally:
        settings.cache_clear()
    assert len(asyncio.run(_drain_once(cfg.amqp_url))) == 2


# --- helpers ----------------------------------------------------------------------------


async def _stats(env) -> dict[str, dict]:
    async with httpx.AsyncClient(timeout=5.0) as http:
        return {s: (await http.get(f"{env.url(s)}/health/ready")).json()["stats"] for s in SERVICES}


async def _inbox(env) -> dict[str, int]:
    counts = {}
    for service in SERVICES:
        conn = await db(env, service)
        try:
            counts[service] = await conn.fetchval("SELECT count(*) FROM inbox")
        finally:
            await conn.close()
    return counts


async def _depths(env) -> dict[str, int]:
    connection = await aio_pika.connect(env.settings().amqp_url)
    async with connection:
        channel = await connection.channel()
        return {q: (await channel.declare_queue(q, passive=True)).declaration_result.message_count for q in ("kartlegging", "bosetting")}


async def _snapshot(env) -> dict:
    return {"stats": await _stats(env), "inbox": await _inbox(env), "dlq": await dlq_depths(env), "depth": await _depths(env)}


async def _quiet(env) -> bool:
    """The chain has settled: nothing consumed between two looks a moment apart."""
    first = (await _stats(env), await _inbox(env))
    await asyncio.sleep(1.5)
    return first == (await _stats(env), await _inbox(env))


async def _absorbed(env, before: dict, n: int):
    k = (await _stats(env))["kompetanse"]
    return k["duplicates"] >= before["stats"]["kompetanse"]["duplicates"] + n


async def _outbox(env, service: str, type_: str) -> dict[str, str]:
    conn = await db(env, service)
    try:
        rows = await conn.fetch("SELECT event_id, body FROM outbox WHERE type = $1 AND published_at IS NOT NULL", type_)
    finally:
        await conn.close()
    return {str(r["event_id"]): r["body"] for r in rows}


async def _drain(channel) -> list:
    queue = await channel.declare_queue(PARTNER, passive=True)
    messages = []
    while (m := await queue.get(no_ack=True, fail=False)) is not None:
        messages.append(m)
    return messages


async def _drain_once(url: str) -> list:
    connection = await aio_pika.connect(url)
    async with connection:
        return await _drain(await connection.channel())


async def _stream(env) -> list:
    """Every envelope in the event log (what a replay without filters reads)."""
    connection = await aiormq.connect(env.settings().amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=False)
        await channel.basic_qos(prefetch_count=1000)
        envelopes = []
        async with contextlib.aclosing(deliveries(channel, "first", 1.0)) as batches:
            async for batch in batches:
                await batch[-1].channel.basic_ack(batch[-1].delivery.delivery_tag, multiple=True)
                for m in batch:
                    with contextlib.suppress(ValueError):
                        envelopes.append(parse_envelope(m.body))
        return envelopes
    finally:
        await connection.close()

