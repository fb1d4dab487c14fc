"""Test fixtures. Integration tests use the real RabbitMQ and PostgreSQL, isolated in the
vhost `chain_test` and databases `chain_test_*` (dropped and recreated per session).

Modules share the session's chain: each runs its workload with a seed of its own (the same
seed gives the same case ids, which the chain has already settled), and cleans up the dead
letters it makes on purpose (`purge_dead_letters`)."""

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from shared.log import configure
from sim.environment import Environment
from sim.processes import ProcessGroup

# Another name and port range let two test runs share the machine (CHAIN_TEST_ENV,
# CHAIN_TEST_BASE_PORT): each session drops and recreates its own environment.
ENV = Environment(os.environ.get("CHAIN_TEST_ENV", "chain_test"), base_port=int(os.environ.get("CHAIN_TEST_BASE_PORT", "8201")))

configure("tests", "WARNING")


@pytest.fixture(scope="session")
async def env() -> Environment:
    await ENV.reset()
    yield ENV
    ENV.drop_vhost()  # the broker's file handles (sim/environment.py)


@contextlib.asynccontextmanager
async def running_chain(env: Environment):
    """The three services and their relays, running as processes."""
    procs = ProcessGroup(env, Path("var/logs") / env.name)
    try:  # a start that fails half-way must not leave processes holding the ports
        await procs.start_all()
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture(scope="session")
async def chain(env):
    async with running_chain(env) as procs:
        yield procs


async def eventually(check, timeout: float = 30.0, interval: float = 0.1):
    """Poll an async check until it returns something truthy; fail with its last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)


DLQS = ("kartlegging.dlq", "bosetting.dlq", "kompetanse.dlq", "kartlegging.mottak-inn.dlq")


async def purge_dead_letters(env) -> None:
    """Empty the chain's DLQs: a test that dead-letters on purpose cleans up after itself,
    so tests that expect a healthy chain (chain status, replay, rebuild) see one."""
    import aio_pika

    connection = await aio_pika.connect(env.settings().amqp_url)
    async with connection:
        for name in DLQS:
            channel = await connection.channel()
            try:
                await (await channel.get_queue(name, ensure=True)).purge()
            except aio_pika.exceptions.ChannelClosed:
                pass  # not declared (yet) in this environment
