"""Hop throughput: a durable hop against a raw aio-pika forward, on the same broker, in
the same run (`python -m bench.hop [--messages N]`).

- raw: consume from a quorum queue, publish each message on with publisher confirms
  (many in flight), ack after the confirm; no database.
- durable: the same messages through a service's river as a service runs it (deliveries
  applied in batches: inbox + state + outbox in one PostgreSQL transaction per batch, each
  delivery acked after the commit that holds it) and the outbox relay publishing with
  confirms, in this one process. Measured until the relay has published the last event.

Writes bench/results/hop.json and hop.md (figure, baseline, ratio, goal, met).
"""

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path
from uuid import uuid4

import aio_pika

from shared.catalogue import KartleggingStartet, Kartleggingstype, MottakStatusEndret
from shared.db import open_database
from shared.outbox import Relay
from shared.publish import envelope_for
from shared.service import new_broker, new_river
from shared.topology import ServiceQueue, declare_all
from sim.environment import Environment

ENV = Environment("chain_bench", base_port=8301)
RESULTS = Path(__file__).resolve().parent / "results"
GOAL = 0.5  # the durable hop at least half the raw rate


def bodies(n: int) -> list[bytes]:
    data = MottakStatusEndret(mottak_id="mottak-01", status="flytta", dato="2023-05-01")
    return [envelope_for(data, f"sak-bench-{i:08d}", "urn:no:mottak:1", 1).model_dump_json().encode() for i in range(n)]


async def fill(channel, queue: str, payloads: list[bytes]) -> None:
    for start in range(0, len(payloads), 500):
        await asyncio.gather(*(
            channel.default_exchange.publish(aio_pika.Message(b, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue)
            for b in payloads[start:start + 500]
        ))


async def raw_forward(url: str, payloads: list[bytes]) -> float:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=256)
        source = await channel.declare_queue("bench.raw.in", durable=True, arguments={"x-queue-type": "quorum"})
        await channel.declare_queue("bench.raw.out", durable=True, arguments={"x-queue-type": "quorum"})
        await source.purge()
        await fill(channel, "bench.raw.in", payloads)
        done = asyncio.Event()
        count = 0

        async def forward(message):
            nonlocal count
            await channel.default_exchange.publish(
                aio_pika.Message(message.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key="bench.raw.out"
            )
            await message.ack()
            count += 1
            if count == len(payloads):
                done.set()

        started = time.perf_counter()
        tag = await source.consume(forward)
        await done.wait()
        elapsed = time.perf_counter() - started
        await source.cancel(tag)
        await (await channel.declare_queue("bench.raw.out", passive=True)).purge()
        return len(payloads) / elapsed


async def emit_one(uow, envelope, data) -> None:
    """A minimal real handler: a state upsert and one emitted event, in the river's transaction."""
    await uow.conn.execute(
        "INSERT INTO bench_state (subject, status) VALUES ($1, $2) ON CONFLICT (subject) DO UPDATE SET status = excluded.status",
        envelope.subject, data.status,
    )
    await uow.emit(KartleggingStartet(kartleggingstype=Kartleggingstype.ordinaer, personar=[]), envelope.subject)


async def durable_hop(payloads: list[bytes]) -> float:
    cfg = ENV.settings()
    queue = ServiceQueue("bench.durable", ())
    await declare_all(cfg.amqp_url, [queue])
    db_url = cfg.database_url("hop")
    pool = await open_database(db_url, ["shared"], pool_size=cfg.pg_pool_size)
    await pool.execute("CREATE TABLE IF NOT EXISTS bench_state (subject text PRIMARY KEY, status text)")
    connection = await aio_pika.connect(cfg.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await fill(channel, queue.name, payloads)
    broker = new_broker(cfg.amqp_url)
    river = new_river(cfg, "bench", queue, pool, broker, {"mottak.status_endret": emit_one})
    relay = Relay(db_url, cfg.amqp_url, cfg.eventlog_max_age)
    stop = asyncio.Event()
    started = time.perf_counter()
    relay_task = asyncio.create_task(relay.run(stop))
    await broker.start()
    await river.start(cfg.prefetch)
    applied_at = None
    while relay.published < len(payloads):
        await asyncio.sleep(0.01)
        if applied_at is None and river.stats.applied >= len(payloads):
            applied_at = time.perf_counter() - started
    elapsed = time.perf_counter() - started
    durable_hop.river_seconds = applied_at  # where the time goes: consuming, or relaying
    stop.set()
    await relay_task
    await river.stop()
    await broker.stop()
    await pool.close()
    return len(payloads) / elapsed


async def main(n: int) -> dict:
    await ENV.reset()
    payloads = bodies(n)
    raw = await raw_forward(ENV.settings().amqp_url, payloads)
    durable = await durable_hop(payloads)
    result = {
        "machine": f"{platform.node()} ({platform.machine()}, {__import__('os').cpu_count()} cores)",
        "messages": n,
        "figure": "durable hop, msg/s",
        "value": round(durable),
        "baseline": "raw aio-pika forward, msg/s",
        "baseline_value": round(raw),
        "ratio": round(durable / raw, 3),
        "goal": f">= {GOAL}",
        "met": durable / raw >= GOAL,
        "river_seconds": round(durable_hop.river_seconds or 0, 2),
        "hop_seconds": round(n / durable, 2),
        "run_id": str(uuid4()),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hop.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "hop.md").write_text(
        "| figure | value | baseline | baseline value | ratio | goal | met |\n|---|---|---|---|---|---|---|\n"
        f"| {result['figure']} | {result['value']} | {result['baseline']} | {result['baseline_value']} | "
        f"{result['ratio']} | {result['goal']} | {'yes' if result['met'] else 'no'} |\n"
    )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.messages)), indent=2))
