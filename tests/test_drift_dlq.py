"""`chain dlq`: list, show, redrive and drop dead letters, against the real broker and
database with the chain running.

Most letters here are events of a type no one knows (`kommune.dlqtest_*`): only bosetting
binds `kommune.*`, and its river dead-letters them at once as `invalid`, so each test gets
letters of its own, fast, in one DLQ, without touching any case's sequence."""

import asyncio
import json
import secrets
from datetime import UTC, date, datetime
from types import SimpleNamespace
from uuid import uuid4

import aio_pika
import asyncpg
import pytest
from typer.testing import CliRunner

from drift import dlq, dlq_cli, journal
from services.bosetting import store
from services.bosetting.referansedata import Kommune
from shared.catalogue import KapasitetRapportert
from shared.config import settings
from shared.envelope import Envelope
from shared.publish import envelope_for, publish_envelope, publish_raw
from shared.topology import EVENTS
from tests.conftest import eventually

pytestmark = pytest.mark.usefixtures("chain")

OPERATOR = "test-operatør"


@pytest.fixture
def cfg(env, monkeypatch):
    monkeypatch.setenv("CHAIN_OPERATOR", OPERATOR)
    return env.settings()


@pytest.fixture
async def rydd(cfg):
    """Message ids a test dead-lettered: whatever is left of them is dropped afterwards."""
    ids: set[str] = set()
    yield ids
    if ids:
        await dlq.drop(cfg, all_=True, only=ids, yes=True)


@pytest.fixture
def cli(env):
    """Run `chain dlq ...` on this environment. The CLI calls asyncio.run, so it runs in a
    thread; settings() is cached, so the cache is cleared before and after."""
    s = env.settings()
    environ = {"CHAIN_AMQP_URL": s.amqp_url, "CHAIN_DB_PREFIX": s.db_prefix, "CHAIN_OPERATOR": OPERATOR, "COLUMNS": "250"}
    runner = CliRunner()

    async def run(*args: str, input: str | None = None):
        settings.cache_clear()
        try:
            return await asyncio.to_thread(runner.invoke, dlq_cli.app, list(args), input=input, env=environ)
        finally:
            settings.cache_clear()

    return run


def unknown_event(name: str, merke: str = "") -> Envelope:
    """A well-formed envelope of an event type no service knows: bosetting dead-letters it."""
    return Envelope(
        source="urn:no:kommune:0301",
        type=f"kommune.dlqtest_{name}_{secrets.token_hex(4)}",
        subject="kommune-0301",
        dataschema="urn:chain:test:ukjend",
        data={"merke": merke},
        correlationid=uuid4(),
        sequence=1,
    )


async def publish(cfg, *envelopes: Envelope, raw: tuple[str, bytes] | None = None) -> None:
    connection = await aio_pika.connect(cfg.amqp_url)
    async with connection:
        exchange = await (await connection.channel(publisher_confirms=True)).get_exchange(EVENTS)
        for envelope in envelopes:
            await publish_envelope(exchange, envelope)
        if raw:
            await publish_raw(exchange, *raw)  # no message id, as a careless producer sends it


async def letters(cfg, queue: str = "bosetting") -> dict[str, dlq.DeadLetter]:
    return {lt.message_id: lt for lt in await dlq.list_dead_letters(cfg, queue, limit=100_000)}


async def dead_lettered(cfg, *ids: str, redriven: bool = False) -> dict[str, dlq.DeadLetter] | None:
    """The letters with these ids once all are in bosetting's DLQ (marked redriven, if asked)."""
    found = await letters(cfg)
    if all(i in found and (not redriven or "x-redriven-at" in found[i].headers) for i in ids):
        return {i: found[i] for i in ids}
    return None


async def depth(cfg, queue: str) -> int:
    connection = await aio_pika.connect(cfg.amqp_url)
    async with connection:
        declared = await (await connection.channel()).declare_queue(queue, passive=True)
        return declared.declaration_result.message_count


