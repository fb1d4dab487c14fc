"""`chain status`: the chain's health as tables or JSON, and as an exit code for scripts
and monitoring: 0 healthy, 1 unhealthy, 2 the broker or a database cannot be reached."""

import asyncio
import json
import logging
import time

import typer
from rich.console import Console, RenderableType
from rich.live import Live

from drift.status import collect, problems, render
from shared.config import settings

HEALTHY, UNHEALTHY, UNREACHABLE = 0, 1, 2


def _check() -> tuple[dict, RenderableType, int]:
    status = asyncio.run(collect(settings()))
    found = problems(status)
    code = UNREACHABLE if status.unreachable else UNHEALTHY if found else HEALTHY
    return status.as_dict() | {"problems": found, "healthy": not found}, render(status, found), code


def status(
    json_: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
    watch: float = typer.Option(0, "--watch", help="refresh every N seconds"),
) -> None:
    """Show queues, throughput, outbox backlog and cases per status; exit 0 healthy,
    1 unhealthy, 2 broker or database unreachable."""
    console = Console()
    # aiormq logs a refused connection on stderr; the problems already say it, once.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    data, view, code = _check()
    if not watch:
        if json_:
            typer.echo(json.dumps(data, ensure_ascii=False))
        else:
            console.print(view)
        raise typer.Exit(code)
    try:
        if json_:  # one JSON document a line, for a pipe
            while True:
                typer.echo(json.dumps(data, ensure_ascii=False))
                time.sleep(watch)
                data, view, code = _check()
        with Live(view, console=console, auto_refresh=False) as live:
            while True:
                time.sleep(watch)
                data, view, code = _check()
                live.update(view, refresh=True)
    except KeyboardInterrupt:
        pass
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
