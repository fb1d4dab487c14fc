"""Kompetanse API throughput with auditing on, against a bare FastAPI endpoint on the same
machine, in the same run (`python -m bench.kompetanse [--seconds S] [--concurrency C]
[--clients N] [--quick]`).

- bare: a minimal FastAPI app (below) served by uvicorn in its own process, one worker,
  with the service's uvicorn settings (shared/service.py serve()), answering
  `GET /personar/{person_id}/kompetanse` with a constant profile-shaped dict.
- audited: the real kompetanse service (`python -m services.kompetanse.app`) answering the
  same request as NAV (Maskinporten token, purpose arbeidsretta_oppfolging) for random
  persons of 2,000 seeded profiles: JWT verification, policy, the profile read and the
  hash-chained audit append, in one transaction per read.

Both variants get the same requests (path, query, bearer header) from the same load
generator: aiohttp in separate process(es) (`--clients`, default 1), `--concurrency`
connections in all, a 2 s warm-up, then `--seconds` measured. After the audited phase the
audit log must have exactly one new row per 200 response, and its hash chain must verify.

Writes bench/results/kompetanse.json and kompetanse.md (`--quick`: 3 s phases,
kompetanse-quick.*).
"""

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated
from uuid import uuid4

import asyncpg
import httpx

from services.kompetanse import revisjon, store
from sim.environment import Environment

ENV = Environment("chain_bench_kompetanse", base_port=8601)
BARE_PORT = ENV.base_port + 10  # clear of the three service ports
ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
LOGS = ROOT / "var" / "bench-kompetanse"

PROFILES = 2_000
WARMUP = 2.0
NAV_ORG = "0192:889640782"
NAV_SCOPE = "imdi:kompetanse/nav"
FORMAL = "arbeidsretta_oppfolging"
UTDANNING = {"niva": "bachelor", "ar": 15}
GOAL = "report"  # the issue sets no goal for the ratio: the figures are reported
BUSY_ELSEWHERE = 20  # % of a core used by other processes during a phase: the figures are skewed


# --- the bare baseline ---------------------------------------------------------------------


def bare_app():
    """The baseline: the same route, path and query validation as the service's read, and a
    constant body shaped like NAV's view of a profile; no auth, no database."""
    from fastapi import FastAPI, Path, Query

    app = FastAPI(title="bare")
    profil = {"utdanning": UTDANNING, "arbeid": [], "sprak": [], "karriererettleiing": None}

    @app.get("/personar/{person_id}/kompetanse")
    async def kompetanse(
        person_id: Annotated[str, Path(pattern=r"^p-[0-9a-f]{16,64}$")],
        formal: Annotated[str, Query(pattern=r"^[a-z_]{3,40}$")],
    ) -> dict:
        return {"person_id": person_id} | profil

    @app.get("/health/ready")
    async def ready() -> dict:
        return {"status": "ready"}

    return app


def serve_bare(port: int) -> None:
    """Served like a service (shared/service.py: create_app's logging, serve()'s uvicorn)."""
    import uvicorn

    from shared.config import settings
    from shared.log import configure

    cfg = settings()
    configure("bench-bare", cfg.log_level)
    uvicorn.run(bare_app(), host=cfg.http_host, port=port, log_config=None, timeout_graceful_shutdown=25)


# --- load generator (runs in its own process) ---------------------------------------------


