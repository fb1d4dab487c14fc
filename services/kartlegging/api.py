"""Kartlegging's HTTP API: mottak systems submit mapping results here."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from services.kartlegging import handlers, store
from services.kartlegging.domain import DomainError
from shared.catalogue import Arbeidserfaring, Kartleggingstype, Kommunenummer, SaerlegeBehov, Sprak, Utdanning
from shared.http import Problem
from shared.service import Runtime, current_runtime

router = APIRouter()
RuntimeDep = Annotated[Runtime, Depends(current_runtime)]
SakIdPath = Annotated[str, Path(pattern=r"^sak-[0-9a-z-]{6,60}$")]
PersonIdPath = Annotated[str, Path(pattern=r"^p-[0-9a-f]{16,64}$", description="Pseudonymous person id")]


class Kartleggingsinnhald(BaseModel):
    """One person's mapping: education, work experience, languages, particular needs and
    where close relatives or a network live."""

    model_config = ConfigDict(extra="forbid")
    utdanning: Utdanning
    arbeid: list[Arbeidserfaring] = Field(default_factory=list, max_length=20)
    sprak: list[Sprak] = Field(default_factory=list, max_length=20)
    saerlege_behov: list[SaerlegeBehov] = Field(default_factory=list, max_length=5)
    nettverk_kommunar: list[Kommunenummer] = Field(default_factory=list, max_length=10)


class Kvittering(BaseModel):
    sak_id: str
    person_id: str
    sak_komplett: bool


class Kartleggingsstatus(BaseModel):
    sak_id: str
    kartleggingstype: Kartleggingstype
    personar: dict[str, bool] = Field(description="person id -> mapped")
    komplett: bool


@router.post("/kartleggingar/{sak_id}/personar/{person_id}", response_model=Kvittering, tags=["kartlegging"])
async def submit(rt: RuntimeDep, sak_id: SakIdPath, person_id: PersonIdPath, body: Kartleggingsinnhald):
    """Submit a completed mapping for one person. Resubmitting identical content is safe."""
    try:
        sak = await handlers.fullfor(rt, sak_id, person_id, body.model_dump(mode="json"))
    except handlers.SakFinstIkkje:
        raise Problem(404, "No such mapping case or person") from None
    except DomainError as exc:
        raise Problem(409, "Mapping already complete", str(exc)) from None
    return Kvittering(sak_id=sak_id, person_id=person_id, sak_komplett=sak.komplett)


@router.get("/kartleggingar/{sak_id}", response_model=Kartleggingsstatus, tags=["kartlegging"])
async def status(rt: RuntimeDep, sak_id: SakIdPath):
    async with rt.pool.acquire() as conn:
        found = await store.get_sak(conn, sak_id, for_update=False)
    if found is None:
        raise Problem(404, "No such mapping case")
    sak, _ = found
    return Kartleggingsstatus(
        sak_id=sak_id,
        kartleggingstype=sak.kartleggingstype,
        personar={p: v is not None for p, v in sak.personar.items()},
        komplett=sak.komplett,
    )


@router.get("/dekning", tags=["kartlegging"])
async def dekning(rt: RuntimeDep) -> dict:
    """Mapping coverage: persons to be mapped, and how many are mapped."""
    async with rt.pool.acquire() as conn:
        return await store.dekning(conn)
