"""`chain replay`: re-deliver events from the event log to one queue (drift/replay.py)."""

import asyncio
import time
from datetime import datetime

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from drift.replay import Refused, replay as run_replay
from shared.config import settings


def _moment(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {value!r}", param_hint=f"--{name}") from None


def replay(
    to: str = typer.Option(
        ..., "--to", help="Target queue: a service's (kartlegging, bosetting, kompetanse) or a partner's (partner.<name>; only the events it is bound to)"
    ),
    since: str | None = typer.Option(
        None, help="Only events from this time on (ISO 8601, e.g. 2024-05-01T08:00+02:00; without an offset: UTC)"
    ),
    until: str | None = typer.Option(None, help="Only events up to this time (ISO 8601; without an offset: UTC)"),
    type: list[str] = typer.Option([], "--type", help="Only this event type (repeatable), e.g. vedtak.fattet"),
    sak: str | None = typer.Option(None, help="Only this case (the envelope's subject), e.g. sak-..."),
    source: str | None = typer.Option(None, help="Only events from this producer (CloudEvents source), e.g. urn:chain:bosetting"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Read and count what would be replayed; publish nothing"),
) -> None:
    """Re-deliver events from the event-log stream to ONE queue (never to everyone). The
    consumers' inboxes absorb what they already have. Every real replay is journaled."""
    start, end = _moment(since, "since"), _moment(until, "until")
    columns = (
        TextColumn("events read"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]} events/s"), TimeElapsedColumn()
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:  # stderr: the result line is the output
        task = bar.add_task("replay", total=None, rate="-")
        started = time.perf_counter()

        def progress(read: int, total: int) -> None:
            rate = read / max(time.perf_counter() - started, 1e-6)
            bar.update(task, completed=read, total=total, rate=f"{rate:,.0f}")

        try:
            result = asyncio.run(run_replay(
                settings(), target=to, since=start, until=end, types=type, sak=sak, source=source,
                dry_run=dry_run, progress=progress,
            ))
        except Refused as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    if result.stopped == "idle" and result.read:
        typer.echo(f"warning: the event log stopped delivering before offset {result.end_offset}: replay the rest with --since", err=True)
    if result.unparseable:
        typer.echo(f"skipped {result.unparseable} unparseable entries of the event log")
    took = f"in {result.seconds:.1f} s ({result.rate:,.0f} events/s)"
    if dry_run:
        typer.echo(f"dry run: would replay {result.matched} of {result.read} read events to {to} {took}; nothing published")
    else:
        typer.echo(f"replayed {result.published} of {result.read} read events to {to} {took}")


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)
