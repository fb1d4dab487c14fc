"""The river (inbox, sequence, retries, dead letters) with bosetting's handlers, against
the real RabbitMQ and PostgreSQL."""

import json
import random

import pytest

from services.bosetting.handlers import EVENT_HANDLERS
from shared.catalogue import MottakStatusEndret
from shared.publish import envelope_for
from tests.conftest import eventually
from tests.events import UDI, case_history, new_sak_id, vedtak
from tests.harness import river_harness


@pytest.fixture(scope="module")
async def bosetting(env):
    async with river_harness(env, "bosetting", EVENT_HANDLERS) as harness:
        yield harness


async def sak_row(h, sak_id):
    return await h.pool.fetchrow("SELECT status, mottak_id, avslatt_av FROM sak WHERE sak_id = $1", sak_id)


async def test_duplicated_events_change_nothing(bosetting):
    sak_id = new_sak_id()
    history = case_history(sak_id)
    for envelope in history + history + history[:1]:  # every event delivered twice or more
        await bosetting.publish(envelope)
    row = await eventually(lambda: _final(bosetting, sak_id))
    assert row["status"] == "fordelingsklar"
    assert await bosetting.pool.fetchval("SELECT count(*) FROM sak WHERE sak_id = $1", sak_id) == 1
    assert await bosetting.pool.fetchval(
        "SELECT count(*) FROM inbox WHERE event_id = ANY($1::uuid[])", [e.id for e in history]
    ) == len(history)
    # the duplicates were seen and ignored, not applied
    await eventually(lambda: _settled(bosetting, len(history) * 2 + 1))


async def _settled(h, at_least):
    s = h.river.stats
    return s.applied + s.duplicates >= at_least


async def _final(h, sak_id):
    row = await sak_row(h, sak_id)
    if row and row["status"] == "fordelingsklar" and row["mottak_id"] == "mottak-07":
        return row
    return None


@pytest.mark.parametrize("seed", range(5))
async def test_any_shuffle_of_a_case_converges(bosetting, seed):
    sak_id = new_sak_id()
    history = case_history(sak_id)
    shuffled = history[:]
    random.Random(seed).shuffle(shuffled)
    for envelope in shuffled:
        await bosetting.publish(envelope)
    row = await eventually(lambda: _final(bosetting, sak_id))
    # the same end state as the ordered history: mapped, ready, in the mottak it moved to
    assert (row["status"], row["mottak_id"], list(row["avslatt_av"])) == ("fordelingsklar", "mottak-07", [])
    last = await bosetting.pool.fetch("SELECT source, last_sequence FROM inbox_sequence WHERE subject = $1 ORDER BY 1", sak_id)
    assert [(r["source"], r["last_sequence"]) for r in last] == [
        ("urn:chain:kartlegging", 3), ("urn:no:mottak:1", 2), ("urn:no:udi", 1)
    ]


async def test_malformed_messages_are_dead_lettered_with_reason_and_good_ones_flow(bosetting):
    await bosetting.dead_letters()  # start from an empty DLQ
    sak_id = new_sak_id()
    good = envelope_for(vedtak(), sak_id, UDI, 1)
    broken_data = good.model_copy(update={"data": {**good.data, "personar": []}})
    unknown = good.model_copy(update={"type": "vedtak.ukjent"})
    for bad in (b"not json at all", b'{"specversion": "1.0"}', unknown, broken_data):
        await bosetting.publish(bad)
    await bosetting.publish(good)

    await eventually(lambda: sak_row(bosetting, sak_id))
    letters = await eventually(lambda: _n_dead_letters(bosetting, 4))
    reasons = [m.headers["x-error-reason"] for m in letters]
    assert all(m.headers["x-error-kind"] == "invalid" for m in letters)
    assert all(m.headers["x-failed-queue"] == "test.bosetting" for m in letters)
    assert any("json_invalid" in r for r in reasons)
    assert any("event type not in the catalogue" in r for r in reasons)
    assert any("personar: too_short" in r for r in reasons)


_collected: list = []


async def _n_dead_letters(h, n):
    _collected.extend(await h.dead_letters())
    if len(_collected) >= n:
        letters = _collected[:]
        _collected.clear()
        return letters
    return None


async def test_a_sequence_gap_that_never_closes_ends_in_the_dlq(bosetting):
    await bosetting.dead_letters()
    sak_id = new_sak_id()
    await bosetting.publish(envelope_for(vedtak(), sak_id, UDI, 1))
    moved = MottakStatusEndret(mottak_id="mottak-02", status="flytta", dato="2023-05-01")
    await bosetting.publish(envelope_for(moved, sak_id, "urn:no:mottak:2", 2))  # its sequence 1 is lost
    [letter] = await eventually(lambda: _n_dead_letters(bosetting, 1), timeout=20)
    assert letter.headers["x-error-kind"] == "retries_exhausted"
    assert "SequenceGap: expected sequence 1, got 2" in letter.headers["x-error-reason"]
    assert (await sak_row(bosetting, sak_id))["mottak_id"] == "mottak-01"  # not applied early


async def test_a_rejected_event_is_dead_lettered_at_once(bosetting):
    await bosetting.dead_letters()
    sak_id = new_sak_id()
    await bosetting.publish(envelope_for(vedtak(), sak_id, UDI, 1))
    await eventually(lambda: sak_row(bosetting, sak_id))
    await bosetting.publish(envelope_for(vedtak(), sak_id, UDI, 2))  # a second, different vedtak for the case
    [letter] = await eventually(lambda: _n_dead_letters(bosetting, 1))
    assert letter.headers["x-error-kind"] == "rejected"
    assert letter.headers["x-attempt"] == 0


async def test_an_envelope_without_an_id_is_dead_lettered_not_given_one(bosetting):
    """Bug: a missing id was filled with a fresh one at parse, so each redelivery of the
    same message looked new to the inbox and would be applied again."""
    await bosetting.dead_letters()
    good = envelope_for(vedtak(), new_sak_id(), UDI, 1)
    for missing in ("id", "specversion"):
        await bosetting.publish(json.dumps({k: v for k, v in json.loads(good.model_dump_json()).items() if k != missing}).encode())
    letters = await eventually(lambda: _n_dead_letters(bosetting, 2))
    assert sorted(m.headers["x-error-reason"] for m in letters) == ["ValueError: missing id", "ValueError: missing specversion"]
    assert await sak_row(bosetting, good.subject) is None


async def test_data_the_database_refuses_is_dead_lettered_at_once_not_retried(env):
    """A NUL in text (PostgreSQL cannot store it) fails the same way at every attempt."""

    async def stores(uow, envelope, data) -> None:
        await uow.conn.execute("SELECT $1::text", "a\x00b")

    async with river_harness(env, "kompetanse", {"vedtak.fattet": stores}) as h:
        await h.dead_letters()
        await h.publish(envelope_for(vedtak(), new_sak_id(), UDI, 1))
        [letter] = await eventually(lambda: _n_dead_letters(h, 1))
        assert letter.headers["x-error-kind"] == "invalid"
        assert letter.headers["x-attempt"] == 0
        assert "a\x00b" not in letter.headers["x-error-reason"]
        assert h.river.stats.retried == 0
