"""Partners (drift/partner.py, `chain partner ...`) against the real broker: the command
makes the partner's user, queue and bindings and nothing else, idempotently; the user can
consume its own queue and do nothing else; event types a partner may not have are
refused; and the example subscriber (examples/subscriber.py, plain aio-pika) receives
exactly the events the partner is entitled to, once each."""

import ast
import asyncio
import dataclasses
import json
import os
import re
import secrets
import signal
import sys
from datetime import date
from pathlib import Path

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused, ChannelClosed
from typer.testing import CliRunner

from drift import partner
from shared.catalogue import (
    CATALOGUE,
    AvtaleInngatt,
    Avslatt,
    Bosatt,
    Fordelt,
    KapasitetRapportert,
    Karriererettleiing,
    Kategori,
    Trukke,
)
from shared.config import settings
from shared.publish import envelope_for, publish_envelope
from shared.topology import EVENTS
from sim.cli import app
from tests.events import UDI, new_sak_id, vedtak

ROOT = Path(__file__).resolve().parent.parent
SUBSCRIBER = ROOT / "examples" / "subscriber.py"
# RabbitMQ users are broker-wide: a name of this run's own, so concurrent runs never meet.
NAME = f"t{secrets.token_hex(4)}"
ENTITLED = ["bosetting.bosatt", "bosetting.trukke", "kommune.kapasitet_rapportert"]
PERSON = "p-" + "ab" * 10


@pytest.fixture(scope="module")
async def added(env):
    """The partner, added once for the module (the command's output as a dict), removed after."""
    cfg = env.settings()
    p = await partner.add(cfg, NAME, [",".join(ENTITLED[:2]), ENTITLED[2]])
    yield p
    await partner.remove(cfg, NAME)
    assert NAME not in {u["user"].removeprefix("partner-") for u in partner._json("list_users")}


@pytest.fixture
def cli_env(env):
    """`--env` changes os.environ and the settings: restore both after the test."""
    saved = dict(os.environ)
    yield ["--env", env.name]
    os.environ.clear()
    os.environ.update(saved)
    settings.cache_clear()


async def _can_log_in(url: str) -> bool:
    connection = await aio_pika.connect(url)
    await connection.close()
    return True


def _details(output: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+): (.*)$", output, re.M))


# --- entitlements as data ---------------------------------------------------------------------


def test_every_catalogue_event_is_offered_or_withheld_and_offered_ones_carry_no_free_text():
    ent = partner.entitlements()
    names = {et.name for et in CATALOGUE.values()}
    assert names == ent.offered.keys() | ent.withheld.keys(), "classify every event in drift/partner.toml"
    assert {"kartlegging.karriererettleiing", "vedtak.fattet", "kartlegging.fullfort"} <= ent.withheld.keys()
    problems = [p for et in CATALOGUE.values() if et.name in ent.offered for p in partner.schema_problems(et, ent)]
    assert problems == []


@pytest.mark.parametrize("event", ["kartlegging.karriererettleiing", "vedtak.fattet", "bosetting.avslatt", "bosetting.fordelt"])
def test_the_schema_guard_would_catch_a_withheld_event_offered_by_mistake(event):
    ent = partner.entitlements()
    mistaken = dataclasses.replace(ent, offered=ent.offered | {event: partner.Offer(event, "case", "by mistake")})
    et = next(et for et in CATALOGUE.values() if et.name == event)
    assert partner.schema_problems(et, mistaken), f"{event} would have gone to partners unnoticed"


def test_requested_types_are_checked_and_normalised():
    assert partner.check_events(["bosetting.trukke,bosetting.bosatt", " bosetting.trukke"]) == ["bosetting.bosatt", "bosetting.trukke"]
    with pytest.raises(partner.Refused, match="kartlegging.karriererettleiing is not for partners: the county's free-text"):
        partner.check_events(["bosetting.bosatt", "kartlegging.karriererettleiing"])
    with pytest.raises(partner.Refused, match="bosetting.finst is not an event type in the catalogue"):
        partner.check_events(["bosetting.finst"])
    with pytest.raises(partner.Refused, match="at least one"):
        partner.check_events([","])
    for bad in ("Acme", "acme_x", "-acme", "a" * 41, "acme.x"):
        with pytest.raises(partner.Refused, match="partner name"):
            partner.names(bad)


