"""`make chaos` (`python -m sim.chaos`): faults injected, nothing lost.

On a throwaway RabbitMQ node and PostgreSQL cluster of its own (sim/sandbox.py: the
machine's shared ones are never touched), three phases:

1. **Faults.** A workload of `--persons` persons (households from `vedtak.fattet` to
   `bosetting.bosatt`, the simulator playing UDI, mottak, IMDi's caseworker and kommunar)
   while, at random moments drawn from `--seed` (printed, so a run can be repeated), each
   service and each outbox relay is SIGKILLed `--kills` times and started again, each
   service is stopped once with SIGTERM under load (it must exit 0 in time) and started
   again, RabbitMQ is restarted once and PostgreSQL once (an immediate stop: a crash).
2. **One replica**, a smaller workload, no faults: the reference.
3. **Two replicas** of every service and relay consuming at once, the same workload, and
   for a share of the cases every event duplicated and reordered: the driver's own events
   held back a random moment and copies published straight to the queues bound to them,
   and the services' events tapped from `chain.events` and copied, shuffled, straight to
   their consumers' queues.

After each phase, once queues and outboxes are drained, the stores are checked against
what the driver knows (`verify`): every case in its final state, each household settled
exactly once, every event recorded exactly once in the inbox of every service bound to
it, each effect counted once (cases, persons, mappings, profiles), DLQs empty. Phase 3's
stores must equal phase 2's (`snapshot`: the tables' timing-independent columns).

Figures go to the console and to `bench/results/chaos.{json,md}` (`--results`).
"""

import argparse
import asyncio
import contextlib
import json
import logging
import random
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import aio_pika
import asyncpg
import httpx

from bench.chain import ample_places, take_persons
from sim.actors import Simulator
from sim.demo import kommunar
from sim.environment import SERVICES, Environment
from sim.processes import ProcessGroup
from sim.sandbox import Sandbox
from sim.workload import Household, _fraction, correction, households, withdrawn

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# The queues the services consume, and whose inbox (database) records what they applied.
CONSUMED = {"kartlegging": "kartlegging", "bosetting": "bosetting", "kompetanse": "kompetanse", "kartlegging.mottak-inn": "kartlegging"}
GRACEFUL_SECONDS = 45.0  # uvicorn's graceful timeout (25 s) and then the river's last batches


def say(text: str) -> None:
    print(text, flush=True)


@dataclass(frozen=True)
class Config:
    persons: int = 10_000
    seed: int = 1
    fault_window: float = 240.0  # faults fall at random moments in this many seconds from the start
    kills: int = 3  # SIGKILLs of each service and each relay
    rate: float = 40.0  # households a second from UDI (the backlog is what the faults hit)
    replica_persons: int = 1_000
    mangled_share: float = 0.2  # cases whose events are duplicated and reordered in phase 3
    timeout: float = 1200.0  # per phase
    base_port: int = 9550  # sandbox: AMQP, Erlang distribution, PostgreSQL; services from base + 10
    results: Path = RESULTS


# --- the fault schedule ----------------------------------------------------------------------


@dataclass
class Fault:
    at: float  # planned, seconds from the phase's start
    kind: str  # sigkill, sigterm, rabbitmq_restart, postgres_restart
    target: str
    started: float | None = None  # when it was injected (faults wait for the one before)
    seconds: float | None = None  # until the target was back
    result: str = ""


def schedule(cfg: Config) -> list[Fault]:
    """The faults of a run, at moments drawn from the seed alone: the same seed, the same plan."""
    rng = random.Random(f"chaos-{cfg.seed}")
    plan = []
    for service in SERVICES:
        for name in (service, f"{service}-relay"):
            plan += [Fault(0.0, "sigkill", name) for _ in range(cfg.kills)]
        plan.append(Fault(0.0, "sigterm", service))
    plan += [Fault(0.0, "rabbitmq_restart", "rabbitmq"), Fault(0.0, "postgres_restart", "postgresql")]
    for fault in plan:
        fault.at = round(rng.uniform(0.05, 1.0) * cfg.fault_window, 1)
    return sorted(plan, key=lambda f: f.at)


