"""Wiring shared by every service process: database, broker, topology, river, HTTP.

A service is declared as a `ServiceSpec` (its queue bindings, handlers, HTTP routers and
background loops); `create_app` turns it into a FastAPI app whose lifespan starts the
FastStream subscriber, so one process serves both the queue and HTTP.
"""

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg
import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from faststream.middlewares import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitMessage, RabbitQueue
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared import metrics, tokens, topology, tracing
from shared.config import Settings, settings
from shared.db import open_database
from shared.http import Problem, install_problem_handlers, problem_response, problems
from shared.log import configure, get_logger
from shared.outbox import outbox_backlog
from shared.river import Handler, River

log = get_logger()


@dataclass
class Runtime:
    """What handlers, endpoints and loops of a running service share."""

    name: str
    settings: Settings
    pool: asyncpg.Pool
    broker: RabbitBroker
    river: River

    @property
    def source(self) -> str:
        return self.river.source


@dataclass(frozen=True)
class Intake:
    """A second, separate queue for events from outside parties on their own exchange
    (`<service>.<name>`): its handlers validate and put what passes on `chain.events`, so
    a flood of bad input fills only this queue and its DLQ."""

    name: str
    exchange: str
    bindings: tuple[str, ...]
    handlers: dict[str, Handler]


@dataclass
class ServiceSpec:
    name: str
    bindings: tuple[str, ...]
    handlers: dict[str, Handler]
    intake: Intake | None = None
    routers: list[APIRouter] = field(default_factory=list)
    # Run once at start, before the queue is consumed (reference data and the like).
    startup: list[Callable[[asyncpg.Pool], Awaitable[None]]] = field(default_factory=list)
    loops: list[Callable[[Runtime, asyncio.Event], Awaitable[None]]] = field(default_factory=list)
    description: str = ""

    def queue(self, cfg: Settings) -> topology.ServiceQueue:
        return topology.ServiceQueue(self.name, self.bindings, tuple(cfg.retry_delays_ms))

    def intake_queue(self, cfg: Settings) -> topology.ServiceQueue | None:
        if self.intake is None:
            return None
        i = self.intake
        return topology.ServiceQueue(f"{self.name}.{i.name}", i.bindings, tuple(cfg.retry_delays_ms), i.exchange)


def create_app(spec: ServiceSpec) -> FastAPI:
    cfg = settings()
    configure(spec.name, cfg.log_level)
    tracing.configure(spec.name)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        queue, intake_queue = spec.queue(cfg), spec.intake_queue(cfg)
        await topology.declare_all(cfg.amqp_url, [q for q in (queue, intake_queue) if q], cfg.eventlog_max_age)
        pool = await open_database(cfg.database_url(spec.name), ["shared", f"services.{spec.name}"], cfg.pg_pool_size)
        for step in spec.startup:
            await step(pool)
        broker = new_broker(cfg.amqp_url)
        river = new_river(cfg, spec.name, queue, pool, broker, spec.handlers)
        rivers = [river]
        if intake_queue:  # same service, same outbox: what passes is emitted as ours
            rivers.append(new_river(cfg, spec.name, intake_queue, pool, broker, spec.intake.handlers))
        await broker.start()
        for r in rivers:
            await r.start(cfg.prefetch)
        runtime = Runtime(spec.name, cfg, pool, broker, river)
        app.state.runtime = runtime
        stop = asyncio.Event()
        tasks = [asyncio.create_task(loop(runtime, stop)) for loop in spec.loops]
        log.info("service_started", queue=queue.name)
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Stop consuming and let the batches in hand commit and be acked, then disconnect.
            await asyncio.gather(*(r.stop(timeout=20.0) for r in rivers))
            await broker.stop()
            await pool.close()
            log.info("service_stopped")

    app = FastAPI(title=spec.name, description=spec.description, lifespan=lifespan)
    install_problem_handlers(app)
    for router in spec.routers:
        app.include_router(router)

    @app.get("/health/live", tags=["health"])
    async def live() -> dict:
        return {"status": "ok"}

    @app.get("/health/ready", tags=["health"], responses=problems(503))
    async def ready(request: Request):
        rt: Runtime = request.app.state.runtime
        checks = await readiness(rt)
        if not all(checks.values()):
            return problem_response(503, "Not ready", ", ".join(k for k, ok in checks.items() if not ok))
        return {"status": "ready", "outbox_backlog": await outbox_backlog(rt.pool), "stats": rt.river.stats.__dict__}

    # Prometheus text format; not in the OpenAPI document (it is for the scraper, not for
    # API clients). The outbox backlog is read from the database now (shared/metrics.py).
    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        rt: Runtime = request.app.state.runtime
        await metrics.observe_outbox(rt.name, rt.pool)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def new_broker(amqp_url: str) -> RabbitBroker:
    """FastStream's broker: the connection the rivers consume on, and the publisher of
    their retry and dead-letter copies (with confirms)."""
    return RabbitBroker(amqp_url, logger=None)