# --- the command against the broker -----------------------------------------------------------


async def test_add_makes_the_user_its_queue_and_the_bindings(env, added):
    vhost = env.name
    assert (added.user, added.queue, added.vhost, added.events) == (f"partner-{NAME}", f"partner.{NAME}", vhost, sorted(ENTITLED))
    assert added.password and added.changes[0] == f"created user {added.user}"
    rows = partner._json("list_user_permissions", added.user)
    assert [(r["vhost"], r["configure"], r["write"], r["read"]) for r in rows] == [(vhost, "^$", "^$", rf"^partner\.{NAME}$")]
    assert partner._json("list_user_topic_permissions", added.user) == []
    queues = partner._json("list_queues", "-p", vhost, "name", "type", "durable", "arguments")
    (queue,) = [q for q in queues if q["name"] == added.queue]
    assert queue["type"] == "quorum" and queue["durable"] is True
    assert partner._bound(vhost, added.queue) == set(ENTITLED)


def test_running_it_again_changes_nothing(env, added, cli_env):
    runner = CliRunner()
    result = runner.invoke(app, ["partner", "add", NAME, "--events", ",".join(reversed(ENTITLED)), *cli_env])
    assert result.exit_code == 0, result.output
    assert "# nothing to change" in result.stderr
    details = _details(result.stdout)
    assert details["user"] == added.user and details["queue"] == added.queue and details["vhost"] == env.name
    assert details["host"] == "127.0.0.1" and details["port"] == "5672"
    assert details["password"].startswith("(unchanged")  # the partner's password still works:
    assert asyncio.run(_can_log_in(added.amqp_url))
    assert partner._bound(env.name, added.queue) == set(ENTITLED)


def test_events_a_partner_may_not_have_are_refused_and_nothing_changes(env, added, cli_env):
    runner = CliRunner()
    for events, reason in (
        (["bosetting.bosatt", "kartlegging.karriererettleiing"], "kartlegging.karriererettleiing is not for partners"),
        (["vedtak.fattet"], "vedtak.fattet is not for partners"),
        (["bosetting.finst"], "bosetting.finst is not an event type in the catalogue"),
    ):
        result = runner.invoke(app, ["partner", "add", NAME, *[a for e in events for a in ("--events", e)], *cli_env])
        assert result.exit_code == 2, result.output
        assert reason in result.stderr and "password" not in result.stdout
    assert partner._bound(env.name, added.queue) == set(ENTITLED)


async def test_other_events_rebind_the_queue_to_exactly_those(env, added):
    cfg = env.settings()
    changed = await partner.add(cfg, NAME, ["bosetting.bosatt", "bosetting.avtale_inngatt"])
    try:
        assert changed.password is None
        assert changed.changes == ["bound bosetting.avtale_inngatt", "unbound bosetting.trukke", "unbound kommune.kapasitet_rapportert"]
        assert partner._bound(env.name, added.queue) == {"bosetting.bosatt", "bosetting.avtale_inngatt"}
    finally:
        back = await partner.add(cfg, NAME, ENTITLED)
    assert partner._bound(env.name, added.queue) == set(ENTITLED) and back.password is None