@dataclass
class Injector:
    """Injects the planned faults; meanwhile restarts any process that died on its own
    (as an orchestrator would) and records it as a finding."""

    procs: ProcessGroup
    sandbox: Sandbox
    plan: list[Fault]
    rng: random.Random
    started: float = field(default_factory=time.monotonic)
    crashed: list[dict] = field(default_factory=list)
    busy: set[str] = field(default_factory=set)

    async def run(self) -> None:
        for fault in self.plan:
            await asyncio.sleep(max(0.0, self.started + fault.at - time.monotonic()))
            fault.started = round(time.monotonic() - self.started, 1)
            t = time.monotonic()
            try:
                await self._inject(fault)
            except Exception as exc:  # a fault the chain did not come back from is a finding too
                fault.result = f"failed: {type(exc).__name__}: {exc}"[:300]
            fault.seconds = round(time.monotonic() - t, 1)
            say(f"  t={fault.started:7.1f}s {fault.kind:<17} {fault.target:<18} {fault.seconds:5.1f}s {fault.result}")

    async def _inject(self, fault: Fault) -> None:
        match fault.kind:
            case "sigkill":
                self.busy.add(fault.target)
                try:
                    self.procs.kill(fault.target)
                    await asyncio.sleep(self.rng.uniform(0.2, 2.0))
                    await self._restart(fault.target)
                finally:
                    self.busy.discard(fault.target)
                fault.result = "back"
            case "sigterm":
                self.busy.add(fault.target)
                try:
                    t = time.monotonic()
                    code = await asyncio.to_thread(self.procs.terminate, fault.target, GRACEFUL_SECONDS + 30)
                    fault.result = f"exit {code} after {time.monotonic() - t:.1f}s"
                    await self._restart(fault.target)
                finally:
                    self.busy.discard(fault.target)
            case "rabbitmq_restart":
                await asyncio.to_thread(self.sandbox.restart_rabbitmq, self.rng.uniform(0.5, 3.0))
                await self.procs.wait_ready(SERVICES, 180)
                fault.result = "back"
            case "postgres_restart":
                await asyncio.to_thread(self.sandbox.restart_postgres)
                await self.procs.wait_ready(SERVICES, 180)
                fault.result = "back"

    async def _restart(self, name: str) -> None:
        self.procs.start(name)
        if "-relay" not in name:
            await self.procs.wait_ready([name], 180)

    async def supervise(self) -> None:
        """Restart a process that exited without being told to: the chain must not depend
        on it staying down, and the report names it."""
        while True:
            await asyncio.sleep(1.0)
            for name, proc in list(self.procs.procs.items()):
                if name not in self.busy and proc.poll() is not None:
                    self.crashed.append({"t": round(time.monotonic() - self.started, 1), "process": name, "exit": proc.returncode})
                    say(f"  !! {name} exited on its own ({proc.returncode}); restarting it")
                    self.procs.procs.pop(name)
                    self.procs.start(name)


def graceful(plan: list[Fault]) -> list[str]:
    """SIGTERMs that did not end in exit 0 within the graceful timeout."""
    bad = []
    for f in plan:
        if f.kind == "sigterm":
            code, _, rest = f.result.removeprefix("exit ").partition(" after ")
            if code != "0" or float(rest.removesuffix("s") or 1e9) > GRACEFUL_SECONDS:
                bad.append(f"{f.target}: {f.result}")
    return bad


# --- the driver ------------------------------------------------------------------------------


class Steadfast:
    """A producer's exchange that keeps trying to publish (a broker restart makes a publish
    fail or hang): at least once, as a real producer does; the consumers' inboxes absorb a
    publish that reached the broker although its confirm was lost. Records what was sent."""

    def __init__(self, exchange, sent: dict[str, dict]):
        self._exchange = exchange
        self._sent = sent

    async def publish(self, message: aio_pika.Message, routing_key: str, **kwargs) -> None:
        for attempt in range(600):
            try:
                await asyncio.wait_for(self._exchange.publish(message, routing_key, **kwargs), 10)
                break
            except Exception:  # noqa: BLE001 - down or reconnecting: try again
                await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))
        else:
            raise TimeoutError(f"could not publish {routing_key} for two minutes")
        body = json.loads(message.body)
        self._sent[body["id"]] = {"source": body["source"], "type": body["type"], "subject": body["subject"], "exchange": self._exchange.name}

    def __getattr__(self, name):
        return getattr(self._exchange, name)