async def journaled(cfg, kommando: str) -> list[dict]:
    return [e for e in await journal.entries(cfg, 500) if e["kommando"] == kommando]


# --- redrive after a fix ----------------------------------------------------------------


async def test_redrive_after_the_fix_applies_the_dead_letter(env, cfg, rydd):
    """A kommune's capacity report that bosetting rejects until its reference data is fixed.

    Since 1 January 2024 Haram is a kommune of its own again (1580, split from Ålesund). Its
    system reports capacity under the new number, but bosetting still has the 2023 kommune
    register: the report is `Rejected` ("unknown kommunenummer") and dead-lettered at once, a
    permanent failure with no retries (so the test is fast). Redriving it before the fix
    sends it straight back: a redrive is not a fix. The operator then loads the 2024
    reference data (here Haram alone, through the store function bosetting's start-up
    uses), redrives again, and the report is applied: Haram has its capacity, the DLQ copy
    is gone, and the journal says who redrove what."""
    conn = await asyncpg.connect(cfg.database_url("bosetting"))
    try:
        assert not await store.kommune_exists(conn, "1580")  # otherwise there is nothing to fix
        report = KapasitetRapportert(kommunenummer="1580", dato=date.today(), ledige_bustader=12, tek_imot=True)
        envelope = envelope_for(report, "kommune-1580", "urn:no:kommune:1580", 1)
        message_id = str(envelope.id)
        rydd.add(message_id)
        before = await depth(cfg, "bosetting.dlq")
        await publish(cfg, envelope)

        letter = (await eventually(lambda: dead_lettered(cfg, message_id)))[message_id]
        assert (letter.error_kind, letter.reason) == ("rejected", "unknown kommunenummer")
        assert (letter.type, letter.subject, letter.failed_queue) == ("kommune.kapasitet_rapportert", "kommune-1580", "bosetting")

        # Before the fix: it comes straight back, marked as redriven, with a fresh count.
        assert await dlq.redrive(cfg, message_id=message_id) == 1
        back = (await eventually(lambda: dead_lettered(cfg, message_id, redriven=True)))[message_id]
        assert back.headers["x-redriven-by"] == OPERATOR and back.attempts == 0
        assert back.reason == "unknown kommunenummer"

        # The fix, then the redrive.
        haram = Kommune(kommunenummer="1580", namn="Haram", fylkesnummer="15", fylke="Møre og Romsdal", innbyggjarar=9_450)
        await store.load_kommunar(conn, [haram], {})
        assert await dlq.redrive(cfg, message_id=message_id) == 1

        rapport = await eventually(lambda: conn.fetchrow("SELECT ledige_bustader, tek_imot, kjelde FROM kapasitetsrapport WHERE kommunenummer = '1580'"))
        assert dict(rapport) == {"ledige_bustader": 12, "tek_imot": True, "kjelde": "event"}
        assert await conn.fetchval("SELECT ledige_bustader FROM kommune WHERE kommunenummer = '1580'") == 12
    finally:
        await conn.close()
    assert message_id not in await letters(cfg)
    assert await depth(cfg, "bosetting.dlq") == before

    redrives = [e for e in await journaled(cfg, "dlq redrive") if e["parametrar"] == {"id": message_id}]
    assert len(redrives) == 2 and all(e["operator"] == OPERATOR for e in redrives)
    assert all(e["resultat"]["dead_letters"] == [{"id": message_id, "type": "kommune.kapasitet_rapportert", "til": "bosetting"}] for e in redrives)


# --- list and show ----------------------------------------------------------------------