async def test_the_partner_reads_its_queue_and_is_refused_everything_else(env, added):
    cfg = env.settings()
    other = f"partner.{NAME}-other"
    operator = await aio_pika.connect(cfg.amqp_url)
    await (await operator.channel()).declare_queue(other, durable=True, arguments={"x-queue-type": "quorum"})
    connection = await aio_pika.connect(added.amqp_url)
    try:
        channel = await connection.channel()
        own = await channel.get_queue(added.queue, ensure=False)
        await own.get(fail=False, timeout=5)  # allowed (empty here)
        await own.declare()  # a passive check of its own queue is allowed too ...

        async def read_other(ch):
            await (await ch.get_queue(other, ensure=False)).get(fail=False, timeout=5)

        async def publish_event(ch):
            exchange = await ch.get_exchange(EVENTS, ensure=False)
            await exchange.publish(aio_pika.Message(b"{}"), routing_key="bosetting.bosatt")

        async def publish_to_own_queue(ch):
            await ch.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=added.queue)

        async def read_log(ch):
            await ch.set_qos(prefetch_count=10)
            async def ignore(message):
                pass

            await (await ch.get_queue("chain.eventlog", ensure=False)).consume(ignore, arguments={"x-stream-offset": "first"})

        async def publish_to_mottak_intake(ch):
            exchange = await ch.get_exchange("mottak.inn", ensure=False)
            await exchange.publish(aio_pika.Message(b"{}"), routing_key="mottak.status_endret")

        async def read_dead_letters(ch):
            await (await ch.get_queue("bosetting.dlq", ensure=False)).get(fail=False, timeout=5)

        async def bind_more(ch):
            await (await ch.get_queue(added.queue, ensure=False)).bind(EVENTS, "vedtak.fattet")

        for name, attempt in (
            ("read another queue", read_other),
            ("read the event log", read_log),
            ("publish to the events exchange", publish_event),
            ("publish to its own queue", publish_to_own_queue),
            ("publish on the mottak intake", publish_to_mottak_intake),
            ("read a DLQ", read_dead_letters),
            ("declare a queue", lambda ch: ch.declare_queue(f"partner.{NAME}-mine", durable=True)),
            ("declare its own queue afresh", lambda ch: ch.declare_queue(added.queue, durable=True, arguments={"x-queue-type": "quorum"})),
            ("bind its queue to more events", bind_more),
        ):
            ch = await connection.channel(publisher_confirms=True)
            with pytest.raises((ChannelAccessRefused, ChannelClosed)) as refused:
                await attempt(ch)
                await ch.close()  # a refused publish surfaces when the channel closes
            assert "ACCESS_REFUSED" in str(refused.value) or isinstance(refused.value, ChannelAccessRefused), name
    finally:
        await connection.close()
        await (await operator.channel()).queue_delete(other)
        await operator.close()
    assert partner._bound(env.name, added.queue) == set(ENTITLED)


# --- the example subscriber -------------------------------------------------------------------