def _generator(base: str, ids: list[str], token: str, connections: int, warmup: float, seconds: float,
               seed: int, ready, go, out) -> None:
    try:
        out.put(asyncio.run(_load(base, ids, token, connections, warmup, seconds, seed, ready, go)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails loudly
        out.put({"error": repr(exc)})
        raise


async def _load(base, ids, token, connections, warmup, seconds, seed, ready, go) -> dict:
    import aiohttp

    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        ready.put(os.getpid())
        await asyncio.to_thread(go.wait)
        t0 = time.perf_counter()
        m0, end = t0 + warmup, t0 + warmup + seconds
        latencies: list[float] = []
        statuses: Counter = Counter()  # every response, warm-up included (each one is audited)
        measured: Counter = Counter()
        last = m0
        cpu: dict[str, float] = {}

        async def mark() -> None:
            await asyncio.sleep(max(0.0, m0 - time.perf_counter()))
            cpu["m0"] = time.process_time()
            await asyncio.sleep(max(0.0, end - time.perf_counter()))
            cpu["end"] = time.process_time()

        async def worker() -> None:
            nonlocal last
            while (start := time.perf_counter()) < end:
                url = f"{base}/personar/{rng.choice(ids)}/kompetanse?formal={FORMAL}"
                try:
                    async with session.get(url, headers=headers) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status = type(exc).__name__
                done = time.perf_counter()
                statuses[status] += 1
                if start >= m0:
                    measured[status] += 1
                    if status == 200:
                        latencies.append(done - start)
                    last = max(last, done)

        # Workers finish the request they have in flight (none is cancelled): every request
        # sent gets its answer, so the audit rows can be matched against the responses.
        await asyncio.gather(mark(), *(worker() for _ in range(connections)))
    return {
        "latencies": latencies,
        "statuses": {str(k): v for k, v in statuses.items()},
        "measured": {str(k): v for k, v in measured.items()},
        "window": last - m0,
        "cpu_seconds": cpu["end"] - cpu["m0"],
    }


# --- CPU accounting from /proc --------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    return 0.0


def _postgres_cpu() -> float:
    total = 0.0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if (d / "comm").read_text().strip() == "postgres":
                    total += _proc_cpu(int(d.name))
    return total


def _system_busy() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK  # all but idle and iowait


def cpu_snapshot(server_pid: int) -> dict[str, float]:
    return {"server": _proc_cpu(server_pid), "postgres": _postgres_cpu(), "system": _system_busy(), "t": time.perf_counter()}


# --- phases -------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = math.ceil(p / 100 * len(sorted_values))  # nearest rank
    return sorted_values[min(len(sorted_values), max(rank, 1)) - 1]


async def sample_waits(db_url: str, stop: asyncio.Event) -> dict:
    """What the service's database sessions are doing, sampled every 50 ms: how many are
    running a statement, and on what they wait (a Lock wait on the chain head, the WAL
    flush of a commit, the client)."""
    conn = await asyncpg.connect(db_url)
    samples, waits, active = 0, Counter(), 0
    try:
        while not stop.is_set():
            rows = await conn.fetch(
                "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            samples += 1
            for r in rows:
                if r["state"] != "idle":
                    active += 1
                    waits[f"{r['wait_event_type']}:{r['wait_event']}" if r["wait_event_type"] else "running (CPU)"] += 1
                else:
                    waits["idle in pool"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
    finally:
        await conn.close()
    return {"samples": samples, "mean_active": round(active / max(samples, 1), 2),
            "mean_sessions_by_state": {k: round(v / max(samples, 1), 2) for k, v in waits.most_common()}}


async def phase(name: str, base: str, ids: list[str], token: str, server_pid: int, args, db_url: str | None = None) -> dict:
    """One variant: the generator process(es) run warm-up + measured window; meanwhile this
    process takes CPU snapshots at the window's edges (and samples the database's waits)."""
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    share = [args.concurrency // args.clients + (i < args.concurrency % args.clients) for i in range(args.clients)]
    procs = [
        ctx.Process(target=_generator, args=(base, ids, token, c, WARMUP, args.seconds, 1000 + i, ready, go, out), daemon=True)
        for i, c in enumerate(share)
    ]
    try:
        for p in procs:
            p.start()
        for _ in procs:
            await asyncio.to_thread(ready.get, True, 60)
        go.set()
        await asyncio.sleep(WARMUP)
        before = cpu_snapshot(server_pid)
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_waits(db_url, stop)) if db_url else None
        await asyncio.sleep(args.seconds)
        after = cpu_snapshot(server_pid)
        stop.set()
        waits = await sampler if sampler else None
        results = [await asyncio.to_thread(out.get, True, 120) for _ in procs]
        for p in procs:
            await asyncio.to_thread(p.join, 30)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(f"{name}: load generator failed: {errors}")

    latencies = sorted(x for r in results for x in r["latencies"])
    statuses, measured = Counter(), Counter()
    for r in results:
        statuses.update(r["statuses"])
        measured.update(r["measured"])
    window = max(r["window"] for r in results)
    elapsed = after["t"] - before["t"]
    ok = measured.get("200", 0)
    cpu = {
        "server_process": round(100 * (after["server"] - before["server"]) / elapsed),
        "generator_processes": round(100 * sum(r["cpu_seconds"] for r in results) / args.seconds),
        "postgres": round(100 * (after["postgres"] - before["postgres"]) / elapsed),
        "machine": round(100 * (after["system"] - before["system"]) / elapsed),
    }
    # Anything else busy on the machine meanwhile (another test run, say) skews the figures.
    cpu["other"] = max(0, cpu["machine"] - cpu["server_process"] - cpu["generator_processes"] - cpu["postgres"])
    return {
        "requests_per_second": round(ok / window, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "mean_ms": round(sum(latencies) / len(latencies) * 1000, 2) if latencies else None,
        "measured_requests": sum(measured.values()),
        "measured_seconds": round(window, 2),
        "responses_by_status": dict(statuses),  # warm-up included
        "non_200": sum(v for k, v in statuses.items() if k != "200"),
        "generator_processes": args.clients,
        "connections": args.concurrency,
        # Share of one core over the measured window (100 = one core busy; the machine has
        # cpu_count cores); "other" is the machine's busy time not in the processes above.
        "cpu_percent": cpu,
        "database_sessions": waits,
    }


# --- orchestration ------------------------------------------------------------------------


def _in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start(name: str, cmd: list[str], env: dict[str, str], procs: dict[str, subprocess.Popen]) -> subprocess.Popen:
    LOGS.mkdir(parents=True, exist_ok=True)
    log = open(LOGS / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    procs[name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return procs[name]


async def wait_ready(name: str, url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} (see {LOGS / name}.log)")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/health/ready")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready after {timeout}s (see {LOGS / name}.log)")
            await asyncio.sleep(0.2)


def stop_all(procs: dict[str, subprocess.Popen], timeout: float = 30.0) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    procs.clear()


async def seed(db_url: str, n: int) -> list[str]:
    rng = random.Random(2023)
    ids = [f"p-{rng.getrandbits(80):020x}" for _ in range(n)]
    conn = await asyncpg.connect(db_url)
    try:
        await conn.executemany(
            "INSERT INTO profil (person_id, kartleggingstype, utdanning, arbeid, sprak, kommunenummer, bosatt, kategori)"
            " VALUES ($1, 'ordinaer', $2::jsonb, '[]', '[]', '0301', true, 'vaksen')",
            [(i, json.dumps(UTDANNING)) for i in ids],
        )
    finally:
        await conn.close()
    return ids


async def audit_check(db_url: str) -> dict:
    """The audit log as `chain audit-verify` sees it: one snapshot, every row re-hashed in
    seq order and checked against the chain head."""
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            hode = await store.revisjon_hode(conn)
            rows, etter = [], 0
            while batch := await store.revisjon_rader(conn, etter, 5000):
                rows.extend(batch)
                etter = batch[-1]["seq"]
            utfall = Counter(r["utfall"] for r in rows)
    finally:
        await conn.close()
    brot = revisjon.verify(rows, hode)
    return {"rows": len(rows), "head_seq": hode[0], "broken_at": brot, "utfall": dict(utfall)}


def machine() -> dict:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "description": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, {model})",
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
    }


async def main(args) -> dict:
    started = time.perf_counter()
    for port in (*ENV.ports(), BARE_PORT):
        if _in_use(port):
            raise RuntimeError(f"port {port} is in use: is another bench run still going?")
    await ENV.reset()
    env = ENV.env()
    db_url = ENV.settings().database_url("kompetanse")
    levetid = int(WARMUP + args.seconds) + 90  # the token must outlive the phase (default 120 s)
    if levetid > 3600:
        raise SystemExit("--seconds too long: a Maskinporten token lives at most 3600 s")
    procs: dict[str, subprocess.Popen] = {}
    try:
        bare = start("bare", [sys.executable, "-m", "bench.kompetanse", "--serve-bare", str(BARE_PORT)], env, procs)
        service = start("kompetanse", [sys.executable, "-m", "services.kompetanse.app"], env, procs)
        bare_url, service_url = f"http://127.0.0.1:{BARE_PORT}", ENV.url("kompetanse")
        await wait_ready("bare", bare_url, bare)
        await wait_ready("kompetanse", service_url, service)
        ids = await seed(db_url, PROFILES)
        pg = await asyncpg.connect(db_url)
        try:
            pg_settings = {r["name"]: r["setting"] for r in await pg.fetch(
                "SELECT name, setting FROM pg_settings WHERE name IN ('server_version', 'synchronous_commit', 'fsync', 'wal_sync_method', 'commit_delay')"
            )}
            rows_before = await pg.fetchval("SELECT count(*) FROM revisjonslogg")
        finally:
            await pg.close()

        def token() -> str:  # a fresh token per phase, outliving it
            now = int(time.time())
            return ENV.maskinporten_token(NAV_ORG, NAV_SCOPE, klient_id="chain-bench", iat=now, exp=now + levetid)

        phases = {
            "bare": await phase("bare", bare_url, ids, token(), bare.pid, args),
            "audited": await phase("audited", service_url, ids, token(), service.pid, args, db_url),
        }
        audit = await audit_check(db_url)
    finally:
        stop_all(procs)

    b, a = phases["bare"], phases["audited"]
    ok_responses = a["responses_by_status"].get("200", 0)
    new_rows = audit["rows"] - rows_before
    audit |= {"rows_before": rows_before, "new_rows": new_rows, "responses_200": ok_responses,
              "rows_match_200s": new_rows == ok_responses, "chain_intact": audit["broken_at"] is None}
    ratio = round(a["requests_per_second"] / b["requests_per_second"], 3)
    result = {
        "run_id": str(uuid4()),
        "quick": args.quick,
        "machine": machine(),
        "postgres": pg_settings,
        "settings": {"seconds": args.seconds, "warmup_seconds": WARMUP, "connections": args.concurrency,
                     "generator_processes": args.clients, "profiles": PROFILES, "consumer": NAV_ORG,
                     "scope": NAV_SCOPE, "formal": FORMAL,
                     "service_pg_pool_size": ENV.settings().pg_pool_size},
        "figure": "audited kompetanse read, requests/s",
        "value": a["requests_per_second"],
        "baseline": "bare FastAPI endpoint, requests/s",
        "baseline_value": b["requests_per_second"],
        "ratio": ratio,
        "goal": GOAL,
        "met": None,
        "phases": phases,
        "audit": audit,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    result["rows"] = rows(result)
    RESULTS.mkdir(exist_ok=True)
    # A quick (CI-size) run never replaces the figures of a full run.
    name = "kompetanse-quick" if args.quick else "kompetanse"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(result))

    for name, p in phases.items():
        if p["cpu_percent"]["other"] > BUSY_ELSEWHERE:
            print(f"warning: other processes used {p['cpu_percent']['other']}% of a core during the {name} phase;"
                  " the figures are skewed (run on a quiet machine)", file=sys.stderr)
    failures = []
    if a["non_200"] or b["non_200"]:
        failures.append(f"non-200 responses: audited {a['responses_by_status']}, bare {b['responses_by_status']}")
    if not audit["rows_match_200s"]:
        failures.append(f"audit log has {new_rows} new rows for {ok_responses} responses 200")
    if not audit["chain_intact"]:
        failures.append(f"audit chain broken at seq {audit['broken_at']}")
    if failures:
        raise SystemExit("FAILED: " + "; ".join(failures))
    return result


def rows(r: dict) -> list[dict]:
    b, a, audit = r["phases"]["bare"], r["phases"]["audited"], r["audit"]

    def ratio(x, y):
        return round(x / y, 3) if y else None

    return [
        {"figure": "requests/s, audited", "value": a["requests_per_second"], "baseline": "requests/s, bare",
         "baseline_value": b["requests_per_second"], "ratio": r["ratio"], "goal": GOAL, "met": None},
        {"figure": "latency p50 ms, audited", "value": a["p50_ms"], "baseline": "latency p50 ms, bare",
         "baseline_value": b["p50_ms"], "ratio": ratio(a["p50_ms"], b["p50_ms"]), "goal": GOAL, "met": None},
        {"figure": "latency p99 ms, audited", "value": a["p99_ms"], "baseline": "latency p99 ms, bare",
         "baseline_value": b["p99_ms"], "ratio": ratio(a["p99_ms"], b["p99_ms"]), "goal": GOAL, "met": None},
        {"figure": "non-200 responses, audited", "value": a["non_200"], "baseline": "non-200 responses, bare",
         "baseline_value": b["non_200"], "ratio": None, "goal": "0", "met": a["non_200"] == 0 and b["non_200"] == 0},
        {"figure": "new audit rows", "value": audit["new_rows"], "baseline": "audited responses 200 (warm-up included)",
         "baseline_value": audit["responses_200"], "ratio": ratio(audit["new_rows"], audit["responses_200"]),
         "goal": "= 1", "met": audit["rows_match_200s"]},
        {"figure": "audit chain verified (rows, head seq)", "value": f"{audit['rows']} rows, head {audit['head_seq']}",
         "baseline": "", "baseline_value": "", "ratio": None,
         "goal": "intact", "met": audit["chain_intact"]},
    ]


def markdown(r: dict) -> str:
    def cell(v):
        return "" if v is None else ("yes" if v is True else "no" if v is False else str(v))

    def met(v):
        return "n/a (reported)" if v is None else cell(v)

    s = r["settings"]
    out = [
        "# Kompetanse API: audited reads vs a bare FastAPI endpoint",
        "",
        f"Run {r['run_id']} on {r['machine']['description']}, Python {r['machine']['python']}, "
        f"PostgreSQL {r['postgres'].get('server_version')} (synchronous_commit={r['postgres'].get('synchronous_commit')}, "
        f"wal_sync_method={r['postgres'].get('wal_sync_method')}); {'quick' if r['quick'] else 'full'} mode, "
        f"{s['warmup_seconds']:g} s warm-up + {s['seconds']:g} s per variant, {s['connections']} connections from "
        f"{s['generator_processes']} aiohttp generator process(es), {r['total_seconds']} s in all. "
        f"`python -m bench.kompetanse` (see its docstring).",
        "",
        "| figure | value | baseline | baseline value | ratio | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        out.append(f"| {row['figure']} | {cell(row['value'])} | {row['baseline']} | {cell(row['baseline_value'])} | "
                   f"{cell(row['ratio'])} | {row['goal']} | {met(row['met'])} |")
    out += [
        "",
        "The issue sets no goal for the audited rate: it is reported. Both variants get the same requests (path, "
        f"`?formal={s['formal']}`, NAV's bearer token) for random persons of {s['profiles']} seeded profiles.",
        "",
        "## Where the time goes (measured window)",
        "",
        f"CPU in % of one core (100% = one core busy; the machine has {r['machine']['cpu_count']}): the server "
        "process, the load generator, every PostgreSQL process, the whole machine, and what else was busy on it.",
        "",
        "| variant | requests/s | mean ms | server process | generator | PostgreSQL | machine | other |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, p in r["phases"].items():
        c = p["cpu_percent"]
        out.append(f"| {name} | {p['requests_per_second']} | {p['mean_ms']} | {c['server_process']}% | "
                   f"{c['generator_processes']}% | {c['postgres']}% | {c['machine']}% | {c['other']}% |")
    busy = {n: p["cpu_percent"]["other"] for n, p in r["phases"].items() if p["cpu_percent"]["other"] > BUSY_ELSEWHERE}
    if busy:
        out += ["", f"**Warning:** other processes were busy during this run ({busy}, % of a core): the figures are skewed."]
    db = r["phases"]["audited"]["database_sessions"]
    if db:
        states = ", ".join(f"{k} {v}" for k, v in db["mean_sessions_by_state"].items())
        out += [
            "",
            f"The service's database sessions during the audited phase (pool of {s['service_pg_pool_size']}), "
            f"mean per sample over {db['samples']} samples of pg_stat_activity: {states}. "
            "`Lock:transactionid`/`Lock:tuple` are reads waiting for the audit chain head "
            "(`revisjonslogg_hode`, locked FOR UPDATE until the reading transaction commits); "
            "`IO:WALSync`/`LWLock:WALWrite` are commits flushing the WAL, done while holding that lock; "
            "`Client:ClientRead` is the database waiting for the service's next statement.",
        ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per variant (default 10, quick 3)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections in all")
    parser.add_argument("--clients", type=int, default=1, help="load generator processes (connections split between them)")
    parser.add_argument("--quick", action="store_true", help="3 s phases; writes kompetanse-quick.*")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        sys.exit(0)
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 10.0
    if args.concurrency < args.clients:
        parser.error("--concurrency must be at least --clients")
    # SIGTERM unwinds like Ctrl-C, so the servers and generators are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(json.dumps({k: v for k, v in asyncio.run(main(args)).items() if k not in ("phases", "rows")}, indent=2))