async def drive(env: Environment, procs: ProcessGroup, workload: list[Household], cfg: Config, during=None, wrap=None) -> tuple[Simulator, dict]:
    """The simulator over `workload` until every case is settled or withdrawn (or the
    phase's timeout); `during(sim)` runs alongside (the faults). The driver's own events,
    by id: what the services must have recorded."""
    sent: dict[str, dict] = {}
    knr = [k for k, _, _ in kommunar()]
    async with Simulator(env, workload, kommunenummer=knr) as sim:
        sim.exchange = Steadfast(sim.exchange, sent)
        sim.mottak_inn = Steadfast(sim.mottak_inn, sent)
        if wrap is not None:
            sim.exchange, sim.mottak_inn = wrap(sim.exchange), wrap(sim.mottak_inn)
        await sim.decide_capacity(kommunar(), date.today().year)
        # Places enough that settlement is paced by the chain, not by IMDi asking for more.
        await ample_places(sim, workload, 1.5)
        arrivals = asyncio.create_task(sim.publish_vedtak(cfg.rate))
        caseworker = asyncio.create_task(sim.caseworker(interval=0.5))
        side = asyncio.create_task(during(sim)) if during else None
        started, shown = time.monotonic(), 0.0
        try:
            while not sim.done and time.monotonic() - started < cfg.timeout:
                await asyncio.sleep(0.5)
                if arrivals.done() and arrivals.exception():
                    raise arrivals.exception()
                if time.monotonic() - shown > 15:
                    shown = time.monotonic()
                    settled = sum(sim.by_sak[s].persons for s in sim.settled_at)
                    say(f"  {time.monotonic() - started:6.0f}s: {sim.counts['vedtak']} vedtak, "
                        f"{len(sim.settled_at)} households ({settled} persons) settled, {len(sim.withdrawn_cases)} withdrawn")
            if side is not None:
                await side  # every fault injected and the process back, before the checks
        finally:
            for task in (arrivals, caseworker, side):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(arrivals, caseworker, *([side] if side else []), return_exceptions=True)
    return sim, sent


