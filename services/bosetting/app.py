"""Bosetting service: case lifecycle, kommune capacity and allocation.

Run: `python -m services.bosetting.app` (HTTP on CHAIN_BOSETTING_PORT, default 8102).
"""

import asyncio
import contextlib
from pathlib import Path

from services.bosetting import handlers, referansedata, store
from services.bosetting.api import router
from shared.config import settings
from shared.log import get_logger
from shared.service import Runtime, ServiceSpec, create_app, serve

log = get_logger()


async def load_reference_data(pool) -> None:
    """Kommune reference data: the shipped 2023 files, or SSB exports named in the settings."""
    cfg = settings()
    if cfg.kommune_klass_csv and cfg.kommune_folketal_csv:
        kommunar = referansedata.kommunar(
            Path(cfg.kommune_klass_csv).read_text(encoding="utf-8-sig"),
            Path(cfg.kommune_folketal_csv).read_text(encoding="utf-8-sig"),
        )
    else:
        kommunar = referansedata.default_kommunar()
    async with pool.acquire() as conn:
        await store.load_kommunar(conn, kommunar, referansedata.default_tilbod())
    log.info("kommunar_loaded", kommunar=len(kommunar))


def _every(interval, step, name: str):
    """A background loop: run `step` until it has nothing to do, then wait `interval`."""

    async def loop(rt: Runtime, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                done = await step(rt)
            except Exception as exc:  # a database restart: try again next time
                log.warning(f"{name}_failed", error=type(exc).__name__)
                done = 0
            if done:
                log.info(name, n=done)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval(rt.settings))

    return loop


# Allocation batches (IMDi works in distribution batches) and the deadline watch.
allocator = _every(lambda cfg: cfg.allocation_interval, handlers.fordel, "allocation_batch")
fristvakt = _every(lambda cfg: cfg.frist_interval, handlers.fristvakt, "frist_events")


SPEC = ServiceSpec(
    name="bosetting",
    description="Settlement case lifecycle (vedtak to bosatt), kommune capacity and allocation.",
    # Whole producers' streams are bound, so the per-case sequence has no holes. Its own
    # bosetting.* events are folded into the KPI projection as they are emitted, so they
    # are not bound (a broker that still has the old binding delivers them: a no-op).
    bindings=("vedtak.*", "kartlegging.*", "mottak.*", "kommune.*"),
    handlers=handlers.EVENT_HANDLERS,
    routers=[router],
    startup=[load_reference_data],
    loops=[allocator, fristvakt],
)

app = create_app(SPEC)

if __name__ == "__main__":
    serve(app, SPEC.name, 8102)
