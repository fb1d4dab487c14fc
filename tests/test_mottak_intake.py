"""The inbound contract for mottak systems, against the running chain: their own broker
user confined to `mottak.*` events on the intake exchange, kartlegging's validation of
the intake queue, the HTTP intake, and a flood of malformed messages that stays in the
intake queue's DLQ while the chain's own traffic and the good ones flow."""

import time
from datetime import date

import aio_pika
import httpx
import pytest
from aio_pika.exceptions import ChannelClosed
from aiormq.exceptions import ChannelAccessRefused

from shared.catalogue import MottakStatusEndret, SaerlegeBehovFlagga
from shared.envelope import CONTENT_TYPE
from shared.publish import envelope_for, publish_envelope
from shared.topology import EVENTS, MOTTAK_INN
from sim.tilgang import legg_til_mottak
from tests.conftest import eventually, purge_dead_letters
from tests.events import UDI, new_sak_id, vedtak

pytestmark = pytest.mark.usefixtures("chain")

MOTTAK = "mottak-test-1"
SECRET = "Kari Nordmann 01019912345"


@pytest.fixture(scope="module", autouse=True)
async def _clean_up_dead_letters(env):
    """This module dead-letters on purpose (a thousand malformed messages among them)."""
    yield
    await purge_dead_letters(env)


@pytest.fixture(scope="module")
def tilgang(env):
    return legg_til_mottak(env.settings(), MOTTAK)


