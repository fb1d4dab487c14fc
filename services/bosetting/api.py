"""Bosetting's HTTP API for caseworkers (IMDi) and kommunar (municipalities).

Every call carries a bearer token (shared/tokens.py): `imdi:<caseworker>` for caseworkers,
`kommune:<kommunenummer>` for a kommune, which sees and answers only the households
allocated to it. Persons with protected identity are counted but never shown.
"""

import re
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.bosetting import handlers, kpi, store
from services.bosetting.domain import DomainError, IkkjeKommunensSak, Sak, Status
from services.bosetting.referansedata import Tilbod
from shared.catalogue import KapasitetRapportert, Kategori, Kommunenummer
from shared import klokke
from shared.http import TEKST, Problem, problems
from shared.service import Runtime, caller, current_runtime

router = APIRouter()
RuntimeDep = Annotated[Runtime, Depends(current_runtime)]
SakIdPath = Annotated[str, Path(pattern=r"^sak-[0-9a-z-]{6,60}$")]
KommunePath = Annotated[str, Path(pattern=r"^[0-9]{4}$", description="Kommunenummer")]
# Bounded: an offset past PostgreSQL's bigint was a 500 (found by tests/test_openapi_fuzz.py).
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="Rows to skip")]
SEKTORAR = Literal[
    "helse", "undervisning", "bygg", "transport", "reiseliv", "industri", "varehandel", "landbruk", "havbruk",
    "olje_energi", "it", "offentleg",
]


# --- who calls --------------------------------------------------------------------------


async def sakshandsamar(subject: Annotated[str, Depends(caller)]) -> str:
    if not subject.startswith("imdi:"):
        raise Problem(403, "Only IMDi caseworkers may do this")
    return subject


async def kommune(kommunenummer: KommunePath, subject: Annotated[str, Depends(caller)]) -> str:
    if subject != f"kommune:{kommunenummer}":
        raise Problem(403, "Only the kommune itself may do this")
    return kommunenummer


async def kommune_eller_imdi(kommunenummer: KommunePath, subject: Annotated[str, Depends(caller)]) -> str:
    if subject != f"kommune:{kommunenummer}" and not subject.startswith("imdi:"):
        raise Problem(403, "Only the kommune itself or IMDi may do this")
    return subject


Sakshandsamar = Annotated[str, Depends(sakshandsamar)]
Kommune = Annotated[str, Depends(kommune)]
KommuneEllerImdi = Annotated[str, Depends(kommune_eller_imdi)]
Innlogga = Annotated[str, Depends(caller)]


# --- bodies -----------------------------------------------------------------------------


class SakUt(BaseModel):
    sak_id: str
    status: Status
    kategori: Kategori
    tal_personar: int
    kommunenummer: str | None
    busetjingsdato: date | None
    frist: date

    @classmethod
    def of(cls, sak: Sak) -> "SakUt":
        return cls(
            sak_id=sak.sak_id,
            status=sak.status,
            kategori=sak.kategori,
            tal_personar=sak.tal_personar,
            kommunenummer=sak.kommunenummer,
            busetjingsdato=sak.busetjingsdato,
            frist=sak.frist,
        )


class PersonUt(BaseModel):
    """What a kommune or caseworker sees of a person: no ids, no names, no birth dates."""

    alder: int
    kjonn: str
    saerlege_behov: list[str] = Field(description="From the mapping and flagged by the mottak")
    kartlagt: bool
    fullstendigheit: float | None = Field(description="Share of the mapping's critical fields answered")


