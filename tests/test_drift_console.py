"""The operator console end to end: the page in headless Chromium (Debian's package,
driven by Playwright) against the running chain, the real broker and database: it shows
the flow, cases per status and a dead letter with its reason, and a redrive from the page,
after the cause is fixed, applies the message and empties the DLQ."""

import asyncio
import contextlib
import shutil
import socket
from datetime import date

import asyncpg
import pytest
import uvicorn
from playwright.async_api import async_playwright, expect

from drift.console import create_console
from services.bosetting import store
from services.bosetting.referansedata import Kommune
from shared.catalogue import KapasitetRapportert
from shared.publish import envelope_for, publish_envelope
from shared.topology import EVENTS
from tests.conftest import eventually
from tests.test_chain import run_households
from sim.workload import households
from sim.demo import kommunar

pytestmark = pytest.mark.usefixtures("chain")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NY_KOMMUNE = "3999"  # a kommune not in the 2023 register: reports from it are rejected until it is added


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def console_server(cfg):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_console(cfg), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def publish(cfg, envelope) -> None:
    import aio_pika

    connection = await aio_pika.connect(cfg.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await publish_envelope(await channel.get_exchange(EVENTS), envelope)


async def test_the_console_shows_the_chain_and_redrives_a_fixed_dead_letter(env):
    cfg = env.settings()
    await run_households(env, households(8, seed=61, kommunar=[k for k, _, _ in kommunar()]))
    report = KapasitetRapportert(kommunenummer=NY_KOMMUNE, dato=date.today(), ledige_bustader=7, tek_imot=True)
    envelope = envelope_for(report, f"kommune-{NY_KOMMUNE}", f"urn:no:kommune:{NY_KOMMUNE}", 1)
    await publish(cfg, envelope)
    bosetting = await asyncpg.connect(cfg.database_url("bosetting"))
    try:
        saker = await bosetting.fetchval("SELECT count(*) FROM sak WHERE status = 'bosatt'")
        async with console_server(cfg) as url, async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = await browser.new_page()
            await page.goto(url)
            # the flow and the cases, as the databases have them
            await expect(page.locator('[data-service="bosetting"] h3')).to_have_text("bosetting")
            await expect(page.locator("#saker")).to_contain_text(f"bosatt{saker}")
            # the KPIs of the latest month with settlements, from bosetting's projection
            await expect(page.locator("#kpi")).to_contain_text("vaksen_mottak")
            # the dead letter, with its reason, and the health banner says so
            row = page.locator("#dlq tr", has_text=f"kommune-{NY_KOMMUNE}")
            await expect(row).to_contain_text("unknown kommunenummer", timeout=20_000)
            await expect(page.locator("#helse")).to_contain_text("bosetting.dlq")
            await expect(page.locator('[data-service="bosetting"] .dlq-count')).not_to_have_text("0")

            await page.screenshot(path="var/console.png", full_page=True)  # for a look; docs/console.png is one
            # the fix (the kommune enters the reference data), then the redrive from the page
            await store.load_kommunar(bosetting, [Kommune(NY_KOMMUNE, "Nykommune", "39", "Testfylke", 1000)], {})
            await row.locator("button.redrive").click()
            await expect(page.locator("#dlq tr", has_text=f"kommune-{NY_KOMMUNE}")).to_have_count(0, timeout=20_000)
            await expect(page.locator("#journal")).to_contain_text("dlq redrive")
            await browser.close()
        rapport = await eventually(
            lambda: bosetting.fetchval("SELECT ledige_bustader FROM kapasitetsrapport WHERE kommunenummer = $1", NY_KOMMUNE)
        )
        assert rapport == 7
    finally:
        await bosetting.close()


async def test_a_redrive_without_the_console_header_is_refused(env):
    import httpx

    async with console_server(env.settings()) as url, httpx.AsyncClient(base_url=url) as http:
        r = await http.post("/api/dlq/any-id/redrive")
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
