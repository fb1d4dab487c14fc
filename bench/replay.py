"""Replay throughput: `chain replay` of the whole event log against a bare read of it, on
the same broker, in the same run (`python -m bench.replay [--events N] [--rounds R]`).

- fill: N `vedtak.fattet` envelopes of simulated households (sim.workload), published on
  `chain.events` with confirms, 500 in flight; the environment has only the core topology,
  so they land in the event-log stream and nowhere else.
- bare read (the baseline): one aio-pika consumer reading the whole stream, prefetch 1000,
  acking each message, nothing else (how ../shared/RABBITMQ.md measured about 6,600/s).
- lean read: the replay's own reader (aiormq, one ack per batch), nothing parsed or
  published: the most a replay could do here.
- replay: `drift.replay.replay()` of everything into `partner.bench-replay`, a quorum queue
  nobody consumes (purged afterwards).

The machine is shared, so each is run R times, interleaved, and the best rate counts; the
CPU time of this process per event is reported with it.

Writes bench/results/replay.json and replay.md (figure, baseline, ratio, goal, met).
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import time
from pathlib import Path
from uuid import uuid4

import aio_pika

import aiormq

from drift.replay import PREFETCH, ack, deliveries, replay
from shared.publish import envelope_for
from shared.topology import EVENTLOG, EVENTS, declare_core
from sim.actors import UDI
from sim.environment import Environment
from sim.workload import households

ENV = Environment("chain_bench_replay", base_port=8311)
RESULTS = Path(__file__).resolve().parent / "results"
TARGET = "partner.bench-replay"
GOAL = 0.7  # issue 8: a replay at least 70% of the bare read


def cpu_seconds() -> float:
    """This process's CPU time: the machine is shared, so wall-clock rates alone mislead."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measured(work) -> tuple[object, float]:
    """Run `work`, return its result and the CPU microseconds it used."""
    before = cpu_seconds()
    result = await work
    return result, (cpu_seconds() - before) * 1e6


def bodies(n: int) -> list[tuple[str, bytes]]:
    """(event id, body) of n realistic vedtak.fattet envelopes."""
    result = []
    for h in households(n, seed=8, kommunar=["0301", "4601", "5001", "1103"]):
        envelope = envelope_for(h.vedtak, h.sak_id, UDI, 1)
        result.append((str(envelope.id), envelope.model_dump_json().encode()))
    return result


async def fill(url: str, events: list[tuple[str, bytes]]) -> float:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await declare_core(channel)
        await channel.declare_queue(TARGET, durable=True, arguments={"x-queue-type": "quorum"})
        started = time.perf_counter()
        for start in range(0, len(events), 500):
            await asyncio.gather(*(
                exchange.publish(
                    aio_pika.Message(body, content_type="application/cloudevents+json", message_id=event_id,
                                     type="vedtak.fattet", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="vedtak.fattet",
                )
                for event_id, body in events[start:start + 500]
            ))
        return len(events) / (time.perf_counter() - started)


async def lean_read(url: str, n: int) -> float:
    """The replay's reader with nothing done per message but counting."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=False)
        await channel.basic_qos(prefetch_count=PREFETCH)
        count = 0
        started = time.perf_counter()
        async with contextlib.aclosing(deliveries(channel, "first", 5.0)) as batches:
            async for batch in batches:
                await ack(batch)
                count += len(batch)
                if count >= n:
                    break
        assert count >= n, f"read {count} of {n}"
        return n / (time.perf_counter() - started)
    finally:
        await connection.close()


async def bare_read(url: str, n: int) -> float:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.get_queue(EVENTLOG, ensure=False)
        count = 0
        started = time.perf_counter()
        async with queue.iterator(arguments={"x-stream-offset": "first"}) as messages:
            async for message in messages:
                await message.ack()
                count += 1
                if count >= n:
                    break
        return n / (time.perf_counter() - started)


async def target_depth(url: str, purge: bool = False) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(TARGET, passive=True)
        if purge:
            await queue.purge()
        return queue.declaration_result.message_count


async def best_of(rounds: int, runs: dict) -> dict[str, tuple[float, float]]:
    """name -> (best rate, CPU microseconds per event in that run), the runs interleaved."""
    best: dict[str, tuple[float, float]] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            rate, cpu_us = await measured(run())
            if rate > best.get(name, (0.0, 0.0))[0]:
                best[name] = (rate, cpu_us)
    return best


async def replay_all(cfg, n: int) -> float:
    done = await replay(cfg, target=TARGET)
    assert done.read == n and done.published == n, done
    await asyncio.sleep(1.0)  # the queue's message count lags its confirms a little
    depth = await target_depth(cfg.amqp_url, purge=True)
    assert depth == n, f"{depth} of {n} replayed events in {TARGET}"
    return done.rate


async def main(n: int, rounds: int) -> dict:
    await ENV.reset()
    cfg = ENV.settings()
    events = bodies(n)
    fill_rate = await fill(cfg.amqp_url, events)
    best = await best_of(rounds, {
        "bare": lambda: bare_read(cfg.amqp_url, n),
        "lean": lambda: lean_read(cfg.amqp_url, n),
        "replay": lambda: replay_all(cfg, n),
    })
    (bare, _), (lean, _), (rate, _) = best["bare"], best["lean"], best["replay"]
    result = {
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores)",
        "events": n,
        "rounds": rounds,
        "figure": "replay of the whole event log into one quorum queue, events/s",
        "value": round(rate),
        "baseline": "bare read of the event log (aio-pika consumer, ack each), events/s",
        "baseline_value": round(bare),
        "ratio": round(rate / bare, 3),
        "goal": f">= {GOAL}",
        "met": rate / bare >= GOAL,
        "lean_read": round(lean),
        "ratio_to_lean_read": round(rate / lean, 3),
        "replay_seconds": round(n / rate, 2),
        "cpu_us_per_event": {name: round(cpu_us / n) for name, (_, cpu_us) in best.items()},
        "fill_publish_rate": round(fill_rate),
        "body_bytes_mean": round(sum(len(b) for _, b in events) / n),
        "run_id": str(uuid4()),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "replay.json").write_text(json.dumps(result, indent=2) + "\n")
    cpu = result["cpu_us_per_event"]
    (RESULTS / "replay.md").write_text(
        "| figure | value | baseline | baseline value | ratio | goal | met |\n|---|---|---|---|---|---|---|\n"
        f"| {result['figure']} | {result['value']} | {result['baseline']} | {result['baseline_value']} | "
        f"{result['ratio']} | {result['goal']} | {'yes' if result['met'] else 'no'} |\n"
        f"| {result['figure']} | {result['value']} | lean read (the replay's reader: aiormq, one ack per batch, no parse), events/s | "
        f"{result['lean_read']} | {result['ratio_to_lean_read']} | {result['goal']} | {'yes' if result['ratio_to_lean_read'] >= GOAL else 'no'} |\n\n"
        f"{n:,} `vedtak.fattet` envelopes (about {result['body_bytes_mean']} bytes each) in `{EVENTLOG}`, filled through "
        f"`{EVENTS}` at {result['fill_publish_rate']:,} events/s; best of {rounds} interleaved rounds. The replay of all "
        f"{n:,} took {result['replay_seconds']} s (journal, end-of-stream probe and confirms included). CPU time of the "
        f"bench process per event: bare read {cpu['bare']} µs, lean read {cpu['lean']} µs, replay {cpu['replay']} µs; "
        "the broker shares the machine's 2 cores.\n"
    )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.events, args.rounds)), indent=2))
