"""The whole chain as processes (three services, three relays) on the real broker and
database, driven by the simulator acting as UDI, mottak, the IMDi caseworker (who confirms,
overrides and withdraws) and kommunar. A run is done when every case is settled or withdrawn."""

import asyncio
import json
from datetime import date

import aio_pika
import asyncpg
import httpx
import pytest

from shared.publish import envelope_for, publish_envelope, publish_raw
from shared.topology import EVENTS
from sim.actors import UDI, Simulator
from sim.demo import kommunar
from sim.workload import households, syntetisk_fodselsnummer, withdrawn
from tests.conftest import eventually, purge_dead_letters

pytestmark = pytest.mark.usefixtures("chain")


KOMMUNAR = [k for k, _, _ in kommunar()]


async def run_households(env, workload, rate: float = 50.0, during=None, timeout: float = 120.0) -> Simulator:
    async with Simulator(env, workload, kommunenummer=KOMMUNAR) as sim:
        await sim.decide_capacity(kommunar(), date.today().year)
        arrivals = asyncio.create_task(sim.publish_vedtak(rate))
        caseworker = asyncio.create_task(sim.caseworker(interval=0.25))
        try:
            if during is not None:
                await during(sim)
            await eventually(lambda: _done(sim), timeout=timeout, interval=0.25)
            await arrivals
        finally:
            caseworker.cancel()
        return sim


def outcome(workload) -> tuple[set[str], set[str]]:
    """The cases the run should settle, and those the caseworker withdraws (the workload decides)."""
    gone = {h.sak_id for h in workload if withdrawn(h.sak_id)}
    return {h.sak_id for h in workload} - gone, gone


async def _done(sim):
    return sim.done


async def db(env, service) -> asyncpg.Connection:
    return await asyncpg.connect(env.settings().database_url(service))


async def dlq_depths(env) -> dict[str, int]:
    connection = await aio_pika.connect(env.settings().amqp_url)
    async with connection:
        channel = await connection.channel()
        return {
            s: (await channel.declare_queue(f"{s}.dlq", passive=True)).declaration_result.message_count
            for s in ("kartlegging", "bosetting", "kompetanse")
        }


async def test_a_case_flows_from_vedtak_to_bosatt(env):
    workload = households(30, seed=11, kommunar=KOMMUNAR)
    sim = await run_households(env, workload)
    assert not sim.errors
    settle, gone = outcome(workload)
    assert sim.withdrawn_cases == gone
    ids = [h.sak_id for h in workload]
    conn = await db(env, "bosetting")
    try:
        rows = await conn.fetch("SELECT sak_id, status FROM sak WHERE sak_id = ANY($1)", ids)
        assert {r["sak_id"]: r["status"] for r in rows} == {s: "bosatt" for s in settle} | {s: "trukke" for s in gone}
        # every settled case was proposed by the optimiser and confirmed (or overridden) by the caseworker
        decided = await conn.fetchval(
            "SELECT count(DISTINCT sak_id) FROM forslag WHERE sak_id = ANY($1) AND status IN ('stadfesta', 'overstyrt')", ids
        )
        assert decided >= len(settle)
    finally:
        await conn.close()

    # kompetanse built a profile from the mapping events and serves it, audited
    settled = [h for h in workload if h.sak_id in settle]
    person = next(
        p for h in settled for p in h.vedtak.personar if h.vedtak.vedtaksdato.year - p.fodselsar >= 18 and not p.skjerma
    )
    token = env.maskinporten_token("0192:889640782", "imdi:kompetanse/nav")  # NAV
    async with httpx.AsyncClient(base_url=env.url("kompetanse")) as http:
        url = f"/personar/{person.person_id}/kompetanse"
        denied = await http.get(url, params={"formal": "arbeidsretta_oppfolging"})
        assert denied.status_code == 401
        assert denied.headers["content-type"] == "application/problem+json"
        profile = await eventually(lambda: _profile(http, url, token))
    assert profile["utdanning"]["niva"]
    assert set(profile) == {"person_id", "utdanning", "arbeid", "sprak", "karriererettleiing"}  # NAV's policy
    conn = await db(env, "kompetanse")
    try:
        await eventually(lambda: conn.fetchval("SELECT bosatt FROM profil WHERE person_id = $1", person.person_id))
        assert await conn.fetchval(
            "SELECT count(*) FROM tilgangslogg WHERE person_id = $1 AND utfall = 'served'", person.person_id
        ) >= 1
    finally:
        await conn.close()


async def test_no_fodselsnummer_in_any_log_event_or_outbox(env, chain):
    """The simulator registers a synthetic fødselsnummer for every person at kompetanse; after
    a run, none of them is in any service's or relay's log, outbox or the event-log stream."""
    workload = households(20, seed=21, kommunar=KOMMUNAR)
    await run_households(env, workload)
    numbers = {syntetisk_fodselsnummer(p.person_id, p.fodselsar) for h in workload for p in h.vedtak.personar}
    conn = await db(env, "kompetanse")
    try:  # they were registered (encrypted), so the test is not vacuous
        assert await conn.fetchval("SELECT count(*) FROM identitet WHERE person_id = ANY($1)", [p.person_id for h in workload for p in h.vedtak.personar]) == len(numbers)
    finally:
        await conn.close()
    logs = " ".join(f.read_text(errors="replace") for f in chain.log_dir.glob("*.log"))
    assert logs and not [n for n in numbers if n in logs]
    for service in ("kartlegging", "bosetting", "kompetanse"):
        conn = await db(env, service)
        try:
            bodies = await conn.fetchval("SELECT string_agg(body || coalesce(headers::text, ''), ' ') FROM outbox")
        finally:
            await conn.close()
        assert not [n for n in numbers if n in bodies], service
    stream = await _read_eventlog(env, 20_000)
    assert stream and not [n for n in numbers if n in stream]