class HushaldUt(SakUt):
    reg_nummer: str
    sakstype: str
    vedtaksdato: date
    personar: list[PersonUt] = Field(description="Persons with protected identity are left out")
    skjerma_personar: int = Field(description="How many persons have protected identity (details never shown)")

    @classmethod
    def of(cls, sak: Sak, idag: date | None = None) -> "HushaldUt":
        idag = idag or klokke.idag()
        synlege = [p for p in sak.personar if not p.skjerma]
        return cls(
            **SakUt.of(sak).model_dump(),
            reg_nummer=sak.reg_nummer,
            sakstype=sak.sakstype,
            vedtaksdato=sak.vedtaksdato,
            personar=[
                PersonUt(
                    alder=idag.year - p.fodselsar,
                    kjonn=p.kjonn,
                    saerlege_behov=p.behov,
                    kartlagt=p.utdanningsniva is not None,
                    fullstendigheit=p.fullstendigheit,
                )
                for p in synlege
            ],
            skjerma_personar=sak.tal_personar - len(synlege),
        )


class Svar(BaseModel):
    """A kommune's answer to an allocation: accept with a settlement date, or refuse with a reason."""

    model_config = ConfigDict(extra="forbid")
    svar: Literal["akseptert", "avslatt"]
    busetjingsdato: date | None = None
    grunn: str | None = Field(default=None, min_length=1, max_length=500, pattern=TEKST)

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


class Plassar(BaseModel):
    """Places per group, in persons. Numbers and booleans in request bodies are strict
    (`strict=True`): `false` is not 0, nor "30" 30, as the OpenAPI schema says."""

    model_config = ConfigDict(extra="forbid")
    einsleg_mindrearig: int = Field(default=0, ge=0, le=100_000, strict=True)
    barnefamilie: int = Field(default=0, ge=0, le=100_000, strict=True)
    vaksen: int = Field(default=0, ge=0, le=100_000, strict=True)

    def per_kategori(self) -> dict[Kategori, int]:
        return {Kategori(k): v for k, v in self.model_dump().items()}


class Kapasitetsrapport(BaseModel):
    """A capacity report: free housing units, whether new allocations can be taken, and
    optionally the decided places for a year."""

    model_config = ConfigDict(extra="forbid")
    dato: date
    ledige_bustader: int | None = Field(default=None, ge=0, le=100_000, strict=True)
    tek_imot: bool | None = Field(default=None, strict=True)
    ar: int | None = Field(default=None, ge=2000, le=2100, strict=True)
    vedtaksplassar: Plassar | None = None

    @model_validator(mode="after")
    def _complete(self):
        if (self.ar is None) != (self.vedtaksplassar is None):
            raise ValueError("ar and vedtaksplassar come together")
        if self.ledige_bustader is None and self.tek_imot is None and self.vedtaksplassar is None:
            raise ValueError("a report needs at least one of ledige_bustader, tek_imot, vedtaksplassar")
        return self


class TilbodInn(BaseModel):
    """What the kommune offers: upper-secondary school, hospital nearby, services for
    unaccompanied minors, and labour-market sectors."""

    model_config = ConfigDict(extra="forbid")
    vidaregaande: bool = Field(strict=True)
    sjukehus: bool = Field(strict=True)
    mindrearig_teneste: bool = Field(strict=True)
    sektorar: list[SEKTORAR] = Field(max_length=12)


class Anmodning(BaseModel):
    """IMDi's yearly request: places asked of each kommune, per group."""

    model_config = ConfigDict(extra="forbid")
    kommunar: dict[Kommunenummer, Plassar] = Field(min_length=1, max_length=400)

    @field_validator("kommunar", mode="before")
    @classmethod
    def _kommunenummer(cls, v):
        # Checked before the keys are validated one by one: a bad key would otherwise be
        # echoed in the error's field path.
        if isinstance(v, dict) and not all(re.fullmatch(r"[0-9]{4}", k) for k in v):
            raise ValueError("every key must be a kommunenummer (four digits)")
        return v