async def test_list_shows_reason_and_type_and_consumes_nothing(cfg, cli, rydd):
    events = [unknown_event(f"list{i}") for i in range(3)]
    garbage_type = f"kommune.dlqtest_garbage_{secrets.token_hex(4)}"
    await publish(cfg, *events, raw=(garbage_type, b"\x00 not json"))
    ids = [str(e.id) for e in events]
    rydd.update(ids)

    async def all_four():
        found = await letters(cfg)
        garbage = [lt for lt in found.values() if lt.type == garbage_type]
        return (found, garbage[0]) if all(i in found for i in ids) and garbage else None

    found, garbage = await eventually(all_four)
    rydd.add(garbage.message_id)
    for e in events:
        lt = found[str(e.id)]
        assert (lt.dlq, lt.type, lt.subject, lt.event_id) == ("bosetting.dlq", e.type, "kommune-0301", str(e.id))
        # the reason names no sender's string (it may carry anything); the type is in the listing
        assert lt.error_kind == "invalid" and lt.reason == "UnknownEvent: event type not in the catalogue"
        assert (lt.failed_queue, lt.attempts, lt.size) == ("bosetting", 0, len(e.model_dump_json()))
        assert lt.dead_lettered_at
    # garbage is tolerated: no envelope, the reason still shown (and an id: the river's
    # republish gives one to a message that came without)
    assert garbage.message_id and garbage.subject is None and garbage.event_id is None
    assert garbage.error_kind == "invalid" and "json_invalid" in garbage.reason

    # reading is not consuming, nor reordering
    depths = {q: await depth(cfg, q) for q in dlq.DLQS}
    first = [lt.message_id for lt in await dlq.list_dead_letters(cfg)]
    again = [lt.message_id for lt in await dlq.list_dead_letters(cfg)]
    mine = [i for i in first if i in ids]  # letters of other tests may come and go meanwhile
    assert mine == [i for i in again if i in ids] and set(ids) <= set(first)
    assert {q: await depth(cfg, q) for q in dlq.DLQS} == depths
    assert [lt.message_id for lt in await dlq.list_dead_letters(cfg, "bosetting", limit=2)] == [i for i in first if i in found][:2]

    result = await cli("list", "--queue", "bosetting", "--json")
    assert result.exit_code == 0, result.output
    listed = {d["message_id"]: d for d in json.loads(result.stdout)}
    assert listed[ids[0]]["type"] == events[0].type and listed[ids[0]]["error_kind"] == "invalid"
    table = await cli("list")
    assert table.exit_code == 0 and events[0].type in table.stdout and "UnknownEvent" in table.stdout
    assert {q: await depth(cfg, q) for q in dlq.DLQS} == depths


async def test_show_gives_headers_and_body(cfg, cli, rydd):
    event = unknown_event("show", merke="synleg")
    rydd.add(str(event.id))
    await publish(cfg, event)
    await eventually(lambda: dead_lettered(cfg, str(event.id)))

    [letter] = await dlq.show(cfg, str(event.id))
    assert letter.headers["x-error-kind"] == "invalid" and letter.headers["x-failed-queue"] == "bosetting"
    assert json.loads(letter.body) == json.loads(event.model_dump_json())
    assert letter.properties["content_type"] == "application/cloudevents+json"

    result = await cli("show", str(event.id))
    assert result.exit_code == 0, result.output
    assert "x-error-reason: UnknownEvent" in result.stdout and "x-original-routing-key: " + event.type in result.stdout
    assert '  "merke": "synleg"' in result.stdout  # pretty JSON
    missing = await cli("show", "no-such-id")
    assert missing.exit_code == 2 and "no dead letter with id no-such-id" in missing.stderr


# --- redrive ----------------------------------------------------------------------------