async def _read_eventlog(env, limit: int) -> str:
    connection = await aio_pika.connect(env.settings().amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        queue = await channel.get_queue("chain.eventlog", ensure=False)
        bodies: list[str] = []
        async with queue.iterator(arguments={"x-stream-offset": "first"}, timeout=3) as messages:
            try:
                async for m in messages:
                    bodies.append(m.body.decode())
                    await m.ack()
                    if len(bodies) >= limit:
                        break
            except TimeoutError:
                pass
        return " ".join(bodies)


async def _profile(http, url, token):
    r = await http.get(url, params={"formal": "arbeidsretta_oppfolging"}, headers={"Authorization": f"Bearer {token}"})
    return r.json() if r.status_code == 200 else None


async def test_a_malformed_message_is_dead_lettered_and_the_next_good_one_flows(env):
    before = await dlq_depths(env)
    connection = await aio_pika.connect(env.settings().amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS)
        await publish_raw(exchange, "vedtak.fattet", b'{"specversion": "1.0", "type": "vedtak.fattet"}')
        good = households(1, seed=12, kommunar=["0301"])[0]
        await publish_envelope(exchange, envelope_for(good.vedtak, good.sak_id, UDI, 1))

        async def good_one_applied():
            conn = await db(env, "bosetting")
            try:
                return await conn.fetchval("SELECT status FROM sak WHERE sak_id = $1", good.sak_id)
            finally:
                await conn.close()

        await eventually(good_one_applied)
        # every consumer of vedtak.fattet dead-lettered the bad one, with the reason in headers
        await eventually(lambda: _grew(env, before, ("kartlegging", "bosetting", "kompetanse")))
        dlq = await channel.declare_queue("bosetting.dlq", passive=True)
        letter = await dlq.get()
        await letter.nack(requeue=True)
        assert letter.headers["x-error-kind"] == "invalid"
        assert "Field required" in letter.headers["x-error-reason"] or "missing" in letter.headers["x-error-reason"]
        assert letter.headers["x-original-routing-key"] == "vedtak.fattet"
    await purge_dead_letters(env)  # the malformed message, dead-lettered by every consumer


async def _grew(env, before, services):
    now = await dlq_depths(env)
    return now if all(now[s] > before[s] for s in services) else None


async def test_sigkill_mid_stream_loses_nothing(env, chain):
    workload = households(300, seed=13, kommunar=KOMMUNAR)
    settle, gone = outcome(workload)
    before = await dlq_depths(env)

    async def faults(sim):
        # Kill each kind of process while cases are in flight, then bring it back.
        for victims in (["bosetting", "kartlegging-relay"], ["kartlegging", "bosetting-relay"], ["kompetanse"]):
            await eventually(lambda: _progressed(sim, 60), timeout=60)
            for name in victims:
                chain.kill(name)
            await asyncio.sleep(0.5)
            for name in victims:
                chain.start(name)
            await chain.wait_ready([v for v in victims if not v.endswith("-relay")])

    sim = await run_households(env, workload, rate=60.0, during=faults, timeout=180)
    assert not sim.errors
    ids = [h.sak_id for h in workload]
    conn = await db(env, "bosetting")
    try:
        rows = await conn.fetch("SELECT sak_id, status FROM sak WHERE sak_id = ANY($1)", ids)
        assert {r["sak_id"]: r["status"] for r in rows} == {s: "bosatt" for s in settle} | {s: "trukke" for s in gone}
        # each household settled exactly once: one bosatt event per settled case in the outbox,
        # none for a withdrawn one (which has exactly one trukke)
        per_case = await conn.fetch(
            "SELECT subject, type, count(*) FROM outbox WHERE type IN ('bosetting.bosatt', 'bosetting.trukke')"
            " AND subject = ANY($1) GROUP BY 1, 2",
            ids,
        )
        assert {(r["subject"], r["type"]): r["count"] for r in per_case} == (
            {(s, "bosetting.bosatt"): 1 for s in settle} | {(s, "bosetting.trukke"): 1 for s in gone}
        )
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL AND subject = ANY($1)", ids) == 0
        # the persons kompetanse must see as settled: those in the bosatt events (corrections
        # included, protected identities never)
        settled = sorted({
            p for r in await conn.fetch("SELECT body FROM outbox WHERE type = 'bosetting.bosatt' AND subject = ANY($1)", ids)
            for p in json.loads(r["body"])["data"]["personar"]
        })
    finally:
        await conn.close()
    skjerma = {p.person_id for h in workload for p in h.vedtak.personar if p.skjerma}
    assert settled and not skjerma & set(settled)

    # kompetanse consumes bosatt after the simulator saw it: wait for it to catch up
    async def kompetanse_settled():
        conn = await db(env, "kompetanse")
        try:
            n = await conn.fetchval("SELECT count(*) FROM profil WHERE bosatt AND person_id = ANY($1)", settled)
            return n == len(settled) or None
        finally:
            await conn.close()

    await eventually(kompetanse_settled, timeout=30)
    # nothing was dead-lettered by the faults
    assert (await dlq_depths(env)) == before


async def _progressed(sim, step):
    target = getattr(sim, "_fault_mark", 0) + step
    if sim.counts["bosatt"] >= target:
        sim._fault_mark = sim.counts["bosatt"]
        return True
    return False