# --- duplicated and reordered deliveries (phase 3) ------------------------------------------


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: `*` is one word, `#` zero or more."""
    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])
    return match(pattern.split("."), key.split("."))


def bindings(sandbox: Sandbox, vhost: str) -> dict[str, list[tuple[str, str]]]:
    """(exchange, routing key pattern) per consumed queue, as the broker has them."""
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for line in sandbox.rabbitmqctl("list_bindings", "-p", vhost, "source_name", "destination_name", "routing_key").splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1] in CONSUMED and parts[0]:
            out[parts[1]].append((parts[0], parts[2]))
    return out


def bound_queues(bound: dict[str, list[tuple[str, str]]], exchange: str, key: str) -> list[str]:
    return [q for q, bs in bound.items() if any(x == exchange and topic_matches(p, key) for x, p in bs)]


class Mangler:
    """For the chosen cases: the driver's event is held back a random moment (a later one
    of the case may overtake it) and a copy goes straight to every queue bound to it."""

    def __init__(self, exchange, channel, bound, chosen, rng: random.Random, pending: list):
        self._exchange, self._channel, self._bound, self._chosen, self._rng = exchange, channel, bound, chosen, rng
        self._pending = pending

    async def publish(self, message: aio_pika.Message, routing_key: str, **kwargs) -> None:
        subject = json.loads(message.body)["subject"]
        if not self._chosen(subject):
            await self._exchange.publish(message, routing_key, **kwargs)
            return
        self._pending.append(asyncio.create_task(self._later(self._exchange.publish(message, routing_key, **kwargs))))
        for queue in bound_queues(self._bound, self._exchange.name, routing_key):
            copy = _copy(message.body, routing_key)
            self._pending.append(asyncio.create_task(self._later(self._channel.default_exchange.publish(copy, routing_key=queue))))

    async def _later(self, publish) -> None:
        await asyncio.sleep(self._rng.uniform(0.0, 2.5))
        await publish

    def __getattr__(self, name):
        return getattr(self._exchange, name)


def _copy(body: bytes, routing_key: str) -> aio_pika.Message:
    return aio_pika.Message(
        body, content_type="application/cloudevents+json", type=routing_key, message_id=json.loads(body)["id"],
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def tap_and_copy(env: Environment, bound, chosen, rng: random.Random, copies: Counter) -> None:
    """The services' own events of the chosen cases, copied in shuffled order straight to
    the queues bound to them (a redelivery storm, and copies overtaking one another)."""
    held: list[tuple[str, bytes]] = []

    async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        envelope = json.loads(message.body)
        if envelope["source"].startswith("urn:chain:") and chosen(envelope["subject"]):
            held.append((message.routing_key, message.body))
        await message.ack()

    connection = await aio_pika.connect(env.settings().amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=500)
        tap = await channel.declare_queue("chaos.tap", exclusive=True)
        await tap.bind("chain.events", "#")
        await tap.consume(keep)
        while True:
            await asyncio.sleep(rng.uniform(0.1, 1.0))
            batch, held[:] = list(held), []
            rng.shuffle(batch)
            for key, body in batch:
                for queue in bound_queues(bound, "chain.events", key):
                    await channel.default_exchange.publish(_copy(body, key), routing_key=queue)
                    copies[queue] += 1


# --- checks ----------------------------------------------------------------------------------


def final_persons(h: Household) -> list[str]:
    fixed = correction(h)
    return [p.person_id for p in (fixed.personar if fixed else h.vedtak.personar)]


async def wait_drained(env: Environment, sandbox: Sandbox, timeout: float = 300.0) -> bool:
    """Every outbox published, every queue empty (retry tiers too) and nothing in hand:
    twice in a row, a few seconds apart."""
    calm = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        backlog = 0
        for service in SERVICES:
            conn = await asyncpg.connect(env.settings().database_url(service))
            try:
                backlog += await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            finally:
                await conn.close()
        depths = queue_depths(sandbox, env.name)
        busy = backlog + sum(n + u for q, (n, u) in depths.items() if not q.endswith(".dlq") and not q.startswith(("kompetanse.varsel", "sim.", "chaos.", "chain.eventlog")))
        calm = calm + 1 if busy == 0 else 0
        if calm >= 2:
            return True
        await asyncio.sleep(2.0)
    return False


def queue_depths(sandbox: Sandbox, vhost: str) -> dict[str, tuple[int, int]]:
    """Ready and unacked messages per queue."""
    out = {}
    for line in sandbox.rabbitmqctl("list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged").splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].isdigit():
            out[parts[0]] = (int(parts[1]), int(parts[2] or 0))
    return out


async def verify(env: Environment, sandbox: Sandbox, workload: list[Household], sim: Simulator, sent: dict[str, dict]) -> dict:
    """The stores against the ground truth; `lost` and `duplicated` per check."""
    cases = [h.sak_id for h in workload]
    gone = {h.sak_id for h in workload if withdrawn(h.sak_id)}
    settle = set(cases) - gone
    persons = {h.sak_id: final_persons(h) for h in workload}
    skjerma = {p.person_id for h in workload for p in h.vedtak.personar if p.skjerma}
    checks: dict[str, dict] = {}

    def count(name: str, expected: Counter, actual: Counter) -> None:
        lost = sum(max(0, n - actual.get(k, 0)) for k, n in expected.items())
        extra = sum(max(0, n - expected.get(k, 0)) for k, n in actual.items())
        checks[name] = {"expected": sum(expected.values()), "actual": sum(actual.values()), "lost": lost, "duplicated": extra}

    db = {s: await asyncpg.connect(env.settings().database_url(s)) for s in SERVICES}
    try:
        b = db["bosetting"]
        rows = await b.fetch("SELECT sak_id, status, personar FROM sak WHERE sak_id = ANY($1)", cases)
        status = {r["sak_id"]: r["status"] for r in rows}
        unfinished = sorted(s for s in cases if status.get(s) != ("trukke" if s in gone else "bosatt"))
        count("bosetting: cases (sak)", Counter(cases), Counter(status.keys()))
        count("bosetting: persons per case", Counter({s: len(p) for s, p in persons.items()}),
              Counter({r["sak_id"]: len(json.loads(r["personar"])) for r in rows}))
        outcome = await b.fetch(
            "SELECT subject, type, count(*) AS n FROM outbox WHERE type IN ('bosetting.bosatt', 'bosetting.trukke') AND subject = ANY($1) GROUP BY 1, 2",
            cases,
        )
        count("bosetting: households settled (bosatt events)", Counter(settle),
              Counter({r["subject"]: r["n"] for r in outcome if r["type"] == "bosetting.bosatt"}))
        count("bosetting: households withdrawn (trukke events)", Counter(gone),
              Counter({r["subject"]: r["n"] for r in outcome if r["type"] == "bosetting.trukke"}))
        settled_persons = {p for s in settle for p in persons[s]} - skjerma
        count("bosetting: places used (kapasitet.brukt) = persons settled",
              Counter({"persons": sum(len(persons[s]) for s in settle)}),
              Counter({"persons": await b.fetchval("SELECT coalesce(sum(brukt), 0) FROM kapasitet")}))

        k = db["kartlegging"]
        count("kartlegging: cases (kartleggingssak)", Counter(cases),
              Counter([r["sak_id"] for r in await k.fetch("SELECT sak_id FROM kartleggingssak WHERE sak_id = ANY($1)", cases)]))
        mapped = await k.fetch("SELECT person_id, count(*) AS n FROM kartleggingsversjon WHERE sak_id = ANY($1) GROUP BY 1", cases)
        count("kartlegging: mapping versions (one per person mapped)", Counter({r["person_id"]: 1 for r in mapped}),
              Counter({r["person_id"]: r["n"] for r in mapped}))
        checks["kartlegging: mapping versions (one per person mapped)"]["submitted"] = sim.counts["kartlagde"]

        c = db["kompetanse"]
        all_persons = [p for ps in persons.values() for p in ps]
        profiles = await c.fetch("SELECT person_id, bosatt FROM profil WHERE person_id = ANY($1)", all_persons)
        count("kompetanse: profiles settled = persons settled (not protected)", Counter(settled_persons),
              Counter(r["person_id"] for r in profiles if r["bosatt"]))
        missing = sorted(settled_persons - {r["person_id"] for r in profiles if r["bosatt"]})
        if missing:
            checks["kompetanse: profiles settled = persons settled (not protected)"]["examples"] = await _trace(db, persons, missing[:3])

        # Every event, the driver's and the services', in the inbox of every service bound to it.
        bound = bindings(sandbox, env.name)
        produced = [(e["source"], i, e["type"], e["exchange"]) for i, e in sent.items()]
        for service in SERVICES:
            produced += [(f"urn:chain:{service}", str(r["event_id"]), r["type"], "chain.events")
                         for r in await db[service].fetch("SELECT event_id, type FROM outbox")]
        for service in SERVICES:
            queues = [q for q, s in CONSUMED.items() if s == service]
            expected = Counter((src, i) for src, i, t, x in produced if any(q in queues for q in bound_queues(bound, x, t)))
            # Not a service's own events, which bosetting records as applied when it emits
            # them (services/bosetting/handlers.py: _kpi_eigne): they are no delivery.
            rows = await db[service].fetch("SELECT source, event_id FROM inbox WHERE source <> $1", f"urn:chain:{service}")
            actual = Counter((r["source"], str(r["event_id"])) for r in rows)
            count(f"{service}: events recorded in the inbox", expected, actual)
    finally:
        for conn in db.values():
            await conn.close()
    depths = queue_depths(sandbox, env.name)
    return {
        "households": len(workload),
        "persons": sum(h.persons for h in workload),
        "settled": len(sim.settled_at),
        "withdrawn": len(sim.withdrawn_cases),
        "unfinished": len(unfinished),
        "unfinished_examples": unfinished[:5],
        "lost": sum(c["lost"] for c in checks.values()),
        "duplicated": sum(c["duplicated"] for c in checks.values()),
        "dlq": {q: n + u for q, (n, u) in depths.items() if q.endswith(".dlq")},
        "dlq_depth": sum(n + u for q, (n, u) in depths.items() if q.endswith(".dlq")),
        "simulator_errors": sim.errors[:5],
        "checks": checks,
    }


async def _trace(db: dict, persons: dict[str, list[str]], missing: list[str]) -> list[dict]:
    """Where a settled person's effect went missing: the case's bosatt event (its sequence,
    whether it lists the person) and what kompetanse's inbox and sequence say about it."""
    out = []
    for person in missing:
        sak = next(s for s, ps in persons.items() if person in ps)
        events = await db["bosetting"].fetch("SELECT event_id, type, sequence, body FROM outbox WHERE subject = $1 ORDER BY sequence", sak)
        inbox = {str(r["event_id"]) for r in await db["kompetanse"].fetch(
            "SELECT event_id FROM inbox WHERE source = 'urn:chain:bosetting' AND event_id = ANY($1)", [e["event_id"] for e in events])}
        out.append({
            "person": person, "sak": sak,
            "profile": dict(await db["kompetanse"].fetchrow("SELECT sak_id, kommunenummer, bosatt, endra_at::text FROM profil WHERE person_id = $1", person) or {}),
            "kompetanse_last_sequence": await db["kompetanse"].fetchval(
                "SELECT last_sequence FROM inbox_sequence WHERE source = 'urn:chain:bosetting' AND subject = $1", sak),
            "bosetting_events": [(e["sequence"], e["type"], str(e["event_id"]) in inbox, person in e["body"]) for e in events],
        })
    return out