async def _household(env) -> tuple[str, list[str]]:
    """A household living at our mottak, known to bosetting."""
    v = vedtak(n_adults=2, n_children=1, mottak_id=MOTTAK)
    sak_id = new_sak_id()
    connection = await aio_pika.connect(env.settings().amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await publish_envelope(await channel.get_exchange(EVENTS), envelope_for(v, sak_id, UDI, 1))
    await eventually(lambda: _sak(env, sak_id))
    return sak_id, [p.person_id for p in v.personar]


async def _sak(env, sak_id: str) -> dict | None:
    async with httpx.AsyncClient(base_url=env.url("bosetting")) as http:
        r = await http.get(f"/saker/{sak_id}", headers={"Authorization": f"Bearer {env.token('imdi:test')}"})
        return r.json() if r.status_code == 200 else None


async def _flagged(env, sak_id: str) -> bool:
    sak = await _sak(env, sak_id)
    return bool(sak) and any(p["saerlege_behov"] for p in sak["personar"])


def _flag(person_id: str) -> SaerlegeBehovFlagga:
    return SaerlegeBehovFlagga(mottak_id=MOTTAK, person_id=person_id, behov=["tilrettelagt_bustad"], dato=date(2023, 3, 5))


async def _dead_letters(env, queue: str) -> int:
    connection = await aio_pika.connect(env.settings().amqp_url)
    async with connection:
        channel = await connection.channel()
        return (await channel.declare_queue(queue, passive=True)).declaration_result.message_count


# --- AMQP with the mottak's own credentials ----------------------------------------------


async def test_a_mottak_user_publishes_its_events_and_bosetting_applies_them(env, tilgang):
    sak_id, personar = await _household(env)
    connection = await aio_pika.connect(tilgang.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(MOTTAK_INN, ensure=False)
        source = f"urn:no:mottak:{MOTTAK}"
        await publish_envelope(exchange, envelope_for(_flag(personar[0]), sak_id, source, 1))
    sak = await eventually(lambda: _flagged(env, sak_id))
    assert sak


@pytest.mark.parametrize(
    ("exchange_name", "routing_key"),
    [(MOTTAK_INN, "vedtak.fattet"), (MOTTAK_INN, "bosetting.bosatt"), (EVENTS, "mottak.status_endret"), (EVENTS, "vedtak.fattet")],
)
async def test_a_mottak_user_cannot_publish_other_events_or_on_the_chains_exchange(env, tilgang, exchange_name, routing_key):
    connection = await aio_pika.connect(tilgang.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(exchange_name, ensure=False)
        with pytest.raises((ChannelAccessRefused, ChannelClosed)) as refused:
            await exchange.publish(aio_pika.Message(b"{}", content_type=CONTENT_TYPE), routing_key=routing_key)
        assert "ACCESS_REFUSED" in str(refused.value) or isinstance(refused.value, ChannelAccessRefused)


async def test_the_intake_dead_letters_an_event_claiming_another_mottak(env, tilgang):
    sak_id, personar = await _household(env)
    before = await _dead_letters(env, "kartlegging.mottak-inn.dlq")
    connection = await aio_pika.connect(tilgang.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(MOTTAK_INN, ensure=False)
        await publish_envelope(exchange, envelope_for(_flag(personar[0]), sak_id, "urn:no:mottak:mottak-other", 1))
    await eventually(lambda: _dlq_grew(env, "kartlegging.mottak-inn.dlq", before + 1))
    assert not await _flagged(env, sak_id)


async def test_a_mottak_user_can_neither_declare_nor_read_queues(env, tilgang):
    connection = await aio_pika.connect(tilgang.amqp_url)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(ChannelAccessRefused):
            await channel.declare_queue("mottak-spy", exclusive=True)
        channel = await connection.channel()
        with pytest.raises(ChannelAccessRefused):
            queue = await channel.get_queue("bosetting", ensure=False)
            await queue.consume(_ignore)


async def _ignore(message) -> None:
    pass


async def _consume(channel, queue: str, **arguments) -> None:
    await channel.set_qos(prefetch_count=10)
    await (await channel.get_queue(queue, ensure=False)).consume(_ignore, arguments=arguments or None)


@pytest.mark.parametrize(
    ("what", "attempt"),
    [
        ("read the event log", lambda ch: _consume(ch, "chain.eventlog", **{"x-stream-offset": "first"})),
        ("read its own intake queue", lambda ch: _consume(ch, "kartlegging.mottak-inn")),
        ("read the intake's dead letters", lambda ch: _consume(ch, "kartlegging.mottak-inn.dlq")),
        ("read another queue's dead letters", lambda ch: _consume(ch, "bosetting.dlq")),
        ("get a message from a service queue", lambda ch: _get(ch, "kompetanse")),
        ("publish straight to the intake queue, past the exchange", lambda ch: _publish(ch, "", "kartlegging.mottak-inn")),
        ("publish straight to a service queue", lambda ch: _publish(ch, "", "bosetting")),
        ("publish to the dead-letter exchange", lambda ch: _publish(ch, "chain.dlx", "bosetting")),
        ("bind the intake exchange to a queue of its choosing", lambda ch: _bind(ch, "bosetting", MOTTAK_INN, "mottak.#")),
    ],
)
async def test_a_mottak_user_reads_nothing_and_writes_only_to_its_intake(env, tilgang, what, attempt):
    """The mottak system's user may publish `mottak.*` to `mottak.inn` (the test above),
    and nothing else: no queue of the chain's to read, no way around the intake."""
    connection = await aio_pika.connect(tilgang.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        with pytest.raises((ChannelAccessRefused, ChannelClosed)) as refused:
            await attempt(channel)
            await channel.close()  # a refused publish surfaces when the channel closes
        assert "ACCESS_REFUSED" in str(refused.value) or isinstance(refused.value, ChannelAccessRefused), what


async def _get(channel, queue: str) -> None:
    await (await channel.get_queue(queue, ensure=False)).get(fail=False, timeout=5)


async def _publish(channel, exchange: str, routing_key: str) -> None:
    target = channel.default_exchange if exchange == "" else await channel.get_exchange(exchange, ensure=False)
    await target.publish(aio_pika.Message(b"{}", content_type=CONTENT_TYPE), routing_key=routing_key)


async def _bind(channel, queue: str, exchange: str, key: str) -> None:
    await (await channel.get_queue(queue, ensure=False)).bind(exchange, key)


# --- HTTP intake on kartlegging ----------------------------------------------------------


async def test_http_intake_puts_the_event_on_the_bus(env, tilgang):
    sak_id, personar = await _household(env)
    body = {"type": "mottak.saerlege_behov_flagga", "sak_id": sak_id, "data": _flag(personar[1]).model_dump(mode="json")}
    async with httpx.AsyncClient(base_url=env.url("kartlegging")) as http:
        r = await http.post(f"/mottak/{MOTTAK}/hendingar", json=body, headers={"Authorization": f"Bearer {tilgang.http_token}"})
    assert r.status_code == 202, r.text
    assert r.json()["type"] == "mottak.saerlege_behov_flagga"
    await eventually(lambda: _flagged(env, sak_id))


async def test_http_intake_refuses_other_mottak_and_missing_tokens(env, tilgang):
    body = {"type": "mottak.status_endret", "sak_id": new_sak_id(),
            "data": MottakStatusEndret(mottak_id=MOTTAK, status="flytta", dato=date(2023, 4, 1)).model_dump(mode="json")}
    other = env.token("mottak:mottak-other")
    async with httpx.AsyncClient(base_url=env.url("kartlegging")) as http:
        assert (await http.post(f"/mottak/{MOTTAK}/hendingar", json=body)).status_code == 401
        r = await http.post(f"/mottak/{MOTTAK}/hendingar", json=body, headers={"Authorization": f"Bearer {other}"})
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
        forged = tilgang.http_token[:-4] + "AAAA"
        assert (await http.post(f"/mottak/{MOTTAK}/hendingar", json=body, headers={"Authorization": f"Bearer {forged}"})).status_code == 401


async def test_http_intake_bad_data_is_422_naming_fields_without_echo(env, tilgang):
    headers = {"Authorization": f"Bearer {tilgang.http_token}"}
    bad = [
        {"type": "mottak.saerlege_behov_flagga", "sak_id": new_sak_id(),
         "data": {"mottak_id": MOTTAK, "person_id": SECRET, "behov": [SECRET], "dato": "2023-03-05"}},
        {"type": "mottak.status_endret", "sak_id": new_sak_id(), "data": {"mottak_id": MOTTAK, "status": SECRET}},
        {"type": SECRET, "sak_id": new_sak_id(), "data": {}},
        {"type": "mottak.status_endret", "sak_id": SECRET, "data": {}},
    ]
    async with httpx.AsyncClient(base_url=env.url("kartlegging")) as http:
        for body in bad:
            r = await http.post(f"/mottak/{MOTTAK}/hendingar", json=body, headers=headers)
            assert r.status_code == 422, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["errors"] and "Kari" not in r.text and "01019912345" not in r.text
        # data about another mottak's resident is refused too
        body = {"type": "mottak.status_endret", "sak_id": new_sak_id(),
                "data": {"mottak_id": "mottak-other", "status": "flytta", "dato": "2023-04-01"}}
        assert (await http.post(f"/mottak/{MOTTAK}/hendingar", json=body, headers=headers)).status_code == 422


# --- a flood of malformed input ----------------------------------------------------------


async def test_a_thousand_malformed_messages_neither_stop_nor_lose_the_good_ones(env, tilgang):
    """1,000 malformed messages from a mottak system, then its good ones, while UDI's
    vedtak keep coming: every good event is applied, every bad one is dead-lettered in the
    intake queue's DLQ, and the chain's own queues never see one. The times are printed for
    the notes (timing targets live in bench/, not in tests)."""
    calm = [await _household(env) for _ in range(10)]
    flooded = [await _household(env) for _ in range(10)]
    before_intake = await _dead_letters(env, "kartlegging.mottak-inn.dlq")
    before_bosetting = await _dead_letters(env, "bosetting.dlq")
    garbage = [
        b"not json at all",
        b'{"specversion": "1.0"}',
        b'{"specversion":"1.0","id":"x","source":"urn:no:mottak:x","type":"mottak.status_endret"}',
    ]
    connection = await aio_pika.connect(tilgang.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(MOTTAK_INN, ensure=False)
        calm_time = await _publish_good_and_wait(env, exchange, calm)
        for i in range(1000):
            await exchange.publish(
                aio_pika.Message(garbage[i % len(garbage)], content_type=CONTENT_TYPE), routing_key="mottak.status_endret"
            )
        udi_started = time.monotonic()
        await _household(env)  # UDI's vedtak, right behind the flood, reaches bosetting
        udi_time = time.monotonic() - udi_started
        flood_time = await _publish_good_and_wait(env, exchange, flooded)
    print(f"\n10 good mottak events applied in {calm_time:.2f}s alone, {flood_time:.2f}s behind 1,000 malformed;"
          f" a UDI vedtak during the flood reached bosetting in {udi_time:.2f}s")
    await eventually(lambda: _dlq_grew(env, "kartlegging.mottak-inn.dlq", before_intake + 1000))
    assert await _dead_letters(env, "bosetting.dlq") == before_bosetting


async def _publish_good_and_wait(env, exchange, households) -> float:
    started = time.monotonic()
    for sak_id, personar in households:
        await publish_envelope(exchange, envelope_for(_flag(personar[0]), sak_id, f"urn:no:mottak:{MOTTAK}", 1))

    async def all_flagged():
        return all([await _flagged(env, sak_id) for sak_id, _ in households])

    await eventually(all_flagged, timeout=60)
    return time.monotonic() - started


async def _dlq_grew(env, queue: str, at_least: int) -> bool:
    return await _dead_letters(env, queue) >= at_least
