"""Bosetting's HTTP API for caseworkers and kommunar (municipalities)."""

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.bosetting import handlers, store
from services.bosetting.domain import DomainError, Sak, Status
from shared.catalogue import Kategori
from shared.http import Problem
from shared.service import Runtime, current_runtime

router = APIRouter()
RuntimeDep = Annotated[Runtime, Depends(current_runtime)]
SakIdPath = Annotated[str, Path(pattern=r"^sak-[0-9a-z-]{6,60}$")]
KommunePath = Annotated[str, Path(pattern=r"^[0-9]{4}$", description="Kommunenummer")]


class SakUt(BaseModel):
    sak_id: str
    status: Status
    kategori: Kategori
    tal_personar: int
    kommunenummer: str | None
    busetjingsdato: date | None

    @classmethod
    def of(cls, sak: Sak) -> "SakUt":
        return cls(
            sak_id=sak.sak_id,
            status=sak.status,
            kategori=sak.kategori,
            tal_personar=sak.tal_personar,
            kommunenummer=sak.kommunenummer,
            busetjingsdato=sak.busetjingsdato,
        )


class Svar(BaseModel):
    """A kommune's answer to an allocation: accept with a settlement date, or refuse with a reason."""

    model_config = ConfigDict(extra="forbid")
    svar: Literal["akseptert", "avslatt"]
    busetjingsdato: date | None = None
    grunn: str | None = Field(default=None, min_length=1, max_length=500)

    @model_validator(mode="after")
    def _complete(self):
        if self.svar == "akseptert" and self.busetjingsdato is None:
            raise ValueError("an accepted allocation needs busetjingsdato")
        if self.svar == "avslatt" and not self.grunn:
            raise ValueError("a refusal needs grunn")
        return self


class Busetjing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    busetjingsdato: date


class KapasitetInn(BaseModel):
    """Decided places (vedtaksplassar) per group, in persons."""

    model_config = ConfigDict(extra="forbid")
    einsleg_mindrearig: int = Field(default=0, ge=0, le=100_000)
    barnefamilie: int = Field(default=0, ge=0, le=100_000)
    vaksen: int = Field(default=0, ge=0, le=100_000)


async def _run(command):
    try:
        return SakUt.of(await command)
    except handlers.SakFinstIkkje:
        raise Problem(404, "No such sak") from None
    except DomainError as exc:
        raise Problem(409, "Conflict with the sak's status", str(exc)) from None


@router.get("/saker", response_model=list[dict], tags=["saker"])
async def list_saker(
    rt: RuntimeDep,
    status: Status | None = None,
    kommunenummer: Annotated[str | None, Query(pattern=r"^[0-9]{4}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
):
    async with rt.pool.acquire() as conn:
        return [dict(r) for r in await store.list_saker(conn, status, kommunenummer, limit)]


@router.get("/saker/{sak_id}", response_model=SakUt, tags=["saker"])
async def get_sak(rt: RuntimeDep, sak_id: SakIdPath):
    async with rt.pool.acquire() as conn:
        sak = await store.get_sak(conn, sak_id, for_update=False)
    if sak is None:
        raise Problem(404, "No such sak")
    return SakUt.of(sak)


@router.post("/kommunar/{kommunenummer}/saker/{sak_id}/svar", response_model=SakUt, tags=["kommunar"])
async def svar(rt: RuntimeDep, kommunenummer: KommunePath, sak_id: SakIdPath, body: Svar):
    if body.svar == "akseptert":
        return await _run(handlers.avtal(rt, sak_id, kommunenummer, body.busetjingsdato))
    return await _run(handlers.avsla(rt, sak_id, kommunenummer, body.grunn))


@router.post("/saker/{sak_id}/busetjing", response_model=SakUt, tags=["saker"])
async def busetjing(rt: RuntimeDep, sak_id: SakIdPath, body: Busetjing):
    """Register that the household has moved in (bosatt)."""
    return await _run(handlers.bosett(rt, sak_id, body.busetjingsdato))


@router.put("/kommunar/{kommunenummer}/kapasitet", status_code=204, tags=["kommunar"])
async def kapasitet(rt: RuntimeDep, kommunenummer: KommunePath, body: KapasitetInn):
    async with rt.pool.acquire() as conn:
        if not await store.kommune_exists(conn, kommunenummer):
            raise Problem(404, "No such kommune")
    await handlers.set_kapasitet(rt, kommunenummer, {Kategori(k): v for k, v in body.model_dump().items()})


@router.get("/kommunar", tags=["kommunar"])
async def list_kommunar(rt: RuntimeDep) -> list[dict]:
    async with rt.pool.acquire() as conn:
        return [dict(r) for r in await store.kommunar(conn)]


@router.get("/statistikk", tags=["statistikk"])
async def statistikk(rt: RuntimeDep) -> dict:
    async with rt.pool.acquire() as conn:
        return await store.statistikk(conn)
