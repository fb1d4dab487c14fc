"""The whole chain under load, as processes (`python -m bench.chain [--persons N | --year]
[--latency-seconds S] [--profile]`): throughput, latency per hop and end to end, and
memory, against baselines measured on the same broker in the same run.

1. Baselines (no chain running; each in a child process with a time limit): bench/hop.py's
   raw aio-pika forward (consume from a quorum queue, publish on with confirms, ack) and its
   durable hop (river + outbox + relay), in msg/s; and a raw broker hop's latency
   (persistent publish with confirm to a quorum queue, to a consumer) at 200 msg/s.
2. Throughput: the three services and their three relays start as processes
   (sim/processes.py); the simulator (sim/actors.py, real clock: no mapping weeks) plays
   UDI, mottak, the mapping caseworker, IMDi's caseworker and kommunar. The whole workload
   is published at once; the figure is persons settled per second from the first
   `vedtak.fattet` to the last `bosetting.bosatt`. Kommunar decide ample places
   (`--places-slack`), so settlement is not paced by the simulated IMDi asking for more.
   The chain's cost per person is counted from the services' inboxes (deliveries per
   person), which turns a raw msg/s into the persons/s the broker alone would allow: the
   baseline. CPU per person, per process, against the goal's budget on this machine.
3. Latency: a fresh workload published at half that rate; per hop, from the event's
   envelope `time` (set when the producer's handler emits it, inside the producer's
   transaction; for the simulator's own events, the broker's confirm) to the consumer's
   inbox row (`received_at`), and end to end from the vedtak's confirm to the envelope time
   of its case's `bosetting.bosatt`.
4. Memory: peak RSS (VmHWM) of each service and relay process.

A phase ends when every case is settled or withdrawn, or when none has finished for
`--stall` seconds after the last arrival (reported). `--profile` runs py-spy (install it
into the venv) on the slowest process under load: the service with the most messages
waiting for it. Writes bench/results/chain.json and chain.md (figure, value, baseline,
baseline value, ratio, goal, met); logs and profiles in var/bench-chain/.
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from uuid import uuid4

import aio_pika
import asyncpg
import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import hop
from bench.kompetanse import _proc_cpu, _system_busy, machine, percentile
from shared.config import settings
from shared.log import configure
from sim.actors import NAV, OSLO, Simulator
from sim.demo import kommunar
from sim.environment import SERVICES, Environment
from sim.processes import ProcessGroup
from sim.workload import Household, capacity, households

# Not "chain_bench_...": Environment.reset drops every database with its prefix, and
# bench.hop's environment "chain_bench" would drop ours.
ENV = Environment("chain_chainbench", base_port=8701)
ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
LOGS = ROOT / "var" / "bench-chain"

PERSONS_2023 = 33_701  # settled in 2023 (DOMAIN.md)
GOAL_SECONDS_2023 = 120.0  # the issue: a full 2023 in under 2 minutes
GOAL_PERSONS_PER_SECOND = PERSONS_2023 / GOAL_SECONDS_2023  # 280.8
GOAL_HOP_P99_MS = 25.0
SUSTAINED = 0.9  # at half the maximum rate the chain keeps up: settled/offered at least this
RAW_LATENCY_RATE = 200  # msg/s for the raw broker hop's latency
# Fixed waits on a case's path: the allocation batch interval (sim/environment.py sets
# CHAIN_ALLOCATION_INTERVAL=0.5) and the simulated caseworker's review interval (0.5 s).
FIXED_WAITS_S = 0.5 + 0.5
PRODUCERS = {"urn:chain:kartlegging": "kartlegging", "urn:chain:bosetting": "bosetting", "urn:chain:kompetanse": "kompetanse"}

console = Console(stderr=True)


# --- pure parts (tests/test_bench_chain.py) ------------------------------------------------


def distribution(values: list[float]) -> dict:
    """n, p50, p90, p99 (nearest rank), max and mean of `values`, rounded to 0.1."""
    v = sorted(values)
    if not v:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    return {
        "n": len(v),
        "p50": round(percentile(v, 50), 1),
        "p90": round(percentile(v, 90), 1),
        "p99": round(percentile(v, 99), 1),
        "max": round(v[-1], 1),
        "mean": round(sum(v) / len(v), 1),
    }


@dataclass(frozen=True)
class Goal:
    """A goal on a row's value or on its ratio to the baseline; op None: reported only."""

    text: str
    on: str = "value"  # or "ratio"
    op: str | None = None  # ">=", "<=" or None
    threshold: float | None = None

    def met(self, value, ratio) -> bool | None:
        if self.op is None:
            return None
        x = value if self.on == "value" else ratio
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return False
        return x >= self.threshold if self.op == ">=" else x <= self.threshold


REPORT = Goal("report")


def ratio_of(value, baseline_value) -> float | None:
    if not isinstance(value, (int, float)) or not isinstance(baseline_value, (int, float)) or not baseline_value:
        return None
    return round(value / baseline_value, 3)


def row(figure: str, value, baseline: str = "", baseline_value=None, goal: Goal = REPORT) -> dict:
    ratio = ratio_of(value, baseline_value)
    return {"figure": figure, "value": value, "baseline": baseline, "baseline_value": baseline_value,
            "ratio": ratio, "goal": goal.text, "met": goal.met(value, ratio)}


def _cell(v) -> str:
    if v is None:
        return ""
    if v is True:
        return "yes"
    if v is False:
        return "no"
    return str(v)


