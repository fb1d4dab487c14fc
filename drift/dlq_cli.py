"""`chain dlq ...`: list, show, redrive and drop dead letters (drift/dlq.py).
Errors go to stderr with exit code 2; a declined drop exits 1."""

import asyncio
import json
import sys
from collections import Counter
from typing import Annotated

import asyncpg
import typer
from aiormq.exceptions import AMQPError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from drift import dlq
from shared.config import settings

app = typer.Typer(
    help="Dead letters: what the services could not process, with the reason. List and show them; redrive them after the cause is fixed, or drop them.",
    no_args_is_help=True,
)

PROGRESS_FROM = 100  # fewer letters than this are done before a bar would be worth drawing

Queue = Annotated[str | None, typer.Option("--queue", "-q", help="One DLQ (`bosetting` or `bosetting.dlq`); default: all")]
MessageId = Annotated[str | None, typer.Option("--id", help="The message id (as `list` shows it)")]
EventType = Annotated[str | None, typer.Option("--type", help="The event type, e.g. vedtak.fattet")]
Reason = Annotated[str | None, typer.Option("--reason", help="Text in the error kind or reason (case-insensitive)")]
All = Annotated[bool, typer.Option("--all", help="Every dead letter (in --queue, if given)")]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _run(coro):
    try:
        return asyncio.run(coro)
    except dlq.DlqFeil as exc:
        _fail(str(exc))
    except (OSError, AMQPError, asyncpg.PostgresError) as exc:  # broker or journal database
        _fail(f"{type(exc).__name__}: {exc}")


def _interaktiv() -> bool:
    """Someone at a terminal who can answer a confirmation."""
    return sys.stdin.isatty()


class _Framdrift:
    """A progress bar on stderr, drawn only when there are enough letters to wait for."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.progress: Progress | None = None

    def start(self, total: int) -> None:
        if total > PROGRESS_FROM:
            columns = (TextColumn(self.what), BarColumn(), MofNCompleteColumn())
            self.progress = Progress(*columns, console=Console(stderr=True), transient=True)
            self.progress.start()
            self.task = self.progress.add_task(self.what, total=total)

    def advance(self, _letter=None) -> None:
        if self.progress:
            self.progress.advance(self.task)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.progress:
            self.progress.stop()


@app.command("list")
def list_(
    queue: Queue = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
    limit: Annotated[int, typer.Option(help="Show at most this many")] = 1000,
) -> None:
    """List dead letters with their reason. Reading consumes nothing."""
    letters = _run(dlq.list_dead_letters(settings(), queue, limit))
    if json_:
        typer.echo(json.dumps([lt.summary() for lt in letters], ensure_ascii=False, indent=2))
        return
    table = Table("dlq", "id", "type", "subject", "kind", "reason", "attempts", "failed queue", "dead-lettered at", "bytes")
    for lt in letters:
        table.add_row(
            lt.dlq, lt.message_id, lt.type or "", lt.subject or "", lt.error_kind or "", lt.reason or "",
            "" if lt.attempts is None else str(lt.attempts), lt.failed_queue, lt.dead_lettered_at or "", str(lt.size),
        )
    console = Console()
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)" + (f" (showing the first {limit})" if len(letters) >= limit else ""))


@app.command()
def show(message_id: Annotated[str, typer.Argument(help="The message id (as `list` shows it)")], queue: Queue = None) -> None:
    """Show a dead letter: its properties, all headers and the body."""
    for lt in _run(dlq.show(settings(), message_id, queue)):
        typer.echo(f"== {lt.dlq}  {lt.message_id}")
        typer.echo("properties:")
        for key, value in lt.properties.items():
            typer.echo(f"  {key}: {value}")
        typer.echo("headers:")
        for key, value in sorted(lt.headers.items()):
            typer.echo(f"  {key}: {value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)}")
        typer.echo(f"body ({lt.size} bytes):")
        typer.echo(lt.body_text())


def _where(targets: Counter) -> str:
    return ", ".join(f"{n} to {queue}" for queue, n in sorted(targets.items()))


@app.command()
def redrive(
    queue: Queue = None,
    message_id: MessageId = None,
    event_type: EventType = None,
    reason: Reason = None,
    all_: All = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be redriven; change nothing")] = False,
) -> None:
    """Send dead letters back to the queue they failed on, with a fresh set of attempts.
    Fix the cause first: a letter redriven into the same failure comes straight back."""
    targets: Counter = Counter()

    def redriven(letter: dlq.DeadLetter) -> None:
        targets[letter.failed_queue] += 1
        bar.advance()

    with _Framdrift("redriving") as bar:
        n = _run(dlq.redrive(
            settings(), queue=queue, message_id=message_id, event_type=event_type, reason_contains=reason,
            all_=all_, dry_run=dry_run, on_start=bar.start, on_letter=redriven,
        ))
    verb = "would redrive" if dry_run else "redrove"
    typer.echo(f"{verb} {n} dead letter(s)" + (f": {_where(targets)}" if n else ""))


@app.command()
def drop(
    queue: Queue = None,
    message_id: MessageId = None,
    event_type: EventType = None,
    reason: Reason = None,
    all_: All = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
) -> None:
    """Delete dead letters for good (the journal keeps their ids and types, not bodies).
    Asks first, unless --yes; without a terminal to ask on, --yes is required."""
    cfg = settings()
    filters = dict(queue=queue, message_id=message_id, event_type=event_type, reason_contains=reason, all_=all_)
    only = None
    if not yes:
        if not _interaktiv():
            _fail("refusing to drop without --yes: there is no terminal to confirm on")
        picked = _run(dlq.select(cfg, dlq.Utval(**filters)))
        if not picked:
            typer.echo("no dead letters match")
            return
        for (name, kind), n in sorted(Counter((lt.dlq, lt.type or "?") for lt in picked).items()):
            typer.echo(f"  {n:>6}  {name}  {kind}")
        if not typer.confirm(f"Delete these {len(picked)} dead letter(s) for good?", default=False):
            typer.echo("nothing dropped")
            raise typer.Exit(1)
        only = {lt.message_id for lt in picked}  # what the operator saw, not what came since
    with _Framdrift("dropping") as bar:
        n = _run(dlq.drop(cfg, **filters, only=only, yes=True, on_start=bar.start, on_letter=bar.advance))
    typer.echo(f"dropped {n} dead letter(s)")
