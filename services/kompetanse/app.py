"""Kompetanse service: individual competence data for authorised consumers (NAV and others).

Run: `python -m services.kompetanse.app` (HTTP on CHAIN_KOMPETANSE_PORT, default 8103).
"""

from services.kompetanse import handlers, varsel
from services.kompetanse.api import router
from services.kompetanse.innsyn import router as innsyn
from shared.config import settings
from shared.service import ServiceSpec, create_app, serve


async def varselkoar(_pool) -> None:
    """Each registered consumer's notification queue, bound to what it may know."""
    await varsel.deklarer(settings().amqp_url, handlers.policyar())


SPEC = ServiceSpec(
    name="kompetanse",
    description="Individual competence data, served only to authorised consumers; every access audited.",
    # Whole producers' streams, no holes: every event of UDI (vedtak.*), kartlegging
    # (kartlegging.*, and mottak.*, which kartlegging relays from the mottak systems'
    # intake as its own) and bosetting, even those kompetanse ignores.
    bindings=("vedtak.*", "kartlegging.*", "bosetting.*", "mottak.*"),
    handlers=handlers.EVENT_HANDLERS,
    startup=[varselkoar],
    routers=[router, innsyn],
)

app = create_app(SPEC)

if __name__ == "__main__":
    serve(app, SPEC.name, 8103)
