"""`chain status`: pure evaluation of constructed states, and the real thing against the
chain running on the real broker and database."""

import asyncio
import json
import math
import os
from collections import Counter
from datetime import datetime, timezone
from unittest import mock

import aio_pika
import asyncpg
import pytest
import typer
from typer.testing import CliRunner

from drift.status import Queue, Service, Status, Thresholds, collect, problems
from drift.status_cli import register
from shared import config
from shared.config import Settings
from sim.workload import households
from tests.conftest import eventually
from tests.test_chain import KOMMUNAR, outcome, run_households

# --- pure: problems() on constructed states -----------------------------------------------


def state(queues=(), services=(), broker_error=None) -> Status:
    return Status(
        at=datetime.now(timezone.utc), broker_error=broker_error, queues=list(queues),
        services=list(services) or [Service("bosetting")], saker_per_status={}, personar_per_status={},
        eventlog_messages=0,
    )


def test_a_healthy_state_has_no_problems():
    s = state(
        [Queue("bosetting", "service", "bosetting", depth=3, consumers=1), Queue("bosetting.dlq", "dlq", "bosetting")],
        [Service("bosetting", processed_per_s=10.0, oldest_unpublished_s=2.0, queued=3)],
    )
    assert problems(s) == []


def test_a_service_or_intake_queue_without_consumer_is_a_problem_a_notification_queue_is_not():
    s = state([
        Queue("bosetting", "service", "bosetting", consumers=0),
        Queue("kartlegging.mottak-inn", "intake", "kartlegging", consumers=0),
        Queue("kompetanse.varsel.889640782", "varsel", "kompetanse", depth=5, consumers=0),
    ])
    assert problems(s) == ["queue bosetting has no consumer", "queue kartlegging.mottak-inn has no consumer"]


def test_an_old_unpublished_outbox_row_is_a_problem_past_the_threshold():
    s = state(services=[Service("kompetanse", oldest_unpublished_s=61.0)])
    [problem] = problems(s)
    assert problem.startswith("kompetanse: the oldest unpublished outbox row is 61 s old")
    assert problems(s, Thresholds(outbox_age_s=120)) == []


def test_a_long_or_infinite_wait_is_a_problem():
    slow = Service("bosetting", processed_per_s=1.0, queued=301)
    stalled = Service("kartlegging", processed_per_s=0.0, queued=4)
    assert slow.estimated_wait_s == 301 and stalled.estimated_wait_s == math.inf
    assert problems(state(services=[slow, stalled])) == [
        "bosetting: estimated wait 301 s for 301 queued message(s) (limit 300 s)",
        "kartlegging: 4 message(s) queued and none processed in the last minute",
    ]
    assert problems(state(services=[slow]), Thresholds(wait_s=400)) == []


def test_dead_letters_missing_queues_and_unreachable_parts_are_problems():
    s = state(
        [
            Queue("kompetanse.dlq", "dlq", "kompetanse", depth=2),
            Queue("bosetting", "service", "bosetting", missing=["bosetting"]),
            Queue("bosetting.retry.*", "retry", "bosetting", missing=["bosetting.retry.5000ms"]),
        ],
        [Service("kartlegging", error="OSError: refused")],
        broker_error="AMQPConnectionError: refused",
    )
    assert problems(s) == [
        "the broker is unreachable (AMQPConnectionError: refused)",
        "kompetanse.dlq holds 2 dead-lettered message(s)",
        "queue bosetting is missing",  # and not also "has no consumer"
        "queue bosetting.retry.5000ms is missing",
        "the kartlegging database is unreachable (OSError: refused)",
    ]
    assert s.unreachable


def test_as_dict_is_strict_json_even_when_a_queue_is_stalled():
    s = state(services=[Service("bosetting", queued=4)])
    d = json.loads(json.dumps(s.as_dict(), allow_nan=False))
    assert d["services"][0]["stalled"] is True and d["services"][0]["estimated_wait_s"] is None


# --- against the running chain ----------------------------------------------------------