async def test_redrive_by_filter_touches_only_matching_letters(cfg, cli, rydd):
    a, b = unknown_event("a"), unknown_event("b")
    rydd.update({str(a.id), str(b.id)})
    await publish(cfg, a, b)
    before = await eventually(lambda: dead_lettered(cfg, str(a.id), str(b.id)))
    redrives = len(await journaled(cfg, "dlq redrive"))

    dry = await cli("redrive", "--type", a.type, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would redrive 1 dead letter(s): 1 to bosetting" in dry.stdout
    assert "x-redriven-at" not in (await letters(cfg))[str(a.id)].headers
    assert len(await journaled(cfg, "dlq redrive")) == redrives  # a dry run changes nothing

    result = await cli("redrive", "--type", a.type)
    assert result.exit_code == 0, result.output
    assert "redrove 1 dead letter(s): 1 to bosetting" in result.stdout
    # a is still unknown, so bosetting sends it back, marked; b was never touched
    now = await eventually(lambda: dead_lettered(cfg, str(a.id), redriven=True))
    assert now[str(a.id)].headers["x-redriven-by"] == OPERATOR
    untouched = (await letters(cfg))[str(b.id)]
    assert _settled(untouched.headers) == _settled(before[str(b.id)].headers)
    assert untouched.body == before[str(b.id)].body

    [entry] = (await journaled(cfg, "dlq redrive"))[:1]
    assert entry["operator"] == OPERATOR and entry["parametrar"] == {"type": a.type}
    assert entry["resultat"] == {"antal": 1, "dead_letters": [{"id": str(a.id), "type": a.type, "til": "bosetting"}]}

    refused = await cli("redrive")  # no filter: not everything by default
    assert refused.exit_code == 2 and "give a filter" in refused.stderr
    missing = await cli("redrive", "--queue", "no-such-service", "--all")
    assert missing.exit_code == 2 and "no queue no-such-service.dlq" in missing.stderr


def _settled(headers: dict) -> dict:
    """Headers as they were dead-lettered; the delivery count grows with every read."""
    return {k: v for k, v in headers.items() if k != "x-delivery-count"}


async def test_redrive_republishes_with_fresh_headers_and_refuses_a_queue_that_is_not_there(cfg):
    """On queues of its own, outside the chain: what exactly a redrive sends, and what it
    refuses before changing anything."""
    queue = f"dlqtest-{secrets.token_hex(4)}"
    connection = await aio_pika.connect(cfg.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        dead = await channel.declare_queue(f"{queue}.dlq", durable=True, arguments={"x-queue-type": "quorum"})
        try:
            failure = {
                "x-attempt": 7, "x-error-kind": "retries_exhausted", "x-error-reason": "error: boom", "x-last-error": "error: boom",
                "x-failed-queue": queue, "x-original-routing-key": "vedtak.fattet", "x-dead-lettered-at": "2024-01-01T00:00:00+00:00",
                "x-first-death-queue": f"{queue}.retry.100ms", "x-first-death-reason": "expired", "x-keep": "yes",
            }
            original = aio_pika.Message(
                b'{"not": "an envelope"}', headers=failure, message_id="m-1", type="vedtak.fattet",
                content_type="application/cloudevents+json", correlation_id="c-1", app_id="udi",
            )
            await channel.default_exchange.publish(original, routing_key=dead.name)

            with pytest.raises(dlq.DlqFeil, match=f"queue {queue} does not exist"):
                await dlq.redrive(cfg, queue=dead.name, all_=True)
            assert await depth(cfg, dead.name) == 1  # nothing was taken

            target = await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
            assert await dlq.redrive(cfg, queue=queue, all_=True) == 1
            copy = await eventually(lambda: target.get(no_ack=True, fail=False), timeout=5)
            assert await depth(cfg, dead.name) == 0
            assert copy.body == original.body
            assert (copy.message_id, copy.type, copy.content_type, copy.correlation_id, copy.app_id) == (
                "m-1", "vedtak.fattet", "application/cloudevents+json", "c-1", "udi",
            )
            assert copy.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            headers = _settled(copy.headers)  # the target's own delivery count aside
            assert headers.pop("x-redriven-by") == OPERATOR and headers.pop("x-redriven-at")
            assert headers == {"x-original-routing-key": "vedtak.fattet", "x-keep": "yes"}

            # Headers anyone could have set must not send a letter into another queue.
            forged = aio_pika.Message(b"{}", headers={"x-failed-queue": "bosetting"}, message_id="m-2")
            await channel.default_exchange.publish(forged, routing_key=dead.name)
            with pytest.raises(dlq.DlqFeil, match="does not feed their DLQ"):
                await dlq.redrive(cfg, queue=queue, all_=True)
            assert await depth(cfg, dead.name) == 1
            assert await dlq.drop(cfg, queue=queue, message_id="m-2", yes=True) == 1

        finally:
            await channel.queue_delete(f"{queue}.dlq")
            await channel.queue_delete(queue)


def test_a_letter_without_message_id_is_named_by_its_body():
    """Our client (aiormq) gives every message an id, but a mottak system's client need not,
    and the broker dead-letters a poison message as it came: such a letter is named by a
    hash of its body, the same at every read. The broker's own headers say why and where."""
    death = {"queue": "kartlegging.mottak-inn", "reason": "delivery_limit", "time": datetime(2024, 1, 2, tzinfo=UTC), "count": 1}
    message = SimpleNamespace(
        body=b"\x00 garbage", headers={"x-death": [death], "x-first-death-queue": "kartlegging.mottak-inn.retry.100ms"},
        message_id=None, type=None, content_type=None, content_encoding=None, correlation_id=None, timestamp=None,
        app_id=None, user_id=None, delivery_mode=None, redelivered=False,
    )
    letter = dlq._letter("kartlegging.mottak-inn.dlq", message)
    assert letter.message_id == dlq._letter("kartlegging.mottak-inn.dlq", message).message_id
    assert letter.message_id.startswith("sha256:") and len(letter.message_id) == len("sha256:") + 16
    # the last death, not the first (a retry tier it passed through)
    assert (letter.failed_queue, letter.error_kind) == ("kartlegging.mottak-inn", "broker:delivery_limit")
    assert letter.dead_lettered_at == "2024-01-02T00:00:00+00:00" and letter.body_text() == "\x00 garbage"


# --- drop -------------------------------------------------------------------------------


async def test_drop_asks_first_and_yes_deletes(cfg, cli, rydd, monkeypatch):
    c, d = unknown_event("c", merke="ikkje-i-journalen"), unknown_event("d")
    rydd.update({str(c.id), str(d.id)})
    await publish(cfg, c, d)
    await eventually(lambda: dead_lettered(cfg, str(c.id), str(d.id)))
    before = await depth(cfg, "bosetting.dlq")

    refused = await cli("drop", "--type", c.type)  # no terminal to ask on
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    with pytest.raises(dlq.DlqFeil):
        await dlq.drop(cfg, message_id=str(c.id))  # the function needs yes too

    monkeypatch.setattr(dlq_cli, "_interaktiv", lambda: True)
    kept = await cli("drop", "--type", c.type, input="n\n")
    assert kept.exit_code == 1 and "nothing dropped" in kept.stdout
    assert str(c.id) in await letters(cfg) and await depth(cfg, "bosetting.dlq") == before

    confirmed = await cli("drop", "--type", d.type, input="y\n")
    assert confirmed.exit_code == 0 and "dropped 1 dead letter(s)" in confirmed.stdout

    result = await cli("drop", "--type", c.type, "--yes")
    assert result.exit_code == 0 and "dropped 1 dead letter(s)" in result.stdout
    remaining = await letters(cfg)
    assert str(c.id) not in remaining and str(d.id) not in remaining
    assert await depth(cfg, "bosetting.dlq") == before - 2

    drops = {e["parametrar"]["type"]: e for e in await journaled(cfg, "dlq drop") if e["parametrar"].get("type") in (c.type, d.type)}
    assert drops[c.type]["resultat"]["dead_letters"] == [{"dlq": "bosetting.dlq", "id": str(c.id), "type": c.type}]
    assert drops[d.type]["operator"] == OPERATOR and drops[d.type]["resultat"]["antal"] == 1
    assert "ikkje-i-journalen" not in json.dumps(drops[c.type], default=str)  # ids and types, never bodies