def table(rows: list[dict]) -> str:
    """The rows as bench/results/hop.md's table: figure, value, baseline, baseline value,
    ratio, goal, met (a goal that is only reported says so)."""
    out = ["| figure | value | baseline | baseline value | ratio | goal | met |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        met = "n/a (reported)" if r["met"] is None else _cell(r["met"])
        out.append(f"| {r['figure']} | {_cell(r['value'])} | {r['baseline']} | {_cell(r['baseline_value'])} | "
                   f"{_cell(r['ratio'])} | {r['goal']} | {met} |")
    return "\n".join(out) + "\n"


def producer_of(source: str) -> str:
    """The party a CloudEvents source names: a service, or UDI, a mottak, a kommune."""
    if source in PRODUCERS:
        return PRODUCERS[source]
    if source.startswith("urn:no:"):
        return source.split(":")[2]
    return source


def hop_latencies(produced: dict, consumed: list[tuple[str, str, str, float]]) -> dict[str, list[float]]:
    """Milliseconds per hop, by edge `producer -> consumer`. `produced` maps an event id to
    the time it was produced (epoch seconds); `consumed` holds (consumer, source, event id,
    consumed at) for every inbox row. Rows whose event is not in `produced` are skipped."""
    edges: dict[str, list[float]] = defaultdict(list)
    for consumer, source, event_id, at in consumed:
        t = produced.get(event_id)
        if t is not None:
            edges[f"{producer_of(source)} -> {consumer}"].append((at - t) * 1000)
    return dict(edges)


def throughput(start: float, finished: dict[str, float], persons: dict[str, int]) -> dict:
    """Persons per second from `start` to the last finish, and over the middle 80% of the
    persons (10% to 90% finished), which leaves out the pipeline's filling and draining."""
    if not finished:
        return {"persons": 0, "seconds": None, "persons_per_second": 0.0, "steady_persons_per_second": None}
    order = sorted((t, persons[s]) for s, t in finished.items())
    total = sum(p for _, p in order)
    seconds = order[-1][0] - start
    cum, marks = 0, {}
    for t, p in order:
        cum += p
        for q in (0.1, 0.9):
            if q not in marks and cum >= q * total:
                marks[q] = (t, cum)
    (t10, c10), (t90, c90) = marks[0.1], marks[0.9]
    steady = (c90 - c10) / (t90 - t10) if t90 > t10 else None
    return {"persons": total, "seconds": round(seconds, 2), "persons_per_second": round(total / seconds, 1) if seconds > 0 else None,
            "steady_persons_per_second": round(steady, 1) if steady else None}


def window_rate(times: dict[str, float], persons: dict[str, int], lo: float, hi: float) -> float | None:
    """Persons per second whose time in `times` lies in [lo, hi]."""
    if hi <= lo:
        return None
    return round(sum(persons[s] for s, t in times.items() if lo <= t <= hi) / (hi - lo), 1)


def timeline(start: float, finished: dict[str, float], persons: dict[str, int], step: float) -> list[int]:
    """Persons finished in each `step` seconds from `start`."""
    out: list[int] = []
    for s, t in finished.items():
        i = max(0, int((t - start) // step))
        out += [0] * (i + 1 - len(out))
        out[i] += persons[s]
    return out


def take_persons(workload: list[Household], persons: int) -> list[Household]:
    """The first households of `workload` holding at least `persons` persons."""
    out, n = [], 0
    for h in workload:
        if n >= persons:
            break
        out.append(h)
        n += h.persons
    return out


def collapsed_summary(text: str, top: int = 12) -> dict:
    """py-spy's raw (collapsed) output: `frame;frame;... count` per line, outermost first.
    Returns the samples; the functions with the most samples at the top of the stack
    (self), and the same by package (`asyncpg`, `asyncio`, `shared`, ...); and the project's
    own functions (shared/, services/) most often on the stack (total), leaving out the
    frames under which nearly everything runs (the process's main, the event loop). Shares
    of all samples."""
    own, packages, total, samples = Counter(), Counter(), Counter(), 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [f for f in (_frame(f) for f in stack.split(";")) if f]
        if not frames:
            continue
        own[frames[-1]] += n
        packages[_package(frames[-1])] += n
        for f in set(frames):
            if _package(f) in ("shared", "services"):
                total[f] += n

    def shares(c: Counter, n: int = top) -> list[tuple[str, float]]:
        return [(f, round(k / samples, 3)) for f, k in c.most_common(n)] if samples else []

    common = {f for f, k in total.items() if k >= 0.85 * samples}
    return {"samples": samples, "self": shares(own), "self_by_package": shares(packages),
            "total": shares(Counter({f: k for f, k in total.items() if f not in common}))}


def _package(frame: str) -> str:
    """`execute (asyncpg/connection.py)` -> `asyncpg`; `select (selectors.py)` -> `selectors`."""
    where = frame.rpartition(" (")[2].rstrip(")")
    return where.split("/", 1)[0].removesuffix(".py") if where else "?"


def _frame(f: str) -> str:
    """`function (path/file.py:123)` -> `function (path/file.py)`: the line dropped, the
    path as py-spy gives it (relative to sys.path); process/thread frames dropped."""
    f = f.strip()
    if not f or f.startswith(("process ", "thread ")):
        return ""
    name, _, where = f.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({where})" if where else name


# --- processes: memory and CPU -------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in kB from /proc/<pid>/status; {} if it is gone."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def broker_pid() -> int | None:
    """The OS process of the RabbitMQ node rabbitmqctl talks to (the chain's)."""
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
        out = subprocess.run([ctl, "-q", "eval", "os:getpid()."], capture_output=True, text=True, timeout=30).stdout
        return int(out.strip().strip('"'))
    return None


def pids_named(comm: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if (d / "comm").read_text().strip() == comm:
                    out.append(int(d.name))
    return out


class Sampler:
    """Every 0.5 s: RSS of each chain process (the peak is the kernel's VmHWM), and CPU time
    of each, of PostgreSQL and RabbitMQ (machine-wide: they may serve others too)."""

    def __init__(self, procs: ProcessGroup):
        self.procs = procs
        self.max_rss: dict[str, int] = defaultdict(int)
        self.depths: dict[str, list[int]] = defaultdict(list)  # service queue depth, once a second
        # CPU seconds last seen per server process: a backend that exits keeps its share, so
        # a group's total never goes down (summing the processes alive at each look did,
        # when connections closed between two looks).
        self.seen: dict[str, dict[int, float]] = {"postgresql (all)": {}, "rabbitmq": {}}
        self.broker_pid = broker_pid()

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.procs.items()}

    def cpu(self) -> dict[str, float]:
        out = {name: _proc_cpu(pid) for name, pid in self.pids().items()}
        out["bench (simulator)"] = _proc_cpu(os.getpid())
        out["postgresql (all)"] = self._group("postgresql (all)", pids_named("postgres"))
        # Our broker only: another node on the machine (a chaos run's) is not ours.
        out["rabbitmq"] = self._group("rabbitmq", [self.broker_pid] if self.broker_pid else pids_named("beam.smp"))
        out["machine"] = _system_busy()
        out["t"] = time.perf_counter()
        return out

    def _group(self, name: str, pids: list[int]) -> float:
        seen = self.seen[name]
        for pid in pids:
            seen[pid] = max(seen.get(pid, 0.0), _proc_cpu(pid))
        return sum(seen.values())

    def memory(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, pid in self.pids().items():
            s = proc_status(pid)
            out[name] = {"rss_mib": round(s.get("VmRSS", 0) / 1024, 1), "peak_rss_mib": round(s.get("VmHWM", 0) / 1024, 1)}
        s = proc_status(os.getpid())
        out["bench (simulator)"] = {"rss_mib": round(s.get("VmRSS", 0) / 1024, 1), "peak_rss_mib": round(s.get("VmHWM", 0) / 1024, 1)}
        return out

    def sample(self) -> None:
        for name, pid in self.pids().items():
            self.max_rss[name] = max(self.max_rss[name], proc_status(pid).get("VmRSS", 0))


def cpu_percent(before: dict, after: dict) -> dict[str, float]:
    """Share of one core per process between two `Sampler.cpu` snapshots (100 = one core),
    and `other`: the machine's busy time outside them (someone else's run)."""
    dt = after["t"] - before["t"]
    if dt <= 0:
        return {}
    out = {k: round(100 * (after[k] - before.get(k, 0.0)) / dt) for k in after if k != "t"}
    if "machine" in out:
        out["other"] = max(0, out["machine"] - sum(v for k, v in out.items() if k != "machine"))
    return out


def cpu_per_person(before: dict, after: dict, persons: int) -> dict[str, float]:
    """CPU milliseconds per settled person, per process, and `chain`: the services, relays,
    simulator, PostgreSQL and RabbitMQ together (the last two machine-wide)."""
    if not persons:
        return {}
    out = {k: round(1000 * (after[k] - before.get(k, 0.0)) / persons, 1) for k in after if k not in ("t", "machine")}
    out["chain"] = round(sum(out.values()), 1)
    return out


# --- baselines -----------------------------------------------------------------------------


async def raw_latency(url: str, rate: float, seconds: float) -> list[float]:
    """A raw broker hop: persistent messages published with confirms to a quorum queue at
    `rate`, consumed by an aio-pika consumer; ms from before the publish to the delivery."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        rx = await connection.channel()
        await rx.set_qos(prefetch_count=256)
        queue = await rx.declare_queue("bench.latency", durable=True, arguments={"x-queue-type": "quorum"})
        await queue.purge()
        n = int(rate * seconds)
        got: list[float] = []
        done = asyncio.Event()

        async def on_message(message) -> None:
            got.append((time.time() - float(message.body)) * 1000)
            await message.ack()
            if len(got) >= n:
                done.set()

        tag = await queue.consume(on_message)
        started = time.monotonic()
        pending = set()
        for i in range(n):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            body = repr(time.time()).encode()
            pending.add(asyncio.create_task(channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key="bench.latency")))
            pending = {t for t in pending if not t.done()}
        await asyncio.gather(*pending)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 30)
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
        return got


async def baseline(kind: str, hop_messages: int) -> float | dict:
    """One baseline, measured in this process (`--baseline KIND`)."""
    url = ENV.settings().amqp_url
    if kind == "raw":
        return round(await hop.raw_forward(url, hop.bodies(hop_messages)))
    if kind == "durable":
        hop.ENV = ENV  # the durable hop in this bench's vhost and databases, not bench.hop's
        return round(await hop.durable_hop(hop.bodies(hop_messages)))
    return distribution(await raw_latency(url, RAW_LATENCY_RATE, 5.0))


async def baselines(hop_messages: int, progress: Progress, timeout: float) -> dict:
    """Each baseline in a child process of its own, given at most `timeout` seconds: the
    durable hop runs the working tree's river and relay, which may be broken mid-edit, and
    a hung baseline must not hang the bench (it is then reported as missing)."""
    task = progress.add_task("baselines (no chain)", total=3)
    out: dict = {"messages": hop_messages, "raw_hop_latency_rate": RAW_LATENCY_RATE, "errors": {}}
    for kind, key in (("raw", "raw_forward_msg_per_s"), ("durable", "durable_hop_msg_per_s"), ("latency", "raw_hop_latency_ms")):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.chain", "--baseline", kind, "--hop-messages", str(hop_messages),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        )
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
            out[key] = json.loads(stdout.decode().strip().splitlines()[-1]) if proc.returncode == 0 else None
            if proc.returncode != 0:
                out["errors"][kind] = stderr.decode(errors="replace")[-400:]
        except TimeoutError:
            proc.kill()
            await proc.wait()
            out[key] = None
            out["errors"][kind] = f"no result within {timeout:g} s"
        await ENV.reset()  # what a baseline left behind (queues, its database) goes
        progress.advance(task)
    return out


# --- the chain -----------------------------------------------------------------------------


class Recording:
    """Wraps the simulator's exchanges: the wall time each of its events was confirmed by
    the broker, by event id (the simulator's 'commit'), and each vedtak's by case."""

    def __init__(self, exchange, sent: dict[str, float], vedtak: dict[str, float]):
        self._exchange, self._sent, self._vedtak = exchange, sent, vedtak

    async def publish(self, message, routing_key, **kwargs):
        result = await self._exchange.publish(message, routing_key=routing_key, **kwargs)
        now = time.time()
        if message.message_id:
            self._sent[message.message_id] = now
        if routing_key == "vedtak.fattet":
            self._vedtak.setdefault(json.loads(message.body)["subject"], now)
        return result

    def __getattr__(self, name):
        return getattr(self._exchange, name)


async def counts(db: dict[str, asyncpg.Pool]) -> dict[str, dict[str, int]]:
    out = {}
    for service, pool in db.items():
        out[service] = {
            # Deliveries: not a service's own events, which bosetting records as applied
            # when it emits them (services/bosetting/handlers.py: _kpi_eigne).
            "inbox": await pool.fetchval("SELECT count(*) FROM inbox WHERE source <> $1", f"urn:chain:{service}"),
            "outbox": await pool.fetchval("SELECT count(*) FROM outbox"),
        }
    return out


async def drained(http: httpx.AsyncClient, channel) -> bool:
    for service in SERVICES:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if (await http.get(ENV.url(service) + "/health/ready")).json().get("outbox_backlog", 1) == 0:
                continue
        return False
    for service in SERVICES:
        queue = await channel.declare_queue(service, passive=True)
        if queue.declaration_result.message_count:
            return False
    return True


async def wait_drained(db: dict[str, asyncpg.Pool], timeout: float) -> float | None:
    """Wait until every outbox is published, every service queue is empty and the inboxes
    stand still for a second (a queue's depth leaves out what a consumer holds unacked).
    Returns the monotonic time it first looked drained, None on timeout."""
    deadline = time.monotonic() + timeout
    connection = await aio_pika.connect(ENV.settings().amqp_url)
    async with connection, httpx.AsyncClient(timeout=5) as http:
        channel = await connection.channel()
        first = None
        while time.monotonic() < deadline:
            before = await counts(db)
            if await drained(http, channel):
                first = first or time.monotonic()
                await asyncio.sleep(1.0)
                if await counts(db) == before and await drained(http, channel):
                    return first
            else:
                first = None
            await asyncio.sleep(0.25)
    return None


async def unfinished_by_status(db: dict[str, asyncpg.Pool], cases: list[str]) -> dict[str, int]:
    """Where the cases that neither settled nor were withdrawn stand in bosetting."""
    if not cases:
        return {}
    rows = await db["bosetting"].fetch("SELECT status, count(*) AS n FROM sak WHERE sak_id = ANY($1) GROUP BY status", cases)
    known = sum(r["n"] for r in rows)
    return {r["status"]: r["n"] for r in rows} | ({"unknown to bosetting": len(cases) - known} if known < len(cases) else {})


async def river_stats() -> dict[str, dict]:
    """Each service's river counters (applied, duplicates, retried, dead-lettered) from /health/ready."""
    out = {}
    async with httpx.AsyncClient(timeout=5) as http:
        for service in SERVICES:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                out[service] = (await http.get(ENV.url(service) + "/health/ready")).json().get("stats")
    return out


async def dlq_depths() -> dict[str, int]:
    connection = await aio_pika.connect(ENV.settings().amqp_url)
    async with connection:
        channel = await connection.channel()
        out = {}
        for name in ("kartlegging.dlq", "bosetting.dlq", "kompetanse.dlq", "kartlegging.mottak-inn.dlq"):
            with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                out[name] = (await channel.declare_queue(name, passive=True)).declaration_result.message_count
                continue
            channel = await connection.channel()
        return out


@dataclass
class Run:
    """One phase's simulator run: the simulator, when its arrivals started and ended, and
    the simulator's own events' confirm times."""

    sim: Simulator
    started: float  # monotonic
    started_wall: float
    published: float  # monotonic: the last vedtak published (and its identities registered)
    finished: float  # monotonic: every case settled or withdrawn, or the timeout
    sent: dict[str, float]
    vedtak: dict[str, float]
    timed_out: bool  # or stalled: not every case settled or withdrawn
    unfinished: list[str]


async def drive(workload: list[Household], rate: float, timeout: float, progress: Progress, label: str,
                sampler: Sampler, use_consumers: bool, stall: float, places_slack: float, on_load=None) -> Run:
    """Run the simulator over `workload`, vedtak arriving at `rate` households/s, until every
    case is settled or withdrawn (or `timeout`)."""
    knr = [k for k, _, _ in kommunar()]
    sent: dict[str, float] = {}
    vedtak: dict[str, float] = {}
    n = len(workload)
    persons = sum(h.persons for h in workload)
    task_v = progress.add_task(f"{label}: vedtak published", total=n)
    task_b = progress.add_task(f"{label}: persons settled", total=persons)
    async with Simulator(ENV, workload, kommunenummer=knr) as sim:
        sim.exchange = Recording(sim.exchange, sent, vedtak)
        sim.mottak_inn = Recording(sim.mottak_inn, sent, vedtak)
        await sim.decide_capacity(kommunar(), date.today().year)
        if places_slack:
            await ample_places(sim, workload, places_slack)
        # A plain connection: the simulator's robust one answers a passive declare from its cache.
        depth_connection = await aio_pika.connect(ENV.settings().amqp_url)
        depth_channel = await depth_connection.channel()
        consumers = []
        if use_consumers:
            consumers = [asyncio.create_task(sim.konsument(NAV, "arbeidsretta_oppfolging")),
                         asyncio.create_task(sim.konsument(OSLO, "busetting"))]
        started, started_wall = time.monotonic(), time.time()
        arrivals = asyncio.create_task(sim.publish_vedtak(rate))
        caseworker = asyncio.create_task(sim.caseworker())
        published = None
        hook = None
        deadline = started + timeout
        finished_cases, last_change = 0, started
        sampled_depth = 0.0
        try:
            while not sim.done and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                sampler.sample()
                if time.monotonic() - sampled_depth >= 1.0:
                    sampled_depth = time.monotonic()
                    for service in SERVICES:
                        q = await depth_channel.declare_queue(service, passive=True)
                        sampler.depths[service].append(q.declaration_result.message_count or 0)
                if published is None and arrivals.done():
                    arrivals.result()  # a failure to publish is a failure of the bench
                    published = time.monotonic()
                if len(sim.settled_at) + len(sim.withdrawn_cases) != finished_cases:
                    finished_cases, last_change = len(sim.settled_at) + len(sim.withdrawn_cases), time.monotonic()
                elif published is not None and time.monotonic() - last_change > stall:
                    break  # stuck: no case finished for `stall` seconds after the last arrival
                settled = sum(sim.by_sak[s].persons for s in sim.settled_at)
                progress.update(task_v, completed=sim.counts["vedtak"])
                progress.update(task_b, completed=settled)
                if on_load is not None and hook is None and settled >= 0.1 * persons:
                    hook = asyncio.create_task(on_load())
            finished = time.monotonic()
        finally:
            await depth_connection.close()
            for t in (arrivals, caseworker, *consumers):
                t.cancel()
            await asyncio.gather(arrivals, caseworker, *consumers, return_exceptions=True)
        if hook is not None:
            await hook
        progress.update(task_v, completed=sim.counts["vedtak"])
        progress.update(task_b, completed=sum(sim.by_sak[s].persons for s in sim.settled_at))
        unfinished = [h.sak_id for h in workload if h.sak_id not in sim.settled_at and h.sak_id not in sim.withdrawn_cases]
        return Run(sim, started, started_wall, published or finished, finished, sent, vedtak, not sim.done, unfinished)


async def ample_places(sim: Simulator, workload: list[Household], slack: float) -> None:
    """Every kommune decides `slack` times the workload's persons per group on top of the
    places already used (as the simulator's decide_capacity does, with its 2023 slack of 7%),
    so the throughput measured is the chain's, not how fast the simulated IMDi gets
    kommunar to decide more places once they run short (sim/actors.py _ask_for_places)."""
    year = date.today().year
    used = {k["kommunenummer"]: k.get("kapasitet") or {} for k in await sim._get("bosetting", "/kommunar", sim.imdi)}
    places = {
        knr: {g: n + (used.get(knr, {}).get(g) or {}).get("brukt", 0) for g, n in p.items()}
        for knr, p in capacity(kommunar(), workload, slack=slack).items()
    }
    for start in range(0, len(places), 40):
        await asyncio.gather(*(
            sim._call("PUT", "bosetting", f"/kommunar/{knr}/vedtak/{year}", p, token=sim._kommune(knr))
            for knr, p in list(places.items())[start:start + 40]
        ))


async def hop_rows(db: dict[str, asyncpg.Pool], run: Run, since: float, until: float) -> dict:
    """Per edge: ms from production (envelope time of an outbox row; the broker's confirm of
    the simulator's own events) to the consumer's inbox row, for events produced in
    [since, until] (epoch seconds). Also the relay's share (envelope time to the outbox
    row's published_at) and the producing transaction's start (outbox created_at)."""
    produced: dict[str, float] = {}
    relay: dict[str, list[float]] = defaultdict(list)
    txn: dict[str, list[float]] = defaultdict(list)
    types: dict[str, str] = {}
    for service, pool in db.items():
        rows = await pool.fetch(
            """SELECT event_id::text AS id, type,
                      extract(epoch FROM (body::json->>'time')::timestamptz)::float8 AS emitted,
                      extract(epoch FROM created_at)::float8 AS created,
                      extract(epoch FROM published_at)::float8 AS published
               FROM outbox WHERE created_at BETWEEN to_timestamp($1) AND to_timestamp($2)""",
            since, until,
        )
        for r in rows:
            produced[r["id"]] = r["emitted"]
            types[r["id"]] = r["type"]
            if r["published"] is not None:
                relay[service].append((r["published"] - r["emitted"]) * 1000)
            txn[service].append((r["emitted"] - r["created"]) * 1000)
    for event_id, t in run.sent.items():
        if since <= t <= until:
            produced[event_id] = t
    consumed = []
    for service, pool in db.items():
        rows = await pool.fetch(
            "SELECT source, event_id::text AS id, extract(epoch FROM received_at)::float8 AS at FROM inbox"
            " WHERE received_at >= to_timestamp($1) AND source <> $2",  # own events are no hop
            since,
            f"urn:chain:{service}",
        )
        consumed += [(service, r["source"], r["id"], r["at"]) for r in rows]
    edges = hop_latencies(produced, consumed)
    all_hops = [x for v in edges.values() for x in v]
    return {
        "edges": {e: distribution(v) for e, v in sorted(edges.items())},
        "all": distribution(all_hops),
        "relay_ms": {s: distribution(v) for s, v in relay.items()},
        "emit_after_txn_start_ms": {s: distribution(v) for s, v in txn.items()},
    }


async def end_to_end(db: dict[str, asyncpg.Pool], run: Run, since: float, until: float) -> dict:
    """Per case whose vedtak was confirmed in [since, until]: ms from that confirm to the
    envelope time of its `bosetting.bosatt` (bosetting's outbox)."""
    rows = await db["bosetting"].fetch(
        "SELECT subject, min(extract(epoch FROM (body::json->>'time')::timestamptz))::float8 AS t "
        "FROM outbox WHERE type = 'bosetting.bosatt' AND subject = ANY($1) GROUP BY subject",
        [s for s, t in run.vedtak.items() if since <= t <= until],
    )
    values = [(r["t"] - run.vedtak[r["subject"]]) * 1000 for r in rows]
    return distribution(values)


async def stage_medians(db: dict[str, asyncpg.Pool], run: Run, cases: list[str]) -> list[dict]:
    """Where a case's time goes: the median ms from its vedtak to the first event of each
    type it led to (kartlegging and bosetting outboxes)."""
    firsts: dict[str, dict[str, float]] = defaultdict(dict)
    for service in ("kartlegging", "bosetting"):
        rows = await db[service].fetch(
            "SELECT subject, type, min(extract(epoch FROM (body::json->>'time')::timestamptz))::float8 AS t "
            "FROM outbox WHERE subject = ANY($1) GROUP BY subject, type", cases,
        )
        for r in rows:
            firsts[r["type"]][r["subject"]] = r["t"]
    out = []
    for et, by_case in firsts.items():
        values = sorted((t - run.vedtak[s]) * 1000 for s, t in by_case.items() if s in run.vedtak)
        if values:
            out.append({"event": et, "cases": len(values), "median_ms_after_vedtak": round(percentile(values, 50), 1)})
    return sorted(out, key=lambda r: r["median_ms_after_vedtak"])


# --- profile -------------------------------------------------------------------------------


def py_spy() -> str | None:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


async def queue_backlog() -> dict[str, int]:
    """Messages ready plus delivered-but-unacked in each service's queue (rabbitmqctl: a
    passive declare counts only the ready ones, and a river holds up to its prefetch)."""
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    proc = await asyncio.create_subprocess_exec(
        ctl, "-q", "list_queues", "-p", ENV.name, "name", "messages_ready", "messages_unacknowledged",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    backlog = {}
    for line in out.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in SERVICES and parts[1].isdigit():
            backlog[parts[0]] = int(parts[1]) + int(parts[2])
    return backlog


async def profile_slowest(sampler: Sampler, seconds: float, out: Path, only: str | None = None) -> dict:
    """py-spy, for `seconds` under load, on the slowest process: the service with the most
    messages waiting for it (ready or unacked, two looks 2 s apart), or if none has any,
    the chain process with the most CPU meanwhile."""
    exe = py_spy()
    if exe is None:
        return {"error": "py-spy not found (pip install py-spy into the venv)"}
    before = sampler.cpu()
    first = await queue_backlog()
    await asyncio.sleep(2.0)
    second = await queue_backlog()
    share = cpu_percent(before, sampler.cpu())
    chain = {k: v for k, v in share.items() if k in sampler.pids()}
    depth = {s: first.get(s, 0) + second.get(s, 0) for s in SERVICES}
    name = max(depth, key=depth.get) if max(depth.values()) > 0 else max(chain, key=chain.get)
    name = only or name
    pid = sampler.pids()[name]
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"profile-{name}.txt"
    proc = await asyncio.create_subprocess_exec(
        exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100", "--format", "raw",
        "--nonblocking", "--output", str(raw), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0 or not raw.exists():
        return {"process": name, "error": err.decode(errors="replace")[-500:]}
    summary = collapsed_summary(raw.read_text())
    return {"process": name, "cpu_percent_before": chain, "backlog_before": {"first": first, "second": second}, "seconds": seconds,
            "file": str(raw.relative_to(ROOT))} | summary


# --- the run -------------------------------------------------------------------------------


async def main(args) -> dict:
    t_all = time.perf_counter()
    os.environ.pop("CHAIN_KLOKKE", None)  # the real clock: no mapping weeks, no business waits
    settings.cache_clear()
    procs = ProcessGroup(ENV, LOGS / "logs")
    procs.check_ports()
    knr = [k for k, _, _ in kommunar()]
    load = take_persons(households(int(args.persons / 1.2) + 10, args.seed, knr), args.persons)
    result: dict = {"run_id": str(uuid4()), "machine": machine(), "settings": vars(args).copy()}
    progress = Progress(TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=False)
    with progress:
        await ENV.reset()
        base = await baselines(args.hop_messages, progress, args.baseline_timeout)
        result["baselines"] = base  # each leaves an empty vhost and no databases behind
        sampler = Sampler(procs)
        db: dict[str, asyncpg.Pool] = {}
        try:
            t = progress.add_task("chain: start 3 services, 3 relays", total=1)
            await procs.start_all()
            progress.advance(t)
            for service in SERVICES:
                db[service] = await asyncpg.create_pool(ENV.settings().database_url(service), min_size=1, max_size=2)
            await asyncio.sleep(2.0)  # reference data loaded, queues idle
            idle = sampler.memory()

            # -- throughput: the whole workload at once
            before_counts = await counts(db)
            cpu0 = sampler.cpu()
            profile_task = None

            async def profile() -> None:
                nonlocal profile_task
                profile_task = await profile_slowest(sampler, args.profile_seconds, LOGS, args.profile_process)

            run = await drive(load, 1e9, args.timeout, progress, "throughput", sampler, args.consumers, args.stall, args.places_slack,
                              on_load=profile if args.profile else None)
            cpu1 = sampler.cpu()
            mem_load = sampler.memory()
            t = progress.add_task("throughput: waiting for kompetanse to catch up", total=1)
            caught_up = await wait_drained(db, 300)
            progress.advance(t)
            after_counts = await counts(db)
            persons = {h.sak_id: h.persons for h in load}
            tp = throughput(run.started, run.sim.settled_at, persons)
            deliveries = sum(after_counts[s]["inbox"] - before_counts[s]["inbox"] for s in SERVICES)
            events = sum(after_counts[s]["outbox"] - before_counts[s]["outbox"] for s in SERVICES)
            tp |= {
                "households": len(load), "persons_published": sum(persons.values()),
                "withdrawn": len(run.sim.withdrawn_cases), "timed_out": run.timed_out,
                "unfinished": await unfinished_by_status(db, run.unfinished),
                "publish_seconds": round(run.published - run.started, 2),
                "caught_up_seconds": round(caught_up - run.started, 2) if caught_up else None,
                "deliveries": deliveries, "events_emitted": events,
                "deliveries_per_person": round(deliveries / max(1, tp["persons"]), 2),
                "events_per_person": round(events / max(1, tp["persons"]), 2),
                "inbox_by_service": {s: after_counts[s]["inbox"] - before_counts[s]["inbox"] for s in SERVICES},
                "errors": run.sim.errors[:10], "counts": dict(run.sim.counts),
                "cpu_percent": cpu_percent(cpu0, cpu1),
                "cpu_ms_per_person": cpu_per_person(cpu0, cpu1, tp["persons"]),
                "sim_latency_s": distribution(run.sim.latencies()),
                "river_stats": await river_stats(),
                "settled_per_5s": timeline(run.started, run.sim.settled_at, persons, 5.0),
                "queue_depth": {s: {"max": max(v or [0]), "mean": round(sum(v) / max(1, len(v)), 1)}
                                for s, v in sampler.depths.items()},
            }
            result["throughput"] = tp
            result["memory"] = {"idle": idle, "after_throughput": mem_load,
                                "max_sampled_rss_mib": {k: round(v / 1024, 1) for k, v in sampler.max_rss.items()}}
            if profile_task is not None:
                result["profile"] = profile_task

            # -- latency: a fresh workload at half the measured rate
            rate_persons = (tp["persons_per_second"] or 1.0) / 2
            pool = households(int(rate_persons * args.latency_seconds) + 50, args.seed + 1, knr)
            per_household = sum(h.persons for h in pool) / len(pool)
            rate_households = rate_persons / per_household
            lat_load = pool[: max(10, int(rate_households * args.latency_seconds))]
            lcpu0 = sampler.cpu()
            lrun = await drive(lat_load, rate_households, args.timeout, progress, "latency (half rate)", sampler, args.consumers, args.stall,
                                args.places_slack)
            lcpu1 = sampler.cpu()
            t = progress.add_task("latency: waiting for the chain to drain", total=1)
            await wait_drained(db, 300)
            progress.advance(t)
            warm = lrun.started_wall + args.warmup
            end = lrun.started_wall + (lrun.published - lrun.started)
            lpersons = {h.sak_id: h.persons for h in lat_load}
            # Keeping up: in the window after the warm-up, as many persons settle a second as arrive.
            lo, hi = lrun.started + args.warmup, lrun.published
            offered = window_rate(lrun.sim.published_at, lpersons, lo, hi)
            settled_rate = window_rate(lrun.sim.settled_at, lpersons, lo, hi)
            cases = [s for s, t in lrun.vedtak.items() if warm <= t <= end]
            result["latency"] = {
                "rate_persons_per_second": round(rate_persons, 1),
                "rate_households_per_second": round(rate_households, 2),
                "households": len(lat_load), "persons": sum(h.persons for h in lat_load),
                "offered_persons_per_second": offered,
                "settled_persons_per_second": settled_rate,
                "timed_out": lrun.timed_out, "errors": lrun.sim.errors[:10],
                "unfinished": await unfinished_by_status(db, lrun.unfinished),
                "window_seconds": round(end - warm, 1),
                "hops": await hop_rows(db, lrun, warm, end),
                "end_to_end_ms": await end_to_end(db, lrun, warm, end),
                "stages": await stage_medians(db, lrun, cases),
                "sim_latency_s": distribution(lrun.sim.latencies()),
                "river_stats_end": await river_stats(),
                "cpu_percent": cpu_percent(lcpu0, lcpu1),
            }
            result["memory"]["end"] = sampler.memory()
            result["dlq"] = await dlq_depths()
        finally:
            for pool in db.values():
                await pool.close()
            procs.stop_all()
    result["total_seconds"] = round(time.perf_counter() - t_all, 1)
    result["rows"] = rows(result)
    write(result)
    return result


def rows(r: dict) -> list[dict]:
    b, tp, lat = r["baselines"], r["throughput"], r["latency"]
    dpp = tp["deliveries_per_person"]
    value = tp["persons_per_second"]
    goal_tp = Goal(f"value >= {GOAL_PERSONS_PER_SECOND:.1f} (2023's {PERSONS_2023:,} persons in < {GOAL_SECONDS_2023:g} s)", "value", ">=",
                   GOAL_PERSONS_PER_SECOND)
    raw_ceiling = round(b["raw_forward_msg_per_s"] / dpp, 1) if dpp and b.get("raw_forward_msg_per_s") else None
    durable_ceiling = round(b["durable_hop_msg_per_s"] / dpp, 1) if dpp and b.get("durable_hop_msg_per_s") else None
    out = [
        row("whole chain, persons/s (first vedtak.fattet to last bosetting.bosatt, whole workload at once)", value,
            f"raw aio-pika forward msg/s ÷ {dpp} service deliveries per person", raw_ceiling, goal_tp),
        row("whole chain, persons/s (same run)", value,
            f"durable hop (river + outbox + relay) msg/s ÷ {dpp} deliveries per person", durable_ceiling, REPORT),
        row(f"time for 2023's {PERSONS_2023:,} persons at that rate, s", round(PERSONS_2023 / value, 1) if value else None,
            "at the raw-forward ceiling, s", round(PERSONS_2023 / raw_ceiling, 1) if raw_ceiling else None,
            Goal(f"value <= {GOAL_SECONDS_2023:g}", "value", "<=", GOAL_SECONDS_2023)),
    ]
    budget = round(1000 * (r["machine"]["cpu_count"] or 2) / GOAL_PERSONS_PER_SECOND, 1)
    out.append(row("CPU per settled person, ms (services, relays, simulator, PostgreSQL, RabbitMQ)",
                   tp.get("cpu_ms_per_person", {}).get("chain"),
                   f"the goal's budget: {r['machine']['cpu_count']} cores ÷ {GOAL_PERSONS_PER_SECOND:.1f} persons/s, ms", budget,
                   Goal(f"value <= {budget}", "value", "<=", budget)))
    raw_lat = b.get("raw_hop_latency_ms") or {"p50": None, "p99": None}
    h = lat["hops"]
    goal_hop = Goal(f"p99 < {GOAL_HOP_P99_MS:g} ms", "value", "<=", GOAL_HOP_P99_MS)
    out.append(row(f"hop p50 ms, all hops (at {lat['rate_persons_per_second']} persons/s)", h["all"]["p50"],
                   f"raw broker hop p50 ms ({b['raw_hop_latency_rate']} msg/s)", raw_lat["p50"], REPORT))
    out.append(row(f"hop p99 ms, all hops ({h['all']['n']} deliveries)", h["all"]["p99"],
                   "raw broker hop p99 ms", raw_lat["p99"], goal_hop))
    for edge, d in h["edges"].items():
        if d["n"] >= 20:
            out.append(row(f"hop p99 ms, {edge} (n={d['n']}, p50 {d['p50']})", d["p99"], "raw broker hop p99 ms", raw_lat["p99"], goal_hop))
    e2e = lat["end_to_end_ms"]
    fixed = FIXED_WAITS_S * 1000
    out.append(row(f"end to end p50 ms, vedtak confirmed to bosatt emitted (n={e2e['n']})", e2e["p50"],
                   "fixed waits on the path (allocation + caseworker intervals), ms", fixed, REPORT))
    out.append(row("end to end p99 ms", e2e["p99"], "fixed waits on the path, ms", fixed, REPORT))
    out.append(row("half-rate phase: persons settled per s (after the warm-up, while vedtak arrive)", lat["settled_persons_per_second"],
                   "persons arriving per s, same window",
                   lat["offered_persons_per_second"], Goal(f"ratio >= {SUSTAINED}", "ratio", ">=", SUSTAINED)))
    mem = r["memory"]
    for name, m in mem["end"].items():
        if name == "bench (simulator)":
            continue
        peak = mem["after_throughput"].get(name, m)["peak_rss_mib"]
        out.append(row(f"peak RSS MiB, {name} (under whole-chain load)", peak, "RSS after start-up, MiB",
                       mem["idle"].get(name, {}).get("rss_mib"), REPORT))
    finished = tp["persons"] > 0 and not tp["timed_out"] and not lat["timed_out"]
    errors = len(tp["errors"]) + len(lat["errors"]) + sum(r.get("dlq", {}).values())
    stuck = {k: tp["unfinished"].get(k, 0) + lat["unfinished"].get(k, 0) for k in {**tp["unfinished"], **lat["unfinished"]}}
    out.append(row("every case settled or withdrawn, no errors, no dead letters",
                   "yes" if finished and not errors else f"no (unfinished: {stuck or 'none'}; errors: {errors})",
                   goal=Goal("yes", "value", None)))
    out[-1]["met"] = bool(finished and not errors)
    return out


def markdown(r: dict) -> str:
    m, tp, lat, b = r["machine"], r["throughput"], r["latency"], r["baselines"]
    rivers = "; ".join(f"{s} " + "/".join(str(v) for v in (st or {}).values()) for s, st in tp.get("river_stats", {}).items())
    depths = "; ".join(f"{s} {d['max']}/{d['mean']}" for s, d in tp.get("queue_depth", {}).items())
    timeline_5s = " ".join(str(x) for x in tp.get("settled_per_5s", []))
    out = [
        "# The whole chain under load",
        "",
        f"Run {r['run_id']} on {m['description']}, Python {m['python']}; {r['total_seconds']} s in all. "
        f"`python -m bench.chain` (see its docstring). The three services and three relays run as processes on the "
        f"same 2 cores as RabbitMQ, PostgreSQL and the simulator (this process); other people's runs may share the "
        f"machine, so compare ratios of one run.",
        "",
        table(r["rows"]),
        f"**Throughput.** {tp['households']} households ({tp['persons_published']} persons; {tp['persons']} settled, "
        f"{tp['withdrawn']} households withdrawn) published at once (in {tp['publish_seconds']} s, with their "
        f"identities registered at kompetanse); the last bosatt came {tp['seconds']} s after the first vedtak "
        f"(steady rate between 10% and 90% settled: {tp['steady_persons_per_second']} persons/s); kompetanse and the relays "
        f"had caught up at {tp['caught_up_seconds']} s. The chain consumed {tp['deliveries']} deliveries "
        f"({tp['deliveries_per_person']} per settled person; by service {tp['inbox_by_service']}) and emitted "
        f"{tp['events_emitted']} events ({tp['events_per_person']} per person); persons settled per 5 s: "
        f"{timeline_5s}. River counters (applied, duplicates, delayed "
        f"retries, dead letters) after the phase: "
        f"{rivers}; messages ready in each service queue (not counting those a river holds unacked, up to its prefetch), max and mean of a sample a second: {depths}. "
        f"Kommunar decided {r['settings']['places_slack']:g} places per person of the workload (the simulator alone decides "
        f"2023's 1.07 and asks for more when a household fits nowhere, which paces settlement by its asking, not the chain). The baseline is the broker's raw "
        f"forward rate ({b['raw_forward_msg_per_s']} msg/s: consume, publish with confirm, ack; no database) divided by "
        f"the deliveries a person costs: the persons/s the broker alone would allow if each delivery were a bare "
        f"forward. The second baseline does the same with the durable hop ({b['durable_hop_msg_per_s']} msg/s: inbox, "
        f"state and outbox in one transaction, the relay publishing), the chain's own plumbing without its domain "
        f"work, HTTP calls and allocation.",
        "",
        f"**Latency.** {lat['households']} other households ({lat['persons']} persons) at half that rate "
        f"({lat['rate_persons_per_second']} persons/s asked of the publisher; after the warm-up "
        f"{lat['offered_persons_per_second']} persons/s arrived and {lat['settled_persons_per_second']} settled); events produced in a {lat['window_seconds']} s "
        f"window after a {r['settings']['warmup']:g} s warm-up. A hop runs from the event's envelope `time` (set when "
        f"the producer's handler emits it, inside its transaction, shortly before the commit; for the simulator's own "
        f"events the broker's confirm) to the consumer's inbox row `received_at`. Both database stamps are "
        f"`now()`, the *start* of their transactions: the schema has no commit time (see below). End to end runs from "
        f"the vedtak's confirm to the envelope time of its case's `bosetting.bosatt`, through kartlegging, the "
        f"simulated mottak's mapping over HTTP, bosetting's allocation batch (every 0.5 s), the simulated caseworker's "
        f"confirmation (every 0.5 s) and the kommune's answer and move-in over HTTP.",
        "",
        "| hop | n | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    for edge, d in lat["hops"]["edges"].items():
        out.append(f"| {edge} | {d['n']} | {d['p50']} | {d['p90']} | {d['p99']} | {d['max']} |")
    out += ["", "The relay's share of a hop (envelope time to the outbox row's `published_at`, set after the "
            "broker's confirm), and how long after its transaction started the handler emitted (envelope time "
            "minus `created_at`):", "",
            "| producer | relay p50 ms | relay p99 ms | emit after txn start p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for s, d in lat["hops"]["relay_ms"].items():
        e = lat["hops"]["emit_after_txn_start_ms"].get(s, {})
        out.append(f"| {s} | {d['p50']} | {d['p99']} | {e.get('p50')} | {e.get('p99')} |")
    out += ["", "Where a case's time goes (median ms from the vedtak's confirm to the first event of each type):", "",
            "| event | cases | median ms after vedtak |", "|---|---|---|"]
    for s in lat["stages"]:
        out.append(f"| {s['event']} | {s['cases']} | {s['median_ms_after_vedtak']} |")
    out += ["", "**CPU during the throughput phase** (% of one core; the machine has "
            f"{m['cpu_count']}; PostgreSQL and RabbitMQ machine-wide):", "",
            "| process | CPU % | CPU ms per settled person | peak RSS MiB | RSS after start-up MiB |", "|---|---|---|---|---|"]
    mem = r["memory"]
    per_person = tp.get("cpu_ms_per_person", {})
    for name, pct in sorted(tp["cpu_percent"].items(), key=lambda kv: -kv[1]):
        peak = mem["after_throughput"].get(name, {}).get("peak_rss_mib", "")
        idle = mem["idle"].get(name, {}).get("rss_mib", "")
        out.append(f"| {name} | {pct} | {per_person.get(name, '')} | {peak} | {idle} |")
    busy = {phase: d["cpu_percent"].get("other", 0) for phase, d in (("throughput", tp), ("latency", lat)) if "cpu_percent" in d}
    if any(v > 20 for v in busy.values()):
        out += ["", f"**Warning:** other processes (not this run's) used {busy} % of a core during the phases: "
                "the figures are skewed; compare the ratios, and runs on a quiet machine."]
    p = r.get("profile")
    if p and "self" in p:
        chosen = "chosen by --profile-process" if r["settings"].get("profile_process") else "the slowest process under load"
        out += ["", f"**Profile** of {chosen}, `{p['process']}` (by default the service with the most messages "
                f"waiting for it, ready or unacked; two looks 2 s apart: {p.get('backlog_before')}; CPU % meanwhile "
                f"{p.get('cpu_percent_before')}). py-spy, {p['seconds']:g} s, "
                f"{p['samples']} samples, raw stacks in `{p['file']}`; share of samples:", "",
                "| on top of the stack (self) | share | the project's code on the stack (total) | share |", "|---|---|---|---|"]
        for i in range(max(len(p["self"]), len(p["total"]))):
            f1, s1 = p["self"][i] if i < len(p["self"]) else ("", None)
            f2, s2 = p["total"][i] if i < len(p["total"]) else ("", None)
            out.append(f"| {f'`{f1}`' if f1 else ''} | {'' if s1 is None else f'{s1:.0%}'} | "
                       f"{f'`{f2}`' if f2 else ''} | {'' if s2 is None else f'{s2:.0%}'} |")
        out += ["", "Self time by package: " + ", ".join(f"{k} {v:.0%}" for k, v in p.get("self_by_package", [])) + "."]
    if b.get("errors"):
        out += ["", "**Baselines missing:** " + "; ".join(f"{k}: {v.strip().splitlines()[-1] if v.strip() else v}" for k, v in b["errors"].items())]
    out += ["", "**Timestamps.** `outbox.created_at` and `inbox.received_at` default to `now()`, the start of the "
            "transaction, and `track_commit_timestamp` is off on this server, so neither the producer's nor the "
            "consumer's commit time is recorded. The hop above therefore leaves out the consumer's own transaction "
            "and ends when it starts; a `committed_at` would need `track_commit_timestamp = on` "
            "(`pg_xact_commit_timestamp(xmin)`, a server restart) or a column the service stamps with "
            "`clock_timestamp()` as the last statement before commit (a shared migration)."]
    return "\n".join(out) + "\n"


def write(result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "chain.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    (RESULTS / "chain.md").write_text(markdown(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--persons", type=int, default=2_000, help="persons in the throughput workload (default 2,000)")
    parser.add_argument("--year", action="store_true", help=f"the throughput workload is a full 2023: {PERSONS_2023:,} persons")
    parser.add_argument("--latency-seconds", type=float, default=45.0, help="seconds of arrivals at half rate (default 45)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of the latency phase left out of the figures")
    parser.add_argument("--hop-messages", type=int, default=5_000, help="messages for the hop baselines (default 5,000)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=900.0, help="most seconds a phase may take")
    parser.add_argument("--stall", type=float, default=30.0,
                        help="end a phase when no case has finished for this many seconds after the last arrival")
    parser.add_argument("--places-slack", type=float, default=1.5,
                        help="kommunar decide this many places per person of the workload (0: the simulator's own, 2023's 1.07)")
    parser.add_argument("--consumers", action="store_true", help="NAV and Oslo read their notifications meanwhile (notify, then pull)")
    parser.add_argument("--profile", action="store_true", help="py-spy the busiest process under load (needs py-spy in the venv)")
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument("--profile-process", choices=[*SERVICES, *(f"{s}-relay" for s in SERVICES)],
                        help="profile this process instead of the slowest")
    parser.add_argument("--baseline-timeout", type=float, default=180.0, help="most seconds a baseline may take")
    parser.add_argument("--render", action="store_true", help="only rewrite chain.md from chain.json")
    parser.add_argument("--baseline", choices=["raw", "durable", "latency"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:  # a child of the bench: one baseline, its figure as JSON on the last line
        configure("bench-chain", "WARNING")
        print(json.dumps(asyncio.run(baseline(args.baseline, args.hop_messages))))
        sys.exit(0)
    if args.render:
        saved = json.loads((RESULTS / "chain.json").read_text())
        saved["rows"] = rows(saved)
        write(saved)
        sys.exit(0)
    if args.year:
        args.persons = PERSONS_2023
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds like Ctrl-C: the processes are stopped
    result = asyncio.run(main(args))
    print(json.dumps({k: result[k] for k in ("run_id", "total_seconds", "rows")}, indent=2, ensure_ascii=False))