def new_river(
    cfg: Settings, name: str, queue: topology.ServiceQueue, pool: asyncpg.Pool, broker: RabbitBroker, handlers: dict[str, Handler]
) -> River:
    return River(
        name, queue, pool, broker, handlers, cfg.max_attempts,
        batch_size=cfg.river_batch_size, batch_wait=cfg.river_batch_wait_ms / 1000,
    )


def subscribe(broker: RabbitBroker, river: River, prefetch: int) -> None:
    """Consume the river's queue through a FastStream subscriber, started and stopped with
    the broker, for a caller that only starts and stops the broker (tests/harness.py).
    The services use `River.start` instead, below FastStream, which costs less per delivery
    (see there); the river's batches are the same either way. Manual acks: the river acks
    after commit."""

    @broker.subscriber(
        RabbitQueue(river.queue.name, declare=False),
        ack_policy=AckPolicy.MANUAL,
        channel=Channel(prefetch_count=prefetch),
        decoder=_undecoded,
    )
    async def consume(message: Any) -> None:  # the RabbitMessage (see _undecoded)
        await river.handle(message.raw_message)


async def _undecoded(message: RabbitMessage) -> RabbitMessage:
    """The handler gets the message itself as its body: the river parses the envelope (and
    dead-letters what does not parse). Taking it as `RabbitMessage` from FastStream's context
    instead costs a thread-pool round trip per delivery (FastStream resolves context fields
    with a synchronous call); a decoder must be `async` for the same reason."""
    return message


async def readiness(rt: Runtime) -> dict[str, bool]:
    checks = {"database": False, "consumer": False}
    with contextlib.suppress(Exception):
        checks["database"] = await rt.pool.fetchval("SELECT true")
    # A consumer that did not come back after a broker restart leaves the connection up
    # and the queue silent: check that our queue has a consumer, not only a connection.
    with contextlib.suppress(Exception):
        checks["consumer"] = await _queue_has_consumers(rt)
    return checks


async def _queue_has_consumers(rt: Runtime) -> bool:
    connection = await aio_pika.connect(rt.settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(rt.name, passive=True)
        return (queue.declaration_result.consumer_count or 0) > 0


# Dependencies are `async def` although they never await: FastAPI runs a plain `def`
# dependency in its thread pool, a thread hop on every request (8% of kompetanse's CPU).
async def current_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def caller(request: Request) -> str:
    """Who calls: the verified subject of the request's bearer token (shared/tokens.py),
    e.g. `imdi:ola` or `kommune:0301`; 401 problem+json without a valid one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    secret = request.app.state.runtime.settings.token_secret
    subject = tokens.verify(secret, token) if scheme.lower() == "bearer" else None
    if subject is None:
        raise Problem(401, "A valid bearer token is required")
    return subject


def _exit_cleanly(signum, frame) -> None:
    """SIGTERM outside uvicorn's own handler. Uvicorn catches SIGTERM, shuts down gracefully
    (the lifespan's end: rivers stop consuming, their batches commit and are acked), then
    restores this handler and raises the signal again; the default handler would end the
    process by the signal (exit -15/143) after a clean stop, which an orchestrator reads as
    a crash. Before uvicorn starts, it stops the process the same way, with nothing in hand."""
    raise SystemExit(0)


def serve(app: FastAPI, name: str, default_port: int) -> None:
    """Run a service's app: `python -m services.<name>.app`; port from CHAIN_<NAME>_PORT."""
    port = int(os.environ.get(f"CHAIN_{name.upper()}_PORT", default_port))
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(app, host=settings().http_host, port=port, log_config=None, timeout_graceful_shutdown=25)
