"""Kartlegging service: mapping cases opened on UDI's vedtak; mottak submits mappings and
reports residents' events (intake.py).

Run: `python -m services.kartlegging.app` (HTTP on CHAIN_KARTLEGGING_PORT, default 8101).
"""

from services.kartlegging import handlers
from services.kartlegging.api import router
from services.kartlegging.intake import INTAKE_HANDLERS
from services.kartlegging.intake import router as intake
from shared.service import Intake, ServiceSpec, create_app, serve
from shared.topology import MOTTAK_INN

SPEC = ServiceSpec(
    name="kartlegging",
    description="Competence mapping (kartlegging) before settlement, integreringslova § 6.",
    bindings=("vedtak.*",),
    handlers=handlers.EVENT_HANDLERS,
    routers=[router, intake],
    # Mottak systems' events: queue `kartlegging.mottak-inn` on exchange `mottak.inn`.
    intake=Intake("mottak-inn", MOTTAK_INN, ("mottak.*",), INTAKE_HANDLERS),
)

app = create_app(SPEC)

if __name__ == "__main__":
    serve(app, SPEC.name, 8101)
