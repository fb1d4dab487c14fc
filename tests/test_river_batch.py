"""The river's batches (group commit), against the real RabbitMQ and PostgreSQL: what is
in the queue when the river starts arrives in one batch, applied in one transaction.

The handler here records, for every event it applies, the transaction it ran in
(`txid_current()`), so a test sees which deliveries shared a commit; what a test wants
a delivery to do (fail, wait at a gate) it says per subject in `plan`."""

import asyncio
import contextlib
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aio_pika
import asyncpg
import pytest

from shared.catalogue import KartleggingStartet, Kartleggingstype, MottakStatusEndret
from shared.db import open_database
from shared.envelope import CONTENT_TYPE, Envelope
from shared.publish import envelope_for
from shared.river import NotReady, Rejected, River, UpTo
from shared.service import new_broker
from shared.topology import ServiceQueue, declare_all
from tests.conftest import eventually

QUEUE = ServiceQueue("test.batch", (), (50, 100, 200, 400))
MOTTAK = "urn:no:mottak:1"

Step = Callable[[asyncpg.Connection, Envelope], Awaitable[None]]


@dataclass
class Plan:
    """What the handler does, per subject, before it applies the event: raise, or wait
    at a gate. A step runs every time the handler does (a batch may run it twice: see
    River._apply_batch)."""

    steps: dict[str, Step] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)  # for `fails_while_blocked`

    async def run(self, conn: asyncpg.Connection, envelope: Envelope) -> None:
        if step := self.steps.get(envelope.subject):
            await step(conn, envelope)


plan = Plan()


async def record(uow, envelope: Envelope, data) -> None:
    """A real handler: a state row written before the plan may fail it (so a failure has
    something to undo), then one emitted event."""
    await uow.conn.execute(
        "INSERT INTO batch_applied (subject, sequence, txid) VALUES ($1, $2, txid_current())",
        envelope.subject, envelope.sequence,
    )
    await plan.run(uow.conn, envelope)
    await uow.emit(KartleggingStartet(kartleggingstype=Kartleggingstype.ordinaer, personar=[]), envelope.subject)


def raises(exc: Exception) -> Step:
    async def step(conn, envelope):
        raise exc

    return step


def fails_while_blocked(exc: Exception) -> Step:
    async def step(conn, envelope):
        if envelope.subject in plan.blocked:
            raise exc

    return step


