"""The operator console: one web page that shows the chain as a flow (cases per status,
queue depths, dead letters with a redrive button, outbox backlogs, throughput over the
last minutes, the latest month's KPIs) and refreshes itself. `chain console` serves it (127.0.0.1:8180 by default).

It reads what `chain status` reads and redrives what `chain dlq redrive` redrives (the
same functions, the same journal). A redrive must carry the header `X-Chain-Console`:
a cross-site form cannot send a custom header, and a cross-site script gets no CORS
permission to, so another web page open in the operator's browser cannot redrive.
"""

from importlib import resources

import asyncpg
from fastapi import FastAPI, Header
from fastapi.responses import HTMLResponse

from drift import dlq, journal, status
from services.bosetting import kpi
from services.bosetting import store as bosetting_store
from shared.config import Settings
from shared.http import Problem, install_problem_handlers
from sim.environment import SERVICES

MINUTTAR = 10  # throughput history shown


async def gjennomstrauming(cfg: Settings) -> dict[str, list[int]]:
    """Events processed per minute and service, oldest first, the last MINUTTAR minutes
    (from each service's inbox: what was applied, not what was delivered)."""
    ut = {}
    for service in SERVICES:
        try:
            conn = await asyncpg.connect(cfg.database_url(service), timeout=5)
        except (OSError, asyncpg.PostgresError):
            continue
        try:
            rows = await conn.fetch(
                "SELECT floor(extract(epoch FROM now() - received_at) / 60)::int AS sidan, count(*) AS n FROM inbox"
                " WHERE received_at > now() - make_interval(mins => $1) GROUP BY 1",
                MINUTTAR,
            )
        finally:
            await conn.close()
        per = {r["sidan"]: r["n"] for r in rows}
        ut[service] = [per.get(m, 0) for m in range(MINUTTAR - 1, -1, -1)]
    return ut


async def kpi_no(cfg: Settings) -> dict | None:
    """The KPIs (docs/kpi.md) of the latest month with settlements, live from bosetting's
    KPI projection: the same figures as `chain report` for that month."""
    try:
        conn = await asyncpg.connect(cfg.database_url("bosetting"), timeout=5)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        saker = await bosetting_store.kpi_saker(conn)
        datoar = [s.busetjingsdato for s in saker if s.busetjingsdato]
        if not datoar:
            return None
        manad = max(datoar).strftime("%Y-%m")
        return kpi.rapport(saker, manad, await bosetting_store.kapasitet_inndata(conn, int(manad[:4])))
    except asyncpg.PostgresError:  # not migrated yet
        return None
    finally:
        await conn.close()


def create_console(cfg: Settings) -> FastAPI:
    app = FastAPI(title="chain console", docs_url=None, redoc_url=None)
    install_problem_handlers(app)
    page = resources.files("drift").joinpath("console.html").read_text()

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/api/status")
    async def api_status() -> dict:
        s = await status.collect(cfg)
        return s.as_dict() | {"problems": status.problems(s), "gjennomstrauming": await gjennomstrauming(cfg)}

    @app.get("/api/dlq")
    async def api_dlq() -> list[dict]:
        return [d.summary() for d in await dlq.list_dead_letters(cfg, limit=200)]

    @app.post("/api/dlq/{message_id}/redrive")
    async def api_redrive(message_id: str, x_chain_console: str | None = Header(default=None)) -> dict:
        if x_chain_console is None:
            raise Problem(403, "Redrive only from the console page (header X-Chain-Console)")
        try:
            n = await dlq.redrive(cfg, message_id=message_id)
        except dlq.DlqFeil as feil:
            raise Problem(409, "Cannot redrive", str(feil)) from None
        if n == 0:
            raise Problem(404, "No dead letter with this message id")
        return {"redriven": n}

    @app.get("/api/kpi")
    async def api_kpi() -> dict | None:
        return await kpi_no(cfg)

    @app.get("/api/journal")
    async def api_journal() -> list[dict]:
        return await journal.entries(cfg, 10)

    return app
