"""`chain demo`: the whole chain, live, on a realistic workload.

Resets its own environment (vhost `chain_demo`, databases `chain_demo_*`), starts the three
services and their outbox relays as processes, and lets the simulator act as UDI, mottak
and kommunar until every household is settled. Exits 0 only if every case reached bosatt.
"""

import asyncio
import os
import statistics
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path

import aio_pika
import httpx
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from drift import rapport
from services.bosetting import referansedata
from shared import klokke
from shared.config import settings
from sim.actors import NAV, OSLO, Simulator
from sim.environment import SERVICES, Environment, wait_until
from sim.processes import ProcessGroup
from sim.workload import households, vedtaksdato_i_aret

console = Console()


def kommunar() -> list[tuple[str, int, bool]]:
    """(kommunenummer, population, has services for minors) from the shipped reference data."""
    tilbod = referansedata.default_tilbod()
    return [
        (k.kommunenummer, k.innbyggjarar, tilbod[k.kommunenummer].mindrearig_teneste)
        for k in referansedata.default_kommunar()
    ]


async def run(n: int, seed: int, rate: float, timeout: float, env_name: str = "chain_demo", ar: int = 0, sekund: float = 150.0) -> bool:
    """`ar` > 0: a compressed year, its decisions spread over the months as IMDi's are and
    published as a simulated business clock (all processes share it) passes their dates,
    the year taking `sekund` seconds. `ar` = 0: decisions of the last weeks at `rate` a second."""
    env = Environment(env_name)
    knr = [k for k, _, _ in kommunar()]
    if ar:
        # The year starts now: the services are up within days of it, business time.
        os.environ["CHAIN_KLOKKE"] = klokke.spec(datetime(ar, 1, 1, tzinfo=klokke.OSLO), 365 * 86400 / sekund)
        settings.cache_clear()
        workload = households(n, seed, knr, idag=date(ar, 1, 1), vedtaksdato=vedtaksdato_i_aret(ar))
        pace = f"the year {ar} compressed into {sekund:g} s (decisions follow the seasons)"
    else:
        workload = households(n, seed, knr)
        pace = f"vedtak arrive at {rate:g}/s"
    console.print(
        f"[bold]Chain demo[/]: {n} households, {sum(h.persons for h in workload)} persons, seed {seed}; "
        f"{pace}. Environment: vhost and databases '{env_name}'."
    )
    procs = ProcessGroup(env, Path("var/logs") / env_name)
    procs.check_ports()  # before the reset: never wipe the environment of a run still going
    await env.reset()
    started = time.monotonic()
    try:
        await procs.start_all()
        console.print(f"Services and relays up in {time.monotonic() - started:.1f}s (logs in {procs.log_dir}/)")
        async with Simulator(env, workload, kommunenummer=[k for k, _, _ in kommunar()]) as sim:
            await sim.decide_capacity(kommunar(), ar or date.today().year)
            t0 = time.monotonic()
            arrivals = asyncio.create_task(sim.publish_aar() if ar else sim.publish_vedtak(rate))
            caseworker = asyncio.create_task(sim.caseworker())
            consumers = [asyncio.create_task(sim.konsument(NAV, "arbeidsretta_oppfolging")),
                         asyncio.create_task(sim.konsument(OSLO, "busetting"))]
            await _show_progress(sim, timeout)
            arrivals.cancel()
            caseworker.cancel()
            elapsed = time.monotonic() - t0
            try:
                await _summary(env, sim, elapsed, ar)
            finally:
                for task in consumers:
                    task.cancel()
                await asyncio.gather(*consumers, return_exceptions=True)
            return sim.done and not sim.errors
    finally:
        procs.stop_all()