def settings_of(env) -> Settings:
    """The settings the chain's processes run with (their retry tiers name the retry queues)."""
    with mock.patch.dict(os.environ, env.env()):
        return Settings()


@pytest.fixture(scope="module")
async def workload(env, chain):
    work = households(10, seed=31, kommunar=KOMMUNAR)
    sim = await run_households(env, work)
    assert not sim.errors
    return work


def invoke(env, *args, **overrides: str) -> "typer.testing.Result":
    """`chain status` through Typer, configured by environment variables like the real CLI."""
    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so the command is called by its name
    register(app)
    config.settings.cache_clear()
    try:
        return CliRunner().invoke(app, ["status", *args], env=env.env() | {"COLUMNS": "160"} | overrides)
    finally:
        config.settings.cache_clear()


async def test_healthy_after_a_run(env, workload):
    status = await collect(settings_of(env))
    assert problems(status) == []
    assert not status.unreachable
    queues = {q.name: q for q in status.queues}
    assert {"kartlegging", "bosetting", "kompetanse", "kartlegging.mottak-inn", "bosetting.dlq", "bosetting.retry.*"} <= set(queues)
    assert all(queues[s].consumers >= 1 for s in ("kartlegging", "bosetting", "kompetanse", "kartlegging.mottak-inn"))
    assert any(q.kind == "varsel" for q in status.queues)
    # The stream reports its count on a passive declare, updated by the broker every few seconds.
    await eventually(lambda: _eventlog_messages(env), timeout=30, interval=1)
    bosetting = next(s for s in status.services if s.name == "bosetting")
    assert bosetting.processed_per_s > 0 and bosetting.published_per_s > 0  # the run was within the minute

    result = await asyncio.to_thread(invoke, env)
    assert result.exit_code == 0, result.output
    assert "healthy" in result.output and "Cases per status" in result.output


async def _eventlog_messages(env) -> int | None:
    return (await collect(settings_of(env))).eventlog_messages


async def test_cases_per_status_are_what_bosetting_says(env, workload):
    status = await collect(settings_of(env))
    conn = await asyncpg.connect(env.settings().database_url("bosetting"))
    try:
        rows = await conn.fetch("SELECT status, personar FROM sak")
    finally:
        await conn.close()
    assert status.saker_per_status == Counter(r["status"] for r in rows)
    personar = Counter()
    for r in rows:
        personar[r["status"]] += len(json.loads(r["personar"]))
    assert status.personar_per_status == personar
    settle, gone = outcome(workload)
    assert status.saker_per_status["bosatt"] >= len(settle) and status.saker_per_status.get("trukke", 0) >= len(gone)


async def test_a_dead_letter_makes_it_unhealthy(env, workload):
    cfg = env.settings()
    connection = await aio_pika.connect(cfg.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key="bosetting.dlq")
        try:
            status = await collect(settings_of(env))
            assert "bosetting.dlq holds 1 dead-lettered message(s)" in problems(status)
            result = await asyncio.to_thread(invoke, env)
            assert result.exit_code == 1, result.output
            assert "bosetting.dlq holds 1" in result.output
        finally:
            await (await channel.get_queue("bosetting.dlq", ensure=False)).purge()
    assert problems(await collect(settings_of(env))) == []


async def test_json_output_has_the_queues(env, workload):
    result = await asyncio.to_thread(invoke, env, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["healthy"] is True and data["problems"] == []
    depths = {q["name"]: q["depth"] for q in data["queues"]}
    assert {"kartlegging", "bosetting", "kompetanse", "kartlegging.mottak-inn", "kompetanse.dlq"} <= set(depths)
    assert data["saker_per_status"]["bosatt"] >= 1


async def test_an_unreachable_broker_exits_2(env):
    result = await asyncio.to_thread(invoke, env, CHAIN_AMQP_URL="amqp://guest:guest@127.0.0.1:1/")  # nothing listens on port 1
    assert result.exit_code == 2, result.output
    assert "the broker is unreachable" in result.output