def test_the_example_uses_plain_aio_pika_and_nothing_of_ours():
    tree = ast.parse(SUBSCRIBER.read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - sys.stdlib_module_names == {"aio_pika"}


def _events() -> tuple[list, list]:
    """Entitled and not-entitled events, as the chain's producers publish them."""
    sak = new_sak_id()
    bosetting = "urn:chain:bosetting"
    entitled = [
        envelope_for(Trukke(arsak="utreist", kommunenummer="0301"), sak, bosetting, 7),
        envelope_for(
            KapasitetRapportert(kommunenummer="0301", dato=date(2023, 3, 1), ledige_bustader=12, tek_imot=True), "kommune-0301", "urn:chain:kommune", 1
        ),
        envelope_for(
            Bosatt(kommunenummer="4601", busetjingsdato=date(2023, 9, 1), kategori=Kategori.vaksen, personar=[PERSON], vedtaksdato=date(2023, 3, 1), tal_personar=1),
            new_sak_id(), bosetting, 5,
        ),
    ]
    others = [
        envelope_for(vedtak(), new_sak_id(), UDI, 1),
        envelope_for(Fordelt(reg_nummer="REG-1234", kommunenummer="0301", kategori=Kategori.vaksen, personar=[PERSON]), sak, bosetting, 5),
        envelope_for(Avslatt(kommunenummer="0301", grunn="ingen bustad"), sak, bosetting, 6),
        envelope_for(Karriererettleiing(person_id=PERSON, fylkesnummer="46", dato=date(2023, 4, 1), notat="fritekst om personen"), sak, "urn:chain:kartlegging", 3),
        envelope_for(AvtaleInngatt(kommunenummer="0301", busetjingsdato=date(2023, 5, 1)), sak, bosetting, 8),  # offered, not entitled
    ]
    return entitled, others


async def _publish(cfg, envelopes) -> None:
    connection = await aio_pika.connect(cfg.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS)
        for e in envelopes:
            await publish_envelope(exchange, e)


async def _run_subscriber(added, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """examples/subscriber.py as a partner runs it: its own process, the partner's details in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAIN_")} | {
        "PARTNER_HOST": added.host, "PARTNER_PORT": str(added.port), "PARTNER_VHOST": added.vhost,
        "PARTNER_USER": added.user, "PARTNER_PASSWORD": added.password, "PARTNER_QUEUE": added.queue,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SUBSCRIBER), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def _depth(cfg, queue: str) -> int:
    connection = await aio_pika.connect(cfg.amqp_url)
    async with connection:
        return (await (await connection.channel()).declare_queue(queue, passive=True)).declaration_result.message_count


def _printed(out: str) -> list[tuple[str, str]]:
    """(type, id) of each printed event line: `<time> <type> v<n> <subject> <id> <data>`."""
    return [(line.split(" ")[1], line.split(" ")[4]) for line in out.splitlines()]


async def test_the_example_subscriber_prints_exactly_the_entitled_events_once(env, added, tmp_path):
    cfg = env.settings()
    entitled, others = _events()
    seen = tmp_path / "seen"
    # interleaved, with one entitled event published twice (a redelivery, as after a lost ack)
    await _publish(cfg, [others[0], entitled[0], others[1], entitled[1], entitled[0], others[2], others[3], others[4], entitled[2]])
    rc, out, err = await _run_subscriber(added, "--max", "3", "--seen", str(seen))
    assert rc == 0, err
    assert _printed(out) == [(e.type, str(e.id)) for e in entitled], out
    line = out.splitlines()[2].split(" ", 5)
    assert line[2] == "v1" and json.loads(line[5])["personar"] == [PERSON]
    assert "stopped after 3 events" in err
    assert await _depth(cfg, added.queue) == 0  # the duplicate was acknowledged, the others never arrived
    # Later: the operator replays an old event to the partner, and a new one arrives.
    late = envelope_for(Trukke(arsak="anna"), new_sak_id(), "urn:chain:bosetting", 2)
    await _publish(cfg, [entitled[1], late])
    rc, out, err = await _run_subscriber(added, "--max", "1", "--seen", str(seen))
    assert rc == 0, err
    assert _printed(out) == [(late.type, str(late.id))]


async def test_the_example_subscriber_drops_a_message_that_is_not_an_event(env, added):
    cfg = env.settings()
    connection = await aio_pika.connect(cfg.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS)
        await exchange.publish(aio_pika.Message(b'{"specversion": "0.3"}', message_id="broken-1"), routing_key="bosetting.trukke")
    good = envelope_for(Trukke(arsak="utreist"), new_sak_id(), "urn:chain:bosetting", 1)
    await _publish(cfg, [good])
    rc, out, err = await _run_subscriber(added, "--max", "1")
    assert rc == 0, err
    assert _printed(out) == [(good.type, str(good.id))]
    assert "dropped an invalid message (broken-1): missing id" in err


async def test_the_example_subscriber_stops_cleanly_on_a_signal(env, added):
    env_vars = {k: v for k, v in os.environ.items() if not k.startswith("CHAIN_")} | {
        "PARTNER_AMQP_URL": added.amqp_url, "PARTNER_QUEUE": added.queue,
    }
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(SUBSCRIBER), env=env_vars, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert b"listening on" in await asyncio.wait_for(proc.stderr.readline(), 30)
        proc.send_signal(sig)
        rc = await asyncio.wait_for(proc.wait(), 30)
        rest = await proc.stderr.read()
        assert rc == 0 and b"stopped after 0 events" in rest, (sig, rc, rest)


async def test_the_example_subscriber_is_refused_another_partners_queue(env, added):
    rc, out, err = await _run_subscriber(added, "--queue", f"partner.{NAME}-x", "--max", "1")
    assert rc == 1 and "ACCESS_REFUSED" in err and out == ""


def test_the_events_command_lists_offered_and_withheld():
    result = CliRunner().invoke(app, ["partner", "events", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert {o["event"] for o in listed["offered"]} == partner.entitlements().offered.keys()
    assert "kartlegging.karriererettleiing" in listed["withheld"]