async def _show_progress(sim: Simulator, timeout: float) -> None:
    progress = Progress(
        TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    n = len(sim.households)
    tasks = {k: progress.add_task(label, total=n) for k, label in
             [("vedtak", "vedtak fattet (UDI)"), ("fordelt", "fordelt (allocations)"),
              ("avtale", "avtale inngått"), ("bosatt", "bosatt (settled)"), ("trukke", "trukke (withdrawn)")]}
    deadline = time.monotonic() + timeout
    with Live(progress, console=console, refresh_per_second=4):
        while not sim.done and time.monotonic() < deadline:
            for key, task in tasks.items():
                progress.update(task, completed=sim.counts[key], total=max(n, sim.counts[key]))
            await asyncio.sleep(0.25)
        for key, task in tasks.items():
            progress.update(task, completed=sim.counts[key], total=max(n, sim.counts[key]))


async def _summary(env: Environment, sim: Simulator, elapsed: float, ar: int) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        # Settled is settled, but kompetanse and the relays may still be catching up.
        with console.status("waiting for queues and outboxes to drain"):
            await wait_until(lambda: _drained(http, env), 120, interval=0.5)
        with console.status("waiting for NAV and Oslo to read their notifications"):
            await wait_until(lambda: _consumers_done(sim), 120, interval=0.1)
        imdi = {"Authorization": f"Bearer {env.token('imdi:demo')}"}
        stats = (await http.get(env.url("bosetting") + "/statistikk", headers=imdi)).json()
        rounds = (await http.get(env.url("bosetting") + "/fordelingsrundar?limit=1000", headers=imdi)).json()
        dekning = (await http.get(env.url("kartlegging") + "/dekning", headers=imdi)).json()
        kpi = await _kpi_rapport(http, env, imdi, ar)
        kommunar_etter = (await http.get(env.url("bosetting") + "/kommunar", headers=imdi)).json()
        nav = env.maskinporten_token(NAV, "imdi:kompetanse/nav")
        kompetanse = (await http.get(env.url("kompetanse") + "/statistikk", headers={"Authorization": f"Bearer {nav}"})).json()

    table = Table(title="Cases per status (bosetting)")
    table.add_column("status")
    table.add_column("saker", justify="right")
    table.add_column("personar", justify="right")
    for status in ("under_kartlegging", "fordelingsklar", "fordelt", "sokt_ut", "bosatt", "trukke"):
        row = stats["per_status"].get(status, {"saker": 0, "personar": 0})
        table.add_row(status, str(row["saker"]), str(row["personar"]))
    console.print(table)

    if kpi:
        console.print(_kpi_table(kpi))
    lat = sim.latencies()
    persons = sim.persons()
    summary = Table(title="Run summary", show_header=False)
    summary.add_row("households settled", f"{len(sim.settled_at)} of {len(sim.households)} ({len(sim.withdrawn_cases)} withdrawn)")
    summary.add_row("persons", str(persons))
    summary.add_row("allocation batches (optimiser)", _rounds(rounds))
    summary.add_row("proposals", f"{sim.counts['stadfesta']} confirmed, {sim.counts['overstyrt']} overridden by the caseworker")
    summary.add_row("refusals by kommunar", f"{sim.counts['avslatt']} (each case re-proposed elsewhere)")
    summary.add_row("corrections by UDI", f"{sim.counts['korrigert']} ({sim.counts['fordeling_oppheva']} pending allocations cancelled)")
    summary.add_row("withdrawn", str(sim.counts["trukke"]))
    summary.add_row("kommunar not taking new allocations", str(sim.counts["stopp"]))
    summary.add_row("places (kommunar's decisions)", _plassar(sim, kommunar_etter))
    summary.add_row("deadline events", f"{sim.counts['frist_naermar']} frist nærmar, {sim.counts['frist_overskriden']} frist overskriden")
    summary.add_row("persons mapped before settlement", f"{dekning['kartlagde']} of {dekning['personar']} to be mapped")
    fullstendig = dekning.get("fullstendigheit", {})
    if fullstendig.get("snitt") is not None:
        missing = ", ".join(list(fullstendig.get("manglande_felt", {}))[:3]) or "none"
        summary.add_row("mapping completeness", f"mean {fullstendig['snitt']:.0%}, {fullstendig['fullstendige']} complete; most missing: {missing}")
    summary.add_row(
        "competence statistics (kompetanse)",
        f"{kompetanse['grupper']} groups by county, category and month; {kompetanse['prikka_celler']} cells suppressed (< {kompetanse['terskel']} persons)",
    )
    for org, name in ((NAV, "NAV"), (OSLO, "Oslo kommune")):
        served = sim.counts[f"{org}:200"]
        other = {k.split(":")[-1]: n for k, n in sim.counts.items() if k.startswith(org) and k.split(":")[-1] not in ("200", "varsel")}
        summary.add_row(f"{name}: notify, then pull", f"{sim.counts[f'{org}:varsel']} notifications, {served} reads served" + (f", refused or gone: {other}" if other else ""))
    summary.add_row("kompetanse audit log", _audit_verify(env))
    summary.add_row("wall time", f"{elapsed:.1f}s ({persons / elapsed:.0f} persons/s)")
    if lat:
        summary.add_row("vedtak -> bosatt, wall clock", f"median {statistics.median(lat):.2f}s, p95 {lat[int(0.95 * (len(lat) - 1))]:.2f}s")
    if stats["dagar_vedtak_til_busetjingsdato_snitt"] is not None:
        summary.add_row("vedtak -> agreed settlement date", f"{stats['dagar_vedtak_til_busetjingsdato_snitt']:.0f} days on average (simulated)")
    if sim.errors:
        summary.add_row("[red]errors[/]", "; ".join(sim.errors[:5]))
    console.print(summary)
    verdict = "[green]every case reached bosatt (or was withdrawn)[/]" if sim.done and not sim.errors else "[red]not every case was settled[/]"
    console.print(verdict)


async def _kpi_rapport(http: httpx.AsyncClient, env: Environment, imdi: dict, ar: int) -> dict | None:
    """The KPIs of October of a compressed year (its HTML and CSV written to var/rapport/,
    as `chain report` writes them); without a year, of the month in which most of the run's
    households were settled (their agreed dates lie in the coming weeks)."""
    if ar:
        manader = [f"{ar}-10"]
    else:
        idag = date.today()
        manader = [f"{(idag.year * 12 + idag.month - 1 + i) // 12}-{(idag.month - 1 + i) % 12 + 1:02d}" for i in range(4)]
    rapportar = [(await http.get(env.url("bosetting") + "/kpi/rapport", params={"manad": m}, headers=imdi)).json() for m in manader]
    rapportar = [r for r in rapportar if "innan_frist" in r]
    beste = max(rapportar, key=lambda r: sum(f["personar"] for f in r["bosette_per_fylke"]), default=None)
    if beste:
        ut = Path("var/rapport")
        ut.mkdir(parents=True, exist_ok=True)
        (ut / f"situasjonsrapport-{beste['manad']}.html").write_text(rapport.html(beste), encoding="utf-8")
        rapport.csv_filer(beste, ut / beste["manad"])
    return beste


def _kpi_table(r: dict) -> Table:
    table = Table(title=f"KPIs for {r['manad']} (settled in the month; definitions in docs/kpi.md; report in var/rapport/)")
    for col in ("group", "target", "settled", "within", "share"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for g in r["innan_frist"]:
        andel = "-" if g["andel"] is None else f"{g['andel']:.0%}"
        table.add_row(g["gruppe"], f"{g['mal_manader']} months", str(g["bosette"]), str(g["innan_frist"]), andel)
    ventetid = ", ".join(
        f"{v['verdi']} {v['snitt_manader']:.1f}/{v['median_manader']:.1f}" for v in r["ventetid"] if v["dimensjon"] == "kategori" and v["snitt_manader"] is not None
    )
    table.caption = (
        f"months from vedtak to settlement, mean/median: {ventetid}; persons waiting at month end: "
        + ", ".join(f"{k} {n}" for k, n in r["ventande"].items())
        + "; settled per month: "
        + " ".join(f"{t['manad'][5:]}:{t['bosette']}" for t in r["trend"])
    )
    return table


def _plassar(sim: Simulator, kommunar: list[dict]) -> str:
    """Places requested, decided and used over the run, against IMDi's 2023 (DOMAIN.md)."""
    decided = sum(c["plassar"] for k in kommunar for c in k["kapasitet"].values())
    used = sum(c["brukt"] for k in kommunar for c in k["kapasitet"].values())
    asked = sim.counts["oppmoda"] + sim.counts["tilleggsplassar"]
    extra = (
        f"; IMDi asked again {sim.counts['tilleggsoppmoding']} times, for {sim.counts['tilleggsplassar']} places in all"
        if sim.counts["tilleggsoppmoding"] else ""
    )
    return (
        f"{asked} requested, {decided} decided ({decided / max(1, asked):.0%}; 2023: 95%), "
        f"{used} used ({used / max(1, decided):.0%}; 2023: 93%){extra}"
    )


def _audit_verify(env: Environment) -> str:
    """`chain audit-verify` on the run's kompetanse database, as an operator would."""
    chain = Path(sys.executable).with_name("chain")
    result = subprocess.run([str(chain), "audit-verify"], env=env.env(), capture_output=True, text=True, timeout=120)
    return (result.stdout or result.stderr).strip()


def _rounds(rounds: list[dict]) -> str:
    if not rounds:
        return "none"
    worst_gap = max(r["gap"] for r in rounds)
    slowest = max(r["sekund"] for r in rounds)
    proposed = sum(r["foreslatt"] for r in rounds)
    return f"{len(rounds)} batches, {proposed} proposals, largest proven gap {worst_gap:.2%}, slowest solve {slowest:.2f}s"


async def _consumers_done(sim: Simulator) -> bool:
    """NAV and Oslo have read every notification: their queues are empty and their counts
    stand still for a second (a queue's depth leaves out what a consumer holds unacked)."""
    before = dict(sim.counts)
    await asyncio.sleep(1.0)
    return await sim.feeds_drained(NAV, OSLO) and dict(sim.counts) == before


async def _drained(http: httpx.AsyncClient, env: Environment) -> bool:
    for service in SERVICES:
        if (await http.get(env.url(service) + "/health/ready")).json().get("outbox_backlog", 0):
            return False
    connection = await aio_pika.connect(env.settings().amqp_url)
    async with connection:
        channel = await connection.channel()
        for service in SERVICES:
            queue = await channel.declare_queue(service, passive=True)
            if queue.declaration_result.message_count:
                return False
    return True


def main(n: int, seed: int, rate: float, timeout: float, ar: int = 0, sekund: float = 150.0) -> int:
    try:
        return 0 if asyncio.run(run(n, seed, rate, timeout, ar=ar, sekund=sekund)) else 1
    except (RuntimeError, TimeoutError) as exc:  # set-up failed: say why, without a traceback
        console.print(f"[red]demo could not run:[/] {exc}")
        return 2
