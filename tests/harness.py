"""One service's river, in-process, on its own queue (real broker and database); and
`in_process_service`, a service's HTTP API and handlers in-process on its own database.

Events are published straight to the harness queue, so nothing else on the bus sees them
and the allocator and relays are not running: what a test observes is the river and the
handlers alone."""

import contextlib
from dataclasses import dataclass

import aio_pika
import asyncpg
import httpx
from fastapi import FastAPI
from faststream.rabbit import RabbitBroker

from shared.db import open_database
from shared.envelope import CONTENT_TYPE, Envelope
from shared.http import install_problem_handlers
from shared.river import River
from shared.service import Runtime, subscribe
from shared.topology import ServiceQueue, declare_all
from sim.environment import Environment

FAST_RETRIES = (50, 100, 200, 400)


@dataclass
class Harness:
    river: River
    pool: asyncpg.Pool
    channel: aio_pika.abc.AbstractChannel

    async def publish(self, message: Envelope | bytes, routing_key: str = "test") -> None:
        body = message if isinstance(message, bytes) else message.model_dump_json().encode()
        await self.channel.default_exchange.publish(
            aio_pika.Message(body, content_type=CONTENT_TYPE, headers={"x-test-key": routing_key}),
            routing_key=self.river.queue.name,
        )

    async def dead_letters(self) -> list[aio_pika.abc.AbstractIncomingMessage]:
        queue = await self.channel.declare_queue(self.river.queue.dlq, passive=True)
        messages = []
        while (message := await queue.get(fail=False)) is not None:
            await message.ack()
            messages.append(message)
        return messages


@contextlib.asynccontextmanager
async def river_harness(env: Environment, service: str, handlers: dict, max_attempts: int = 5):
    cfg = env.settings()
    queue = ServiceQueue(f"test.{service}", (), FAST_RETRIES)
    await declare_all(cfg.amqp_url, [queue])
    pool = await open_database(cfg.database_url(f"harness_{service}"), ["shared", f"services.{service}"])
    connection = await aio_pika.connect(cfg.amqp_url)
    broker = RabbitBroker(cfg.amqp_url, logger=None)
    river = River(service, queue, pool, broker, handlers, max_attempts)
    subscribe(broker, river, prefetch=50)
    await broker.start()
    try:
        async with connection:
            yield Harness(river, pool, await connection.channel(publisher_confirms=True))
    finally:
        await broker.stop()
        await pool.close()


@contextlib.asynccontextmanager
async def in_process_service(cfg, service: str, database: str, handlers: dict, routers: list, *, headers=None, pool_size=10):
    """A service's HTTP API and handlers in-process, on a database of its own (real
    PostgreSQL); the broker is never started, so nothing is consumed and the test drives
    handlers directly. Yields (runtime, http client)."""
    pool = await open_database(cfg.database_url(database), ["shared", f"services.{service}"], pool_size=pool_size)
    broker = RabbitBroker(cfg.amqp_url, logger=None)
    river = River(service, ServiceQueue(service, ()), pool, broker, handlers)
    rt = Runtime(service, cfg, pool, broker, river)
    app = FastAPI(title=service)
    install_problem_handlers(app)
    for router in routers:
        app.include_router(router)
    app.state.runtime = rt
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers) as http:
            yield rt, http
    finally:
        await pool.close()
