"""Bosetting service: case lifecycle, kommune capacity and allocation.

Run: `python -m services.bosetting.app` (HTTP on CHAIN_BOSETTING_PORT, default 8102).
"""

import asyncio
import contextlib

from services.bosetting import handlers, store
from services.bosetting.api import router
from shared.log import get_logger
from shared.service import Runtime, ServiceSpec, create_app, serve

log = get_logger()


async def load_reference_data(pool) -> None:
    async with pool.acquire() as conn:
        await store.load_kommunar(conn)


async def allocator(rt: Runtime, stop: asyncio.Event) -> None:
    """Allocates fordelingsklar saker in rounds (IMDi works in distribution batches)."""
    while not stop.is_set():
        try:
            allocated = await handlers.fordel(rt)
        except Exception as exc:  # a database restart: try again next round
            log.warning("allocation_failed", error=type(exc).__name__)
            allocated = 0
        if allocated:
            log.info("allocated", saker=allocated)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rt.settings.allocation_interval)


SPEC = ServiceSpec(
    name="bosetting",
    description="Settlement case lifecycle (vedtak to bosatt), kommune capacity and allocation.",
    # Whole producers' streams are bound, so the per-case sequence has no holes.
    bindings=("vedtak.*", "kartlegging.*", "mottak.*"),
    handlers=handlers.EVENT_HANDLERS,
    routers=[router],
    startup=[load_reference_data],
    loops=[allocator],
)

app = create_app(SPEC)

if __name__ == "__main__":
    serve(app, SPEC.name, 8102)