class Stadfesting(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sak_ids: list[Annotated[str, Field(pattern=r"^sak-[0-9a-z-]{6,60}$")]] = Field(min_length=1, max_length=1000)
    grunn: str | None = Field(default=None, max_length=500, pattern=TEKST)


class Overstyring(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kommunenummer: Kommunenummer
    grunn: str = Field(min_length=1, max_length=500, pattern=TEKST, description="Why the proposal is overridden (logged)")


class Trekking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arsak: Literal["utreist", "busett_sjolv", "vedtak_oppheva", "anna"]
    grunn: str = Field(min_length=1, max_length=500, pattern=TEKST)


# --- errors -----------------------------------------------------------------------------


async def _run(command):
    try:
        return await command
    except (handlers.SakFinstIkkje, IkkjeKommunensSak):
        # The same answer for an unknown sak and another kommune's: ids cannot be probed.
        raise Problem(404, "No such sak") from None
    except handlers.KommuneFinstIkkje:
        raise Problem(404, "No such kommune") from None
    except handlers.IkkjeOpeForslag as exc:
        raise Problem(409, "No open proposal", str(exc), sak_ids=exc.sak_ids) from None
    except handlers.Hindra as exc:
        raise Problem(409, "A hard constraint forbids this allocation", str(exc)) from None
    except DomainError as exc:
        raise Problem(409, "Conflict with the sak's status", str(exc)) from None


async def _krev_kommune(rt: Runtime, kommunenummer: str) -> None:
    async with rt.pool.acquire() as conn:
        if not await store.kommune_exists(conn, kommunenummer):
            raise Problem(404, "No such kommune")


# --- caseworkers ------------------------------------------------------------------------


@router.get("/saker", tags=["saksbehandling"], responses=problems(401, 403))
async def list_saker(
    rt: RuntimeDep,
    _: Sakshandsamar,
    status: Status | None = None,
    kommunenummer: Annotated[str | None, Query(pattern=r"^[0-9]{4}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[dict]:
    """Cases by status (and kommune), oldest decision first."""
    async with rt.pool.acquire() as conn:
        return [dict(r) for r in await store.list_saker(conn, status, kommunenummer, limit, offset)]


@router.get("/saker/{sak_id}", tags=["saksbehandling"], responses=problems(401, 403, 404))
async def get_sak(rt: RuntimeDep, _: Sakshandsamar, sak_id: SakIdPath) -> dict:
    """A case with its household, its latest proposal and the caseworkers' log."""
    async with rt.pool.acquire() as conn:
        sak = await store.get_sak(conn, sak_id, for_update=False)
        if sak is None:
            raise Problem(404, "No such sak")
        return {
            **HushaldUt.of(sak).model_dump(mode="json"),
            "avslatt_av": sak.avslatt_av,
            "forslag": await store.siste_forslag(conn, sak_id),
            "logg": await store.logg_for(conn, sak_id),
        }


@router.post("/saker/{sak_id}/trekking", response_model=SakUt, tags=["saksbehandling"], responses=problems(401, 403, 404, 409))
async def trekk(rt: RuntimeDep, who: Sakshandsamar, sak_id: SakIdPath, body: Trekking):
    """Withdraw a case from settlement; places it held are released."""
    return SakUt.of(await _run(handlers.trekk(rt, sak_id, body.arsak, body.grunn, who)))


@router.get("/forslag", tags=["saksbehandling"], responses=problems(401, 403))
async def list_forslag(
    rt: RuntimeDep,
    _: Sakshandsamar,
    status: Literal["open", "stadfesta", "overstyrt", "forelda"] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[dict]:
    """Proposals with their explanations: score terms, the top three alternatives and the
    binding constraints."""
    async with rt.pool.acquire() as conn:
        return await store.list_forslag(conn, status, limit, offset)


@router.post("/forslag/stadfesting", response_model=list[SakUt], tags=["saksbehandling"], responses=problems(401, 403, 404, 409))
async def stadfest(rt: RuntimeDep, who: Sakshandsamar, body: Stadfesting):
    """Confirm proposals: `bosetting.fordelt` is emitted for each. All or nothing: if one
    sak has no open proposal, none is confirmed (409 lists them)."""
    return [SakUt.of(s) for s in await _run(handlers.stadfest(rt, body.sak_ids, who, body.grunn))]


@router.post("/saker/{sak_id}/overstyring", response_model=SakUt, tags=["saksbehandling"], responses=problems(401, 403, 404, 409))
async def overstyr(rt: RuntimeDep, who: Sakshandsamar, sak_id: SakIdPath, body: Overstyring):
    """Allocate to another kommune than proposed; the reason is logged. Hard constraints hold."""
    return SakUt.of(await _run(handlers.overstyr(rt, sak_id, body.kommunenummer, body.grunn, who, klokke.idag())))


@router.get("/saker/{sak_id}/kvifor-ikkje/{kommunenummer}", tags=["saksbehandling"], responses=problems(401, 403, 404, 409))
async def kvifor_ikkje(rt: RuntimeDep, _: Sakshandsamar, sak_id: SakIdPath, kommunenummer: KommunePath) -> dict:
    """Why a kommune was not proposed for this case: a hard constraint, a lower score (and
    the terms that differ most), or places worth more to other households (shadow price)."""
    return await _run(handlers.kvifor_ikkje(rt, sak_id, kommunenummer, klokke.idag()))


@router.post("/fordelingsrundar", tags=["saksbehandling"], responses=problems(401, 403))
async def ny_runde(rt: RuntimeDep, _: Sakshandsamar) -> dict:
    """Run an allocation batch now (the allocator also runs on its own schedule)."""
    return {"foreslatt": await handlers.fordel(rt)}


@router.get("/fordelingsrundar", tags=["saksbehandling"], responses=problems(401, 403))
async def rundar(rt: RuntimeDep, _: Sakshandsamar, limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> list[dict]:
    """Recent allocation batches: size, objective, proven bound and gap, solve time."""
    async with rt.pool.acquire() as conn:
        return await store.rundar(conn, limit)


@router.put("/anmodningar/{ar}", status_code=204, tags=["kommunar"], responses=problems(401, 403, 404))
async def anmodning(rt: RuntimeDep, _: Sakshandsamar, ar: Annotated[int, Path(ge=2000, le=2100)], body: Anmodning):
    """IMDi's yearly request to the kommunar, per group. All kommunar must exist."""
    async with rt.pool.acquire() as conn:
        unknown = [k for k in body.kommunar if not await store.kommune_exists(conn, k)]
    if unknown:
        raise Problem(404, "Unknown kommunenummer", ", ".join(sorted(unknown)[:20]))
    rows = [(knr, k, n) for knr, p in body.kommunar.items() for k, n in p.per_kategori().items()]
    await handlers.set_anmodning(rt, ar, rows)


@router.get("/kpi/rapport", tags=["kpi"], responses=problems(401, 403))
async def kpi_rapport(
    rt: RuntimeDep,
    _: Sakshandsamar,
    manad: Annotated[str, Query(pattern=r"^20[0-9]{2}-(0[1-9]|1[0-2])$", description="YYYY-MM")],
) -> dict:
    """The month's KPIs (IMDi's styringsparametrar, defined in docs/kpi.md) from the KPI
    projection: what `chain report --month` renders."""
    async with rt.pool.acquire() as conn:
        saker = await store.kpi_saker(conn)
        kapasitet = await store.kapasitet_inndata(conn, int(manad[:4]))
    return kpi.rapport(saker, manad, kapasitet)


@router.get("/statistikk", tags=["saksbehandling"], responses=problems(401, 403))
async def statistikk(rt: RuntimeDep, _: Sakshandsamar) -> dict:
    async with rt.pool.acquire() as conn:
        return await store.statistikk(conn)


# --- kommunar ---------------------------------------------------------------------------


@router.get("/kommunar", tags=["kommunar"], responses=problems(401))
async def list_kommunar(rt: RuntimeDep, _: Innlogga) -> list[dict]:
    """Every kommune with its offers, latest report and places per group."""
    async with rt.pool.acquire() as conn:
        return await store.kommunar(conn)


@router.get("/kommunar/{kommunenummer}", tags=["kommunar"], responses=problems(401, 403, 404))
async def get_kommune(rt: RuntimeDep, _: KommuneEllerImdi, kommunenummer: KommunePath) -> dict:
    """A kommune with its requests and decisions per year and its capacity reports."""
    async with rt.pool.acquire() as conn:
        found = await store.kommune(conn, kommunenummer)
    if found is None:
        raise Problem(404, "No such kommune")
    return found


@router.get("/kommunar/{kommunenummer}/saker", response_model=list[HushaldUt], tags=["kommunar"], responses=problems(401, 403))
async def kommunens_saker(rt: RuntimeDep, kommunenummer: Kommune, status: Status | None = None):
    """The households allocated to this kommune (and only those)."""
    async with rt.pool.acquire() as conn:
        return [HushaldUt.of(s) for s in await store.kommunens_saker(conn, kommunenummer, status)]


@router.post("/kommunar/{kommunenummer}/saker/{sak_id}/svar", response_model=SakUt, tags=["kommunar"], responses=problems(401, 403, 404, 409))
async def svar(rt: RuntimeDep, kommunenummer: Kommune, sak_id: SakIdPath, body: Svar):
    """Accept an allocation with a settlement date (søkt ut), or refuse it with a reason."""
    if body.svar == "akseptert":
        return SakUt.of(await _run(handlers.avtal(rt, sak_id, kommunenummer, body.busetjingsdato)))
    return SakUt.of(await _run(handlers.avsla(rt, sak_id, kommunenummer, body.grunn)))


@router.post("/kommunar/{kommunenummer}/saker/{sak_id}/busetjing", response_model=SakUt, tags=["kommunar"], responses=problems(401, 403, 404, 409))
async def busetjing(rt: RuntimeDep, kommunenummer: Kommune, sak_id: SakIdPath, body: Busetjing):
    """Register that the household has moved in (bosatt)."""
    return SakUt.of(await _run(handlers.bosett(rt, sak_id, kommunenummer, body.busetjingsdato)))


@router.put("/kommunar/{kommunenummer}/vedtak/{ar}", status_code=204, tags=["kommunar"], responses=problems(401, 403, 404))
async def vedtak(
    rt: RuntimeDep, _: KommuneEllerImdi, kommunenummer: KommunePath, ar: Annotated[int, Path(ge=2000, le=2100)], body: Plassar
):
    """The kommune's decision (vedtak) for a year: places per group. This year's decision is
    the capacity the allocator uses."""
    await _krev_kommune(rt, kommunenummer)
    await handlers.set_vedtak(rt, ar, kommunenummer, body.per_kategori())


@router.post("/kommunar/{kommunenummer}/kapasitetsrapportar", status_code=201, tags=["kommunar"], responses=problems(401, 403, 404))
async def kapasitetsrapport(rt: RuntimeDep, _: KommuneEllerImdi, kommunenummer: KommunePath, body: Kapasitetsrapport) -> dict:
    """Report capacity (the same as the `kommune.kapasitet_rapportert` event)."""
    await _krev_kommune(rt, kommunenummer)
    data = KapasitetRapportert(
        kommunenummer=kommunenummer,
        dato=body.dato,
        ledige_bustader=body.ledige_bustader,
        tek_imot=body.tek_imot,
        ar=body.ar,
        vedtaksplassar=body.vedtaksplassar.per_kategori() if body.vedtaksplassar else None,
    )
    await handlers.rapporter(rt, data)
    return {"kommunenummer": kommunenummer, "dato": body.dato.isoformat()}


@router.put("/kommunar/{kommunenummer}/tilbod", status_code=204, tags=["kommunar"], responses=problems(401, 403, 404))
async def tilbod(rt: RuntimeDep, _: KommuneEllerImdi, kommunenummer: KommunePath, body: TilbodInn):
    await _krev_kommune(rt, kommunenummer)
    await handlers.set_tilbod(
        rt, Tilbod(kommunenummer, body.vidaregaande, body.sjukehus, body.mindrearig_teneste, frozenset(body.sektorar))
    )
