"""The whole chain as processes (three services, three relays) on the real broker and
database, driven by the simulator acting as UDI, mottak and kommunar."""

import asyncio

import aio_pika
import asyncpg
import httpx
import pytest

from shared.publish import envelope_for, publish_envelope, publish_raw
from shared.topology import EVENTS
from sim.actors import UDI, Simulator
from sim.demo import kommunar
from sim.workload import households
from tests.conftest import eventually

pytestmark = pytest.mark.usefixtures("chain")


async def run_households(env, workload, rate: float = 50.0, during=None, timeout: float = 120.0) -> Simulator:
    async with Simulator(env, workload) as sim:
        await sim.decide_capacity(kommunar())
        arrivals = asyncio.create_task(sim.publish_vedtak(rate))
        if during is not None:
            await during(sim)
        await eventually(lambda: _done(sim), timeout=timeout, interval=0.25)
        await arrivals
        return sim


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
    workload = households(30, seed=11, kommunar=[k for k, _ in kommunar()])
    sim = await run_households(env, workload)
    assert not sim.errors
    ids = [h.sak_id for h in workload]
    conn = await db(env, "bosetting")
    try:
        statuses = await conn.fetch("SELECT status, count(*) FROM sak WHERE sak_id = ANY($1) GROUP BY 1", ids)
        assert {r["status"]: r["count"] for r in statuses} == {"bosatt": 30}
    finally:
        await conn.close()

    # kompetanse built a profile from the mapping events and serves it, audited
    person = next(p for h in workload for p in h.vedtak.personar if h.vedtak.vedtaksdato.year - p.fodselsar >= 18)
    token = env.settings().kompetanse_token
    async with httpx.AsyncClient(base_url=env.url("kompetanse")) as http:
        url = f"/personar/{person.person_id}/kompetanse"
        denied = await http.get(url, params={"formal": "oppfolging"})
        assert denied.status_code == 401
        assert denied.headers["content-type"] == "application/problem+json"
        profile = await eventually(lambda: _profile(http, url, token))
    assert profile["utdanning"]["niva"]
    assert profile["bosatt"] is True
    conn = await db(env, "kompetanse")
    try:
        assert await conn.fetchval(
            "SELECT count(*) FROM tilgangslogg WHERE person_id = $1 AND utfall = 'served'", person.person_id
        ) >= 1
    finally:
        await conn.close()


async def _profile(http, url, token):
    r = await http.get(url, params={"formal": "oppfolging"}, headers={"Authorization": f"Bearer {token}"})
    return r.json() if r.status_code == 200 and r.json().get("bosatt") else None


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
        # both consumers of vedtak.fattet dead-lettered the bad one, with the reason in headers
        after = await eventually(lambda: _grew(env, before, ("kartlegging", "bosetting")))
        assert after["kompetanse"] == before["kompetanse"]
        dlq = await channel.declare_queue("bosetting.dlq", passive=True)
        letter = await dlq.get()
        await letter.nack(requeue=True)
        assert letter.headers["x-error-kind"] == "invalid"
        assert "Field required" in letter.headers["x-error-reason"] or "missing" in letter.headers["x-error-reason"]
        assert letter.headers["x-original-routing-key"] == "vedtak.fattet"


async def _grew(env, before, services):
    now = await dlq_depths(env)
    return now if all(now[s] > before[s] for s in services) else None


async def test_sigkill_mid_stream_loses_nothing(env, chain):
    workload = households(300, seed=13, kommunar=[k for k, _ in kommunar()])
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
    persons = sum(h.persons for h in workload)
    conn = await db(env, "bosetting")
    try:
        assert await conn.fetchval("SELECT count(*) FROM sak WHERE sak_id = ANY($1) AND status = 'bosatt'", ids) == 300
        # each household settled exactly once: one bosatt event per case in the outbox
        per_case = await conn.fetch(
            "SELECT subject, count(*) FROM outbox WHERE type = 'bosetting.bosatt' AND subject = ANY($1) GROUP BY 1", ids
        )
        assert len(per_case) == 300 and all(r["count"] == 1 for r in per_case)
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL AND subject = ANY($1)", ids) == 0
    finally:
        await conn.close()
    # kompetanse consumes bosatt after the simulator saw it: wait for it to catch up
    settled = [p.person_id for h in workload for p in h.vedtak.personar]

    async def kompetanse_settled():
        conn = await db(env, "kompetanse")
        try:
            n = await conn.fetchval("SELECT count(*) FROM profil WHERE bosatt AND person_id = ANY($1)", settled)
            return n == persons or None
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