SNAPSHOT = {
    # Timing-independent columns: which kommune an optimiser batch picks, dates and ids
    # depend on which households meet in a batch, in either run.
    "bosetting.sak": ("bosetting", "SELECT sak_id, status, kategori, sakstype, vedtaksdato::text, mottak_id, bustadkommune,"
                      " (SELECT array_agg(p->>'person_id' ORDER BY p->>'person_id') FROM jsonb_array_elements(personar) p) AS personar FROM sak"),
    "bosetting.outbox (settled/withdrawn per case)": ("bosetting", "SELECT subject, type, count(*) FROM outbox WHERE type IN ('bosetting.bosatt', 'bosetting.trukke') GROUP BY 1, 2"),
    "kartlegging.kartleggingssak": ("kartlegging", "SELECT sak_id, kartleggingstype, privatbuande FROM kartleggingssak"),
    "kartlegging.kartlegging": ("kartlegging", "SELECT sak_id, person_id, innhald::text, fullfort_at IS NOT NULL AS fullfort FROM kartlegging"),
    "kartlegging.kartleggingsversjon": ("kartlegging", "SELECT sak_id, person_id, versjon, innhald::text, kjelde FROM kartleggingsversjon"),
    "kompetanse.profil": ("kompetanse", "SELECT person_id, kartleggingstype, utdanning::text, arbeid::text, sprak::text, bosatt FROM profil"),
    "kompetanse.identitet": ("kompetanse", "SELECT person_id FROM identitet"),
}


