"""Kompetanse service: individual competence data for authorised consumers (NAV and others).

Run: `python -m services.kompetanse.app` (HTTP on CHAIN_KOMPETANSE_PORT, default 8103).
"""

from services.kompetanse import handlers
from services.kompetanse.api import router
from services.kompetanse.innsyn import router as innsyn
from shared.service import ServiceSpec, create_app, serve

SPEC = ServiceSpec(
    name="kompetanse",
    description="Individual competence data, served only to authorised consumers; every access audited.",
    # mottak.* too: kartlegging relays mottak systems' reports (intake) as its own events,
    # so they are part of kartlegging's sequence (whole producers' streams, no holes).
    bindings=("kartlegging.*", "bosetting.*", "mottak.*"),
    handlers=handlers.EVENT_HANDLERS,
    routers=[router, innsyn],
)

app = create_app(SPEC)

if __name__ == "__main__":
    serve(app, SPEC.name, 8103)
