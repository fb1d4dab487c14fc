"""`chain rebuild <projection> [--dry-run]`: rebuild a read model from the event log and
switch over atomically (drift/rebuild.py). Unknown projection: exit 2; refused or stopped
(nothing switched): exit 1."""

import asyncio

import asyncpg
import typer
from aiormq.exceptions import AMQPError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

FASAR = {"les": "reading the event log", "innhenting": "catching up under the lock"}
UTVAL = 10  # differing rows shown


def rebuild(
    projection: str = typer.Argument(..., help="The read model to rebuild: kompetanse"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Build and compare with the live table; switch nothing"),
) -> None:
    """Rebuild a read model from the event log into a fresh table and switch over
    atomically while the service keeps running; the old table is kept."""
    from drift import rebuild as ombygging
    from shared.config import settings

    if projection not in ombygging.PROJEKSJONAR:
        typer.echo(f"error: unknown projection {projection!r}; known: {', '.join(ombygging.PROJEKSJONAR)}", err=True)
        raise typer.Exit(2)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True)) as progress:
        oppgave = progress.add_task(FASAR["les"], total=None)

        def framdrift(fase: str, gjort: int, totalt: int | None) -> None:
            progress.update(oppgave, description=FASAR.get(fase, fase), completed=gjort, total=totalt)

        try:
            r = asyncio.run(ombygging.kjor(settings(), projection, dry_run=dry_run, framdrift=framdrift))
        except ombygging.RebuildFeil as exc:
            typer.echo(f"error: {exc} (nothing switched)", err=True)
            raise typer.Exit(1) from None
        except (OSError, AMQPError, asyncpg.PostgresError) as exc:
            typer.echo(f"error: {type(exc).__name__}: {exc} (nothing switched)", err=True)
            raise typer.Exit(1) from None
    _vis(r)


def _vis(r) -> None:
    typer.echo(
        f"{r.projeksjon}: {r.lese} events read, {r.brukt} applied, {r.utan_handlar} without a handler,"
        f" {r.ugyldige} invalid, {r.duplikat} duplicates, {r.ventande} left to the live service"
    )
    typer.echo(f"{r.rader} rows in {r.sekund:.1f} s ({r.rate:.0f} events/s); the live table was locked {r.laas_sekund:.3f} s")
    a = r.avvik
    if a.tomt:
        typer.echo("no differences from the live table")
    else:
        typer.echo(f"differences from the live table: {len(a.berre_ombygd)} rows only rebuilt, {len(a.berre_live)} only live, {len(a.ulike)} differ")
        for k in a.berre_ombygd[:UTVAL]:
            typer.echo(f"  only rebuilt  {k}")
        for k in a.berre_live[:UTVAL]:
            typer.echo(f"  only live     {k}")
        for k, kolonnar in list(a.ulike.items())[:UTVAL]:
            typer.echo(f"  differs       {k}: {', '.join(kolonnar)}")
    if r.bytta:
        typer.echo(f"switched; the old table is kept as {r.gammal} (DROP SCHEMA {r.schema} CASCADE when satisfied)")
    else:
        typer.echo("dry run: nothing switched")


def register(app: typer.Typer) -> None:
    app.command("rebuild")(rebuild)