async def snapshot(env: Environment) -> dict[str, set[tuple]]:
    out = {}
    for table, (service, query) in SNAPSHOT.items():
        conn = await asyncpg.connect(env.settings().database_url(service))
        try:
            out[table] = {tuple(tuple(v) if isinstance(v, list) else v for v in r.values()) for r in await conn.fetch(query)}
        finally:
            await conn.close()
    return out


def differences(a: dict[str, set[tuple]], b: dict[str, set[tuple]]) -> dict[str, dict]:
    return {t: {"rows": len(a[t]), "only_single": len(a[t] - b[t]), "only_replicas": len(b[t] - a[t]),
                "example": sorted(map(str, (a[t] ^ b[t])))[:2]} for t in a}


# --- phases ----------------------------------------------------------------------------------


async def start_chain(env: Environment, name: str, replicas: int = 1) -> ProcessGroup:
    # Per port block: the test suite's small run and `make chaos` may run side by side.
    procs = ProcessGroup(env, ROOT / "var" / "chaos" / f"logs-{env.base_port}" / name, replicas=replicas)
    await env.reset()
    procs.check_ports()
    for process in procs.commands():
        procs.start(process)
    await procs.wait_ready([p for p in procs.commands() if "-relay" not in p], 120)
    return procs


async def phase_faults(cfg: Config, sandbox: Sandbox) -> dict:
    env = sandbox_environment(sandbox, "chaos_faults", cfg)
    workload = take_persons(households(cfg.persons, cfg.seed, [k for k, _, _ in kommunar()]), cfg.persons)
    plan = schedule(cfg)
    say(f"Phase 1, faults: {len(workload)} households, {sum(h.persons for h in workload)} persons, seed {cfg.seed}; "
        f"{len(plan)} faults planned in {cfg.fault_window:g}s:")
    say("  " + ", ".join(f"{f.at:g}s {f.kind} {f.target}" for f in plan))
    procs = await start_chain(env, "faults")
    injector = Injector(procs, sandbox, plan, random.Random(f"chaos-timing-{cfg.seed}"))
    supervisor = None
    try:
        async def during(sim):
            nonlocal supervisor
            injector.started = time.monotonic()
            supervisor = asyncio.create_task(injector.supervise())
            await injector.run()

        t = time.monotonic()
        sim, sent = await drive(env, procs, workload, cfg, during=during)
        elapsed = time.monotonic() - t
        drained = await wait_drained(env, sandbox)
        result = await verify(env, sandbox, workload, sim, sent)
    finally:
        if supervisor is not None:
            supervisor.cancel()
        procs.stop_all()
    by_kind = Counter(f.kind + (f" {f.target}" if f.kind in ("sigkill", "sigterm") else "") for f in plan)
    return result | {
        "seconds": round(elapsed, 1),
        "drained": drained,
        "faults": [asdict(f) for f in plan],
        "faults_by_kind": dict(Counter(f.kind for f in plan)),
        "faults_by_target": dict(by_kind),
        "faults_failed": [f"{f.kind} {f.target}: {f.result}" for f in plan if f.result.startswith("failed")],
        "graceful_failures": graceful(plan),
        "crashed": injector.crashed,
    }


