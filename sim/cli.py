"""The operator CLI: `chain ...`."""

import typer

from drift import rapport_cli, rebuild_cli, replay_cli, status_cli
from drift.dlq_cli import app as dlq_app
from drift.partner import app as partner_app
from sim.maskinporten_cli import app as maskinporten_app

app = typer.Typer(help="Operate the asylum-to-settlement chain.", no_args_is_help=True)
app.add_typer(maskinporten_app, name="maskinporten")
status_cli.register(app)
rebuild_cli.register(app)
replay_cli.register(app)
rapport_cli.register(app)
app.add_typer(dlq_app, name="dlq")
app.add_typer(partner_app, name="partner")


@app.callback()
def _root(
    env: str = typer.Option(
        None, "--env", help="Act on a named environment (e.g. chain_demo): its vhost, databases and settings"
    ),
) -> None:
    """Operate the asylum-to-settlement chain. Configuration comes from CHAIN_* variables
    (see the README), or from --env for the demo's and tests' environments."""
    if env:
        import os

        from shared.config import settings
        from sim.environment import Environment

        os.environ.update({k: v for k, v in Environment(env).env().items() if k.startswith("CHAIN_")})
        settings.cache_clear()


@app.command()
def demo(
    households: int = typer.Option(1800, help="Households to run through the chain (1,800: 2023 at one tenth)"),
    seed: int = typer.Option(2023, help="Workload seed (same seed, same households)"),
    ar: int = typer.Option(2023, "--ar", help="Compress this year (0: decisions of the last weeks, at --rate)"),
    sekund: float = typer.Option(150.0, "--sekund", help="Wall-clock seconds the compressed year takes"),
    rate: float = typer.Option(20.0, help="Without a year: vedtak per second from UDI"),
    timeout: float = typer.Option(600.0, help="Give up after this many seconds"),
) -> None:
    """Run the whole chain live on a simulated workload and show the result."""
    from sim.demo import main

    raise typer.Exit(main(households, seed, rate, timeout, ar, sekund))


@app.command()
def docs() -> None:
    """Regenerate docs/asyncapi.json, docs/events.md and docs/schemas/ from the catalogue."""
    from sim.docs import main

    raise typer.Exit(main())


@app.command()
def token(subject: str = typer.Argument(..., help="imdi:<caseworker> or kommune:<kommunenummer>")) -> None:
    """Issue a bearer token for bosetting's HTTP API, signed with CHAIN_TOKEN_SECRET."""
    from shared import tokens
    from shared.config import settings

    try:
        typer.echo(tokens.issue(settings().token_secret, subject))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("mottak-add")
def mottak_add(mottak_id: str = typer.Argument(..., help="The reception centre's id, e.g. mottak-17")) -> None:
    """Give a mottak system its own RabbitMQ user (may publish only mottak.* events) and an
    HTTP token for the intake. Running it again rotates the password."""
    from shared.config import settings
    from sim.tilgang import legg_til_mottak

    try:
        tilgang = legg_til_mottak(settings(), mottak_id)
    except (ValueError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"AMQP URL (publish to exchange mottak.inn, routing key = event type): {tilgang.amqp_url}")
    typer.echo(f"HTTP token (POST /mottak/{mottak_id}/hendingar on kartlegging): {tilgang.http_token}")


@app.command("konsument-add")
def konsument_add(org: str = typer.Argument(..., help="The consumer's org as registered in kompetanse's policy file, e.g. 0192:889640782")) -> None:
    """Give a registered kompetanse consumer its own RabbitMQ user that may read only its
    notification queue. Running it again rotates the password."""
    from services.kompetanse.policy import last
    from shared.config import settings
    from sim.tilgang import legg_til_konsument

    cfg = settings()
    if org not in last(cfg.kompetanse_policy).konsument:
        typer.echo(f"error: {org} is not a registered consumer in the kompetanse policy file", err=True)
        raise typer.Exit(2)
    try:
        tilgang = legg_til_konsument(cfg, org)
    except (ValueError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"AMQP URL: {tilgang.amqp_url}")
    typer.echo(f"Queue (consume; each message names a person and the changed fields): {tilgang.queue}")
    typer.echo(f"Then read through the kompetanse API with a Maskinporten token for {org}.")


@app.command()
def console(
    host: str = typer.Option("127.0.0.1", help="Bind address (the console can redrive: keep it local or behind auth)"),
    port: int = typer.Option(8180, help="HTTP port"),
) -> None:
    """Serve the operator console: the chain as a flow, live (cases per status, queues,
    dead letters with a redrive button, outbox backlogs, throughput)."""
    import uvicorn

    from drift.console import create_console
    from shared.config import settings

    typer.echo(f"chain console on http://{host}:{port}/")
    uvicorn.run(create_console(settings()), host=host, port=port, log_level="warning")


@app.command("audit-verify")
def audit_verify(batch: int = typer.Option(5000, help="Rows read per batch")) -> None:
    """Verify kompetanse's hash-chained audit log: exit 0 if intact, 1 with the first broken
    seq and the reason if not (an altered, missing or reordered row, or a cut-off end)."""
    import asyncio

    import asyncpg
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from services.kompetanse import revisjon, store
    from shared.config import settings

    async def run() -> tuple[revisjon.Brot | None, int]:
        conn = await asyncpg.connect(settings().database_url("kompetanse"))
        try:
            # One snapshot: rows appended while verifying are left for the next run.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                hode = await store.revisjon_hode(conn)
                v = revisjon.Verifikator()
                columns = (TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
                with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
                    task = progress.add_task("verify", total=hode[0])
                    etter = 0
                    while rows := await store.revisjon_rader(conn, etter, batch):
                        for row in rows:
                            if v.add(row) is not None:
                                return v.brot, v.rader
                        etter = rows[-1]["seq"]
                        progress.update(task, completed=v.rader)
                return v.slutt(hode), v.rader
        finally:
            await conn.close()

    try:
        brot, rader = asyncio.run(run())
    except (OSError, asyncpg.PostgresError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if brot is None:
        typer.echo(f"audit log intact: {rader} rows")
        raise typer.Exit(0)
    typer.echo(f"audit log broken at seq {brot.seq}: {brot.grunn}", err=True)
    raise typer.Exit(1)
