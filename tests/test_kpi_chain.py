"""The KPI projection live: after a workload through the running chain, bosetting's
`/kpi/rapport` agrees with its own cases, and `chain report --month` writes the report."""

from collections import Counter

import asyncpg
import httpx
import pytest
import typer
from typer.testing import CliRunner

from drift import rapport_cli
from sim.demo import kommunar
from sim.workload import households
from tests.conftest import eventually
from tests.test_chain import run_households

pytestmark = pytest.mark.usefixtures("chain")


async def test_the_kpi_report_agrees_with_the_cases_and_renders(env, tmp_path):
    work = households(25, seed=71, kommunar=[k for k, _, _ in kommunar()])
    await run_households(env, work)
    ids = [h.sak_id for h in work]
    conn = await asyncpg.connect(env.settings().database_url("bosetting"))
    try:
        rows = await conn.fetch("SELECT busetjingsdato, jsonb_array_length(personar) AS tal_personar FROM sak WHERE sak_id = ANY($1) AND status = 'bosatt'", ids)
        # bosetting folds its own events as it emits them: the projection is current at once
        await eventually(lambda: _projected(conn, ids, len(rows)))
        alle = await conn.fetch("SELECT busetjingsdato, jsonb_array_length(personar) AS tal_personar FROM sak WHERE status = 'bosatt'")
        # every record saw its vedtak, whichever producer's event came first (no lost update)
        assert await conn.fetchval(
            "SELECT count(*) FROM kpi_sak WHERE sak_id = ANY($1) AND (data->>'sakstype' IS NULL OR data->'statusar'->0->>0 NOT IN ('under_kartlegging', 'fordelingsklar'))",
            ids,
        ) == 0
    finally:
        await conn.close()
    per_manad = Counter()
    for r in alle:
        per_manad[r["busetjingsdato"].strftime("%Y-%m")] += r["tal_personar"]
    manad = next(m for m, _ in Counter({r["busetjingsdato"].strftime("%Y-%m"): 1 for r in rows}).most_common())

    headers = {"Authorization": f"Bearer {env.token('imdi:kpi')}"}
    async with httpx.AsyncClient(base_url=env.url("bosetting"), headers=headers) as http:
        rapport = (await http.get("/kpi/rapport", params={"manad": manad})).json()
        assert (await http.get("/kpi/rapport", params={"manad": "2023-13"})).status_code == 422
    assert sum(f["personar"] for f in rapport["bosette_per_fylke"]) == per_manad[manad]
    assert sum(g["bosette"] for g in rapport["innan_frist"]) <= per_manad[manad]  # privately living are in no group
    assert len(rapport["trend"]) == 12 and rapport["trend"][-1]["bosette"] == per_manad[manad]

    app = typer.Typer()
    app.callback()(lambda: None)
    rapport_cli.register(app)
    result = CliRunner().invoke(
        app, ["report", "--month", manad, "--out", str(tmp_path), "--bosetting-url", env.url("bosetting")],
        env={"CHAIN_TOKEN_SECRET": env.settings().token_secret},
    )
    assert result.exit_code == 0, result.output
    side = (tmp_path / f"situasjonsrapport-{manad}.html").read_text()
    assert "Situasjonsrapport busetjing" in side and "<svg" in side
    assert (tmp_path / manad / "innan_frist.csv").exists()


async def _projected(conn, ids, settled: int) -> bool:
    n = await conn.fetchval(
        "SELECT count(*) FROM kpi_sak WHERE sak_id = ANY($1) AND data->'statusar'->-1->>0 = 'bosatt'", ids
    )
    return n == settled


async def test_the_kpi_projection_rebuilt_from_the_event_log_equals_the_live_one(env):
    from drift import rebuild

    await run_households(env, households(12, seed=73, kommunar=[k for k, _, _ in kommunar()]))
    conn = await asyncpg.connect(env.settings().database_url("bosetting"))
    try:
        async def stable():
            a = await conn.fetch("SELECT sak_id, data FROM kpi_sak ORDER BY sak_id")
            await __import__("asyncio").sleep(1.0)
            b = await conn.fetch("SELECT sak_id, data FROM kpi_sak ORDER BY sak_id")
            return a if a == b else None

        live = await eventually(stable)
        r = await rebuild.kjor(env.settings(), "kpi")
        assert r.bytta and r.avvik.tomt, r.samandrag()
        assert await conn.fetch("SELECT sak_id, data FROM kpi_sak ORDER BY sak_id") == live
    finally:
        await conn.close()