async def phase_replicas(cfg: Config, sandbox: Sandbox) -> dict:
    workload = take_persons(households(cfg.replica_persons * 2, cfg.seed + 1, [k for k, _, _ in kommunar()]), cfg.replica_persons)
    say(f"Phase 2, one replica: {len(workload)} households, {sum(h.persons for h in workload)} persons")
    single_env = sandbox_environment(sandbox, "chaos_single", cfg)
    procs = await start_chain(single_env, "single")
    try:
        t = time.monotonic()
        sim, sent = await drive(single_env, procs, workload, cfg)
        single_seconds = time.monotonic() - t
        await wait_drained(single_env, sandbox)
        single = await verify(single_env, sandbox, workload, sim, sent)
    finally:
        procs.stop_all()

    say(f"Phase 3, two replicas of everything, {cfg.mangled_share:.0%} of the cases duplicated and reordered")
    env = sandbox_environment(sandbox, "chaos_replicas", cfg)
    procs = await start_chain(env, "replicas", replicas=2)
    rng = random.Random(f"chaos-mangle-{cfg.seed}")
    share = cfg.mangled_share

    def chosen(subject: str) -> bool:
        return _fraction("mangle", str(cfg.seed), subject) < share

    pending: list[asyncio.Task] = []
    copies: Counter = Counter()
    connection = await aio_pika.connect(env.settings().amqp_url)
    tap = None
    try:
        channel = await connection.channel(publisher_confirms=True)
        bound = bindings(sandbox, env.name)
        tap = asyncio.create_task(tap_and_copy(env, bound, chosen, rng, copies))
        t = time.monotonic()
        sim, sent = await drive(env, procs, workload, cfg, wrap=lambda x: Mangler(x, channel, bound, chosen, rng, pending))
        replicas_seconds = time.monotonic() - t
        await asyncio.gather(*pending)
        await wait_drained(env, sandbox)
        tap.cancel()
        replicas = await verify(env, sandbox, workload, sim, sent)
        replicas["applied_per_process"] = await applied_per_process(procs)
        diff = differences(await snapshot(single_env), await snapshot(env))
    finally:
        if tap is not None:
            tap.cancel()
        await connection.close()
        procs.stop_all()
    return {
        "households": len(workload),
        "persons": sum(h.persons for h in workload),
        "mangled_cases": sum(1 for h in workload if chosen(h.sak_id)),
        "driver_copies": sum(1 for _ in pending),
        "tapped_copies": dict(copies),
        "single": single | {"seconds": round(single_seconds, 1)},
        "replicas": replicas | {"seconds": round(replicas_seconds, 1)},
        "differences": diff,
        "equal": all(d["only_single"] == 0 and d["only_replicas"] == 0 for d in diff.values()),
    }


async def applied_per_process(procs: ProcessGroup) -> dict[str, int]:
    """Deliveries each service replica applied (its river's count): both must have worked."""
    out = {}
    async with httpx.AsyncClient(timeout=10) as http:
        for name in procs.commands():
            if "-relay" not in name:
                out[name] = (await http.get(procs.url(name) + "/health/ready")).json()["stats"]["applied"]
    return out


def sandbox_environment(sandbox: Sandbox, name: str, cfg: Config) -> Environment:
    return Environment(name, base_port=cfg.base_port + 10, amqp_url=sandbox.amqp_url, pg_url=sandbox.pg_url, rabbitmq_node=sandbox.node)


async def run(cfg: Config, phases: tuple[str, ...] = ("faults", "replicas")) -> dict:
    started = time.monotonic()
    report: dict = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}}
    say(f"Chaos: seed {cfg.seed} (repeat with --seed {cfg.seed}); a throwaway RabbitMQ node and PostgreSQL cluster on ports {cfg.base_port}-{cfg.base_port + 2}")
    sandbox = Sandbox(cfg.base_port)
    try:
        await asyncio.to_thread(sandbox.start)
        report["sandbox"] = {"root": str(sandbox.root), "node": sandbox.node}
        if "faults" in phases:
            report["faults"] = await phase_faults(cfg, sandbox)
        if "replicas" in phases:
            report["replicas"] = await phase_replicas(cfg, sandbox)
    finally:
        await asyncio.to_thread(sandbox.stop)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["passed"] = passed(report)
    write(report, cfg.results)
    return report


def passed(report: dict) -> bool:
    ok = True
    if f := report.get("faults"):
        ok &= f["unfinished"] == 0 and f["lost"] == 0 and f["duplicated"] == 0 and f["dlq_depth"] == 0
        ok &= not f["faults_failed"] and not f["graceful_failures"] and f["drained"] and not f["simulator_errors"]
    if r := report.get("replicas"):
        for run_ in (r["single"], r["replicas"]):
            ok &= run_["unfinished"] == 0 and run_["lost"] == 0 and run_["duplicated"] == 0 and run_["dlq_depth"] == 0
        ok &= r["equal"]
    return bool(ok)


