"""The inbound contract for reception-centre (mottak) systems, over AMQP and HTTP.

A mottak system reports what happens to its residents: registered, moved, left
(`mottak.status_endret`), particular needs flagged (`mottak.saerlege_behov_flagga`) and
consent given or withdrawn (`mottak.samtykke_gitt`). Over AMQP it publishes them to the
exchange `mottak.inn` with its own RabbitMQ user (`chain mottak-add`); kartlegging's
intake queue validates each (the river: envelope, schema, order, duplicates; bad input
is dead-lettered with its reason) and `videresend` puts it on `chain.events`. Over HTTP it
posts them here with its bearer token (`chain token mottak:<id>`). Either way the event
reaches the bus from kartlegging's outbox, in kartlegging's sequence, and the data is
exactly the catalogue's, so both ways share one contract.
"""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.catalogue import CATALOGUE, EventData
from shared.http import Problem, problems
from shared.envelope import Envelope
from shared.outbox import UnitOfWork, unit_of_work
from shared.river import Rejected
from shared.service import Runtime, caller, current_runtime

router = APIRouter()
RuntimeDep = Annotated[Runtime, Depends(current_runtime)]
MOTTAK_EVENTS = {et.name: et for et in CATALOGUE.values() if et.producer == "mottak"}


async def mottak(mottak_id: Annotated[str, Path(pattern=r"^[a-z0-9-]{1,40}$")], subject: Annotated[str, Depends(caller)]) -> str:
    if subject != f"mottak:{mottak_id}":
        raise Problem(403, "Only the mottak itself may report for it")
    return mottak_id


class Hending(BaseModel):
    """One event from a mottak system: its type, the case it is about, and the catalogue's data."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["mottak.status_endret", "mottak.saerlege_behov_flagga", "mottak.samtykke_gitt"]
    sak_id: str = Field(pattern=r"^sak-[0-9a-z-]{6,60}$")
    data: dict


class Kvittering(BaseModel):
    event_id: str
    type: str
    sak_id: str


def _data(hending: Hending, mottak_id: str) -> EventData:
    """Validate the data against the catalogue; errors name fields, never values."""
    try:
        data = MOTTAK_EVENTS[hending.type].model.model_validate(hending.data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "data" for e in exc.errors()})
        raise Problem(
            422,
            "Invalid request",
            f"{len(fields)} field(s) invalid",
            errors=[{"field": f"body.data.{f}", "type": "invalid", "message": "does not match the catalogue"} for f in fields],
        ) from None
    if data.mottak_id != mottak_id:
        raise Problem(422, "Invalid request", "data.mottak_id must be the reporting mottak")
    return data


@router.post("/mottak/{mottak_id}/hendingar", status_code=202, response_model=Kvittering, tags=["mottak"], responses=problems(401, 403))
async def hending(rt: RuntimeDep, mottak_id: Annotated[str, Depends(mottak)], body: Hending):
    """Report an event about a resident. Accepted means committed: it will reach the bus."""
    data = _data(body, mottak_id)
    async with unit_of_work(rt.pool, rt.source) as uow:
        envelope = await uow.emit(data, body.sak_id)
    return Kvittering(event_id=str(envelope.id), type=envelope.type, sak_id=body.sak_id)


async def videresend(uow: UnitOfWork, envelope: Envelope, data: EventData) -> None:
    """An event from a mottak system's AMQP intake passed validation: put it on the bus."""
    if envelope.source != f"urn:no:mottak:{data.mottak_id}":
        raise Rejected("source must be urn:no:mottak:<the data's mottak_id>")
    await uow.emit(data, envelope.subject)


INTAKE_HANDLERS = dict.fromkeys(MOTTAK_EVENTS, videresend)