@dataclass
class Gate:
    """Holds the delivery at the gate (its batch open, the deliveries before it applied)
    until released; knows the database session the batch runs in."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    backend_pid: int = 0

    async def __call__(self, conn, envelope):
        self.backend_pid = await conn.fetchval("SELECT pg_backend_pid()")
        self.reached.set()
        await self.released.wait()


@dataclass
class Bench:
    env: object
    pool: asyncpg.Pool
    channel: aio_pika.abc.AbstractChannel

    @contextlib.asynccontextmanager
    async def river(self, batch_size: int = 50):
        """A river consuming the queue, as a service runs it (River.start, below FastStream)."""
        cfg = self.env.settings()
        broker = new_broker(cfg.amqp_url)
        river = River("batchtest", QUEUE, self.pool, broker, {"mottak.status_endret": record}, max_attempts=5, batch_size=batch_size, batch_wait=0.05)
        await broker.start()
        await river.start(prefetch=2 * batch_size)
        try:
            yield river
        finally:
            await river.stop(timeout=5)
            with contextlib.suppress(Exception):
                await broker.stop()

    async def publish(self, *messages: Envelope) -> None:
        for m in messages:
            await self.channel.default_exchange.publish(
                aio_pika.Message(m.model_dump_json().encode(), content_type=CONTENT_TYPE, message_id=str(m.id)),
                routing_key=QUEUE.name,
            )

    async def applied(self, subject: str) -> list[asyncpg.Record]:
        return await self.pool.fetch("SELECT sequence, txid FROM batch_applied WHERE subject = $1 ORDER BY n", subject)

    async def dead_letters(self) -> list[aio_pika.abc.AbstractIncomingMessage]:
        queue = await self.channel.declare_queue(QUEUE.dlq, passive=True)
        letters = []
        while (m := await queue.get(fail=False)) is not None:
            await m.ack()
            letters.append(m)
        return letters


@pytest.fixture(scope="module")
async def bench(env):
    cfg = env.settings()
    await declare_all(cfg.amqp_url, [QUEUE])
    pool = await open_database(cfg.database_url("river_batch"), ["shared"])
    await pool.execute(
        "CREATE TABLE IF NOT EXISTS batch_applied (n bigserial PRIMARY KEY, subject text NOT NULL, sequence bigint NOT NULL, txid bigint NOT NULL)"
    )
    connection = await aio_pika.connect(cfg.amqp_url)
    async with connection:
        b = Bench(env, pool, await connection.channel(publisher_confirms=True))
        await b.dead_letters()
        yield b
    await pool.close()


def subject() -> str:
    return f"sak-batch-{secrets.token_hex(6)}"


def moved(subject_: str, sequence: int = 1) -> Envelope:
    return envelope_for(MottakStatusEndret(mottak_id="mottak-01", status="flytta", dato="2023-05-01"), subject_, MOTTAK, sequence)


async def test_a_failing_delivery_is_undone_alone_and_the_rest_of_its_batch_commits(bench):
    ok1, rejected, ok2, not_ready, broken = (subject() for _ in range(5))
    plan.steps[rejected] = raises(Rejected("kommune does not exist"))
    plan.steps[not_ready] = fails_while_blocked(NotReady("sak not known yet"))
    plan.steps[broken] = fails_while_blocked(RuntimeError("connection reset"))
    plan.blocked |= {not_ready, broken}
    events = [moved(s) for s in (ok1, rejected, ok2, not_ready, broken)]
    await bench.publish(*events)  # all in the queue before the river starts: one batch

    async with bench.river() as river:
        await eventually(lambda: _settled(river, applied=2, retried=2, dead_lettered=1))
        plan.blocked -= {not_ready, broken}  # their retries pass now
        await eventually(lambda: _settled(river, applied=4))

    [(_, first)], [(_, second)] = await bench.applied(ok1), await bench.applied(ok2)
    assert first == second  # one transaction
    # The failed ones' state rows were undone with them; each was retried and applied later.
    for s in (not_ready, broken):
        assert [r["txid"] != first for r in await bench.applied(s)] == [True]
    assert await bench.applied(rejected) == []
    assert river.stats.duplicates == 0  # acked once each, nothing delivered again
    assert (await bench.channel.declare_queue(QUEUE.name, passive=True)).declaration_result.message_count == 0
    # The rejected one: in the DLQ with its reason at once, out of the inbox (never applied).
    [letter] = await bench.dead_letters()
    assert letter.headers["x-error-kind"] == "rejected"
    assert letter.headers["x-error-reason"] == "kommune does not exist"
    assert letter.headers["x-failed-queue"] == QUEUE.name
    assert letter.headers["x-attempt"] == 0
    assert await bench.pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", events[1].id) == 0
    # Every applied event emitted one, numbered 1 for its subject.
    emitted = await bench.pool.fetch("SELECT subject, sequence FROM outbox WHERE subject = ANY($1)", [ok1, ok2, not_ready, broken, rejected])
    assert sorted((r["subject"], r["sequence"]) for r in emitted) == sorted((s, 1) for s in (ok1, ok2, not_ready, broken))


async def test_a_large_batch_with_a_failing_handler_runs_again_in_transactions_of_at_most_50_savepoints(bench):
    subjects = [subject() for _ in range(70)]
    plan.steps[subjects[10]] = raises(Rejected("no such kommune"))
    await bench.publish(*(moved(s) for s in subjects))

    async with bench.river(batch_size=100) as river:
        await eventually(lambda: _settled(river, applied=69, dead_lettered=1))

    txids = [r["txid"] for s in subjects for r in await bench.applied(s)]
    assert sorted(Counter(txids).values()) == [20, 49]  # 50 savepoints, then 20
    await bench.dead_letters()


async def test_two_events_of_one_case_in_a_batch_are_applied_in_order(bench):
    in_order, reversed_ = subject(), subject()
    await bench.publish(moved(in_order, 1), moved(in_order, 2), moved(in_order, 3), moved(reversed_, 2), moved(reversed_, 1))

    async with bench.river() as river:
        await eventually(lambda: _settled(river, applied=5))

    rows = await bench.applied(in_order)
    # The second saw the first's sequence: all three in one transaction, in order, none retried.
    assert [r["sequence"] for r in rows] == [1, 2, 3]
    assert len({r["txid"] for r in rows}) == 1
    # 2 before 1 in the queue: 2 waits for 1 (a retry), then follows it.
    assert [r["sequence"] for r in await bench.applied(reversed_)] == [1, 2]
    assert river.stats.retried == 1
    last = await bench.pool.fetch("SELECT subject, last_sequence FROM inbox_sequence WHERE subject = ANY($1)", [in_order, reversed_])
    assert {r["subject"]: r["last_sequence"] for r in last} == {in_order: 3, reversed_: 2}
    emitted = await bench.pool.fetch("SELECT sequence FROM outbox WHERE subject = $1 ORDER BY position", in_order)
    assert [r["sequence"] for r in emitted] == [1, 2, 3]


async def test_copies_of_an_event_in_one_batch_are_applied_once(bench):
    twice, other = subject(), subject()
    event = moved(twice)
    await bench.publish(event, moved(other), event, event)

    async with bench.river() as river:
        await eventually(lambda: _settled(river, applied=2, duplicates=2))

    assert len(await bench.applied(twice)) == 1
    assert await bench.pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", event.id) == 1
    assert await bench.pool.fetchval("SELECT count(*) FROM outbox WHERE subject = $1", twice) == 1
    assert river.stats.retried == 0


async def test_a_batch_lost_with_its_connection_is_delivered_again_and_applied_once(bench):
    """The broker connection dies while a batch is open (the deliveries before the gate
    applied, not committed): none of them was acked, so all come back; the batch then
    commits, and the river that consumes after it finds them all in the inbox."""
    before, after, gated = [subject() for _ in range(3)], [subject() for _ in range(3)], subject()
    gate = Gate()
    plan.steps[gated] = gate
    await bench.publish(*(moved(s) for s in before), moved(gated), *(moved(s) for s in after))

    async with bench.river() as first:
        await asyncio.wait_for(gate.reached.wait(), 30)
        assert first.stats.applied == 0  # nothing acked while the batch is open
        await (await first.broker.connect()).close()  # the connection dies
        gate.released.set()  # the open batch commits, its acks can no longer be sent
        await eventually(lambda: _applied(bench, [*before, gated, *after]))

    async with bench.river() as restarted:  # the broker delivers the unacked batch again
        await eventually(lambda: _settled(restarted, duplicates=7))
    assert restarted.stats.applied == 0
    for s in (*before, gated, *after):
        assert len(await bench.applied(s)) == 1


async def test_a_batch_whose_transaction_fails_is_retried_whole_and_applied_once(bench):
    """The database session dies while a batch is open: nothing in it took effect, every
    delivery goes to the retry tier and is applied once, on its retry."""
    subjects, gated = [subject() for _ in range(4)], subject()
    gate = Gate()
    plan.steps[gated] = gate
    await bench.publish(*(moved(s) for s in subjects[:2]), moved(gated), *(moved(s) for s in subjects[2:]))

    async with bench.river() as river:
        await asyncio.wait_for(gate.reached.wait(), 30)
        await bench.pool.execute("SELECT pg_terminate_backend($1)", gate.backend_pid)
        gate.released.set()
        await eventually(lambda: _settled(river, applied=5))
    assert river.stats.retried == 5
    for s in (*subjects, gated):
        assert len(await bench.applied(s)) == 1


async def test_malformed_messages_among_a_batch_are_dead_lettered_alone_and_the_rest_acked_once(bench):
    """Dead-lettered (and acked) one by one while the batch around them commits: the batch's
    acks must neither name nor pass them, or the broker closes the channel and delivers
    the batch again."""
    good = [subject() for _ in range(6)]
    for i, s in enumerate(good):
        await bench.publish(moved(s))
        if i % 2:
            await bench.channel.default_exchange.publish(aio_pika.Message(b"not json"), routing_key=QUEUE.name)

    async with bench.river() as river:
        await eventually(lambda: _settled(river, applied=6, dead_lettered=3))
        await asyncio.sleep(0.5)  # time for a closed channel to come back and deliver again
        assert river.stats.duplicates == 0
    assert (await bench.channel.declare_queue(QUEUE.name, passive=True)).declaration_result.message_count == 0
    letters = await bench.dead_letters()
    assert [m.headers["x-error-kind"] for m in letters] == ["invalid"] * 3


async def _settled(river: River, applied: int = 0, duplicates: int = 0, retried: int = 0, dead_lettered: int = 0) -> bool:
    s = river.stats
    return s.applied >= applied and s.duplicates >= duplicates and s.retried >= retried and s.dead_lettered >= dead_lettered


async def _applied(bench: Bench, subjects: list[str]) -> bool:
    return all([len(await bench.applied(s)) == 1 for s in subjects])


class FakeChannel:
    """Acks as RabbitMQ takes them: `multiple` acks every unacked tag up to the one named,
    and a tag that is not unacked (acked already, or never delivered) closes the channel."""

    def __init__(self, delivered: int):
        self.unacked = set(range(1, delivered + 1))
        self.frames: list[tuple[int, bool]] = []
        self.refused: list[int] = []

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        if delivery_tag not in self.unacked:
            self.refused.append(delivery_tag)
            raise ConnectionError(f"PRECONDITION_FAILED - unknown delivery tag {delivery_tag}")
        self.frames.append((delivery_tag, multiple))
        self.unacked -= {t for t in self.unacked if t <= delivery_tag} if multiple else {delivery_tag}


@dataclass
class FakeMessage:
    channel: FakeChannel
    delivery_tag: int

    async def ack(self) -> None:
        await self.channel.basic_ack(self.delivery_tag)


async def test_a_batch_is_acked_with_one_frame_up_to_the_first_delivery_not_settled():
    channel = FakeChannel(delivered=12)
    acks = UpTo()
    m = {tag: FakeMessage(channel, tag) for tag in range(1, 13)}
    for message in m.values():
        acks.received(message)
    # 1-3 committed: one frame up to 3.
    await acks.ack([m[1], m[2], m[3]])
    assert channel.frames == [(3, True)]
    # 4 waits for its retry copy; 5-7 committed: acked alone, never past 4.
    await acks.ack([m[5], m[6], m[7]])
    assert channel.frames[1:] == [(5, False), (6, False), (7, False)]
    # 4's copy confirmed, acked alone; 8-9 committed: one frame up to 9 (4-7 acked already).
    await m[4].ack()
    acks.settled(m[4])
    await acks.ack([m[8], m[9]])
    assert channel.frames[4:] == [(4, False), (9, True)]
    # 11 dead-lettered (acked alone) before 10 and 12 commit: the frame names 12, not 11.
    await m[11].ack()
    acks.settled(m[11])
    await acks.ack([m[10], m[12]])
    assert channel.frames[6:] == [(11, False), (12, True)]
    assert channel.unacked == set() and channel.refused == []
    # A channel reopened after a lost connection counts its tags from 1 again.
    reopened = FakeChannel(delivered=2)
    again = [FakeMessage(reopened, tag) for tag in (1, 2)]
    for message in again:
        acks.received(message)
    await acks.ack(again)
    assert reopened.frames == [(2, True)]