def markdown(report: dict) -> str:
    lines = [f"# Chaos: faults injected, nothing lost\n",
             f"Run {report['started']}, seed {report['config']['seed']}, {report['seconds']:.0f} s in all; "
             f"`make chaos ARGS=\"--seed {report['config']['seed']}\"` repeats the plan. Passed: **{'yes' if report['passed'] else 'NO'}**.\n"]
    if f := report.get("faults"):
        lines += ["## Phase 1: faults under load\n",
                  "| figure | value |", "|---|---|",
                  f"| persons | {f['persons']:,} |", f"| households | {f['households']:,} |",
                  f"| settled / withdrawn / unfinished | {f['settled']:,} / {f['withdrawn']:,} / {f['unfinished']} |",
                  f"| duration (first vedtak to last case finished), s | {f['seconds']:.0f} |",
                  f"| faults | {', '.join(f'{n} {k}' for k, n in f['faults_by_kind'].items())} |",
                  f"| processes that died on their own | {len(f['crashed'])} |",
                  f"| lost (expected effects missing) | {f['lost']} |",
                  f"| duplicated (effects applied more than once) | {f['duplicated']} |",
                  f"| DLQ depth | {f['dlq_depth']} |", "",
                  "| check | expected | actual | lost | duplicated |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {c['expected']:,} | {c['actual']:,} | {c['lost']} | {c['duplicated']} |" for name, c in f["checks"].items()]
        lines += ["", "| t (s) | fault | target | took (s) | result |", "|---|---|---|---|---|"]
        lines += [f"| {x['started']} | {x['kind']} | {x['target']} | {x['seconds']} | {x['result']} |" for x in f["faults"]]
        lines.append("")
    if r := report.get("replicas"):
        lines += ["## Phases 2 and 3: two replicas, duplicated and reordered deliveries\n",
                  f"{r['persons']:,} persons in {r['households']:,} households; {r['mangled_cases']} cases mangled "
                  f"({r['driver_copies']} held-back or copied driver publishes, {sum(r['tapped_copies'].values())} copies of service events). "
                  f"One replica: {r['single']['seconds']:.0f} s, lost {r['single']['lost']}, duplicated {r['single']['duplicated']}, DLQ {r['single']['dlq_depth']}; "
                  f"two replicas: {r['replicas']['seconds']:.0f} s, lost {r['replicas']['lost']}, duplicated {r['replicas']['duplicated']}, DLQ {r['replicas']['dlq_depth']}. "
                  f"Deliveries applied per process: {r['replicas'].get('applied_per_process')}. "
                  f"Stores equal: **{'yes' if r['equal'] else 'NO'}**.\n",
                  "| table (timing-independent columns) | rows | only in one replica's run | only in two replicas' run |", "|---|---|---|---|"]
        lines += [f"| {t} | {d['rows']:,} | {d['only_single']} | {d['only_replicas']} |" for t, d in r["differences"].items()]
        lines.append("")
    return "\n".join(lines)


def write(report: dict, results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / "chaos.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (results / "chaos.md").write_text(markdown(report))


def summary(report: dict) -> str:
    out = []
    if f := report.get("faults"):
        out.append(f"faults: {f['persons']} persons, {f['households']} households, {sum(f['faults_by_kind'].values())} faults "
                   f"({f['faults_by_kind']}), {f['seconds']:.0f}s; unfinished {f['unfinished']}, lost {f['lost']}, "
                   f"duplicated {f['duplicated']}, DLQ {f['dlq_depth']}, crashed {len(f['crashed'])}, graceful failures {f['graceful_failures']}")
    if r := report.get("replicas"):
        out.append(f"replicas: stores equal {r['equal']}; lost {r['replicas']['lost']}, duplicated {r['replicas']['duplicated']}, DLQ {r['replicas']['dlq_depth']}")
    return "\n".join(out)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=Config.persons)
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--duration", type=float, default=Config.fault_window, help="seconds over which the faults fall")
    parser.add_argument("--kills", type=int, default=Config.kills, help="SIGKILLs of each service and each relay")
    parser.add_argument("--rate", type=float, default=Config.rate, help="households a second from UDI")
    parser.add_argument("--replica-persons", type=int, default=Config.replica_persons)
    parser.add_argument("--timeout", type=float, default=Config.timeout, help="per phase")
    parser.add_argument("--base-port", type=int, default=Config.base_port)
    parser.add_argument("--phases", default="faults,replicas")
    parser.add_argument("--results", type=Path, default=RESULTS)
    a = parser.parse_args(argv)
    cfg = Config(a.persons, a.seed, a.duration, a.kills, a.rate, a.replica_persons, Config.mangled_share, a.timeout, a.base_port, a.results)
    for noisy in ("aio_pika", "aiormq"):  # reconnect chatter during the broker's restart
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    # SIGTERM (make interrupted, CI cancelling) ends the run through its finally blocks,
    # which stop the chain and remove the sandbox.
    signal.signal(signal.SIGTERM, _interrupt)
    report = asyncio.run(run(cfg, tuple(a.phases.split(","))))
    say(summary(report))
    say(f"Passed: {report['passed']}. Report: {cfg.results / 'chaos.md'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
