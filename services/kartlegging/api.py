"""Kartlegging's HTTP API: mottak systems, the vertskommune or the settlement kommune save
and complete mappings here, correct them (a new version each time), and add the county's
career-guidance note; a privately living person maps themself with a token IMDi issues.

Bodies are validated against the versioned schemas (`skjema.py`) here rather than by
FastAPI, so that a 422 names each field as `body.<path>` whichever schema was used, and
never echoes a submitted value.
"""

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from services.kartlegging import handlers, store
from services.kartlegging.domain import PAKREVD, DomainError, FeilSkjema, Manglar, fullstendigheit, manglande
from services.kartlegging.skjema import FORENKLA_V1, ORDINAER_V1, Eldre, Innsending, Karriererettleiing, Korrigering
from shared import tokens
from shared.catalogue import Kartleggingstype
from shared.http import Problem, json_body, nul_i, problems
from shared.service import Runtime, caller, current_runtime

router = APIRouter()
RuntimeDep = Annotated[Runtime, Depends(current_runtime)]
SakIdPath = Annotated[str, Path(pattern=r"^sak-[0-9a-z-]{6,60}$")]
PersonIdPath = Annotated[str, Path(pattern=r"^p-[0-9a-f]{16,64}$", description="Pseudonymous person id")]
JsonBody = Annotated[dict[str, Any], Body(description="A mapping in one of the versioned schemas (`schema`)")]
SCHEMAS = (ORDINAER_V1, FORENKLA_V1)
INNSENDING = TypeAdapter(Innsending)
KORRIGERING = TypeAdapter(Korrigering)
ELDRE = TypeAdapter(Eldre)
KARRIERE = TypeAdapter(Karriererettleiing)
# Bodies are validated here (_valider), not by FastAPI; the document still shows their schemas.
SUBMIT_DOC = json_body(TypeAdapter(Innsending | Eldre))


class Kvittering(BaseModel):
    sak_id: str
    person_id: str
    sak_komplett: bool


class Fullforing(BaseModel):
    """A completed or corrected mapping: its version and how complete it is."""

    sak_id: str
    person_id: str
    versjon: int
    sak_komplett: bool
    fullstendigheit: float = Field(ge=0, le=1)
    manglande_felt: list[str]


class Utkastkvittering(BaseModel):
    sak_id: str
    person_id: str
    fullstendigheit: float = Field(ge=0, le=1)
    manglande_felt: list[str] = Field(description="Critical fields not answered yet")
    manglar_for_fullforing: list[str] = Field(description="Fields the schema requires before the mapping can be completed")


class Versjon(BaseModel):
    versjon: int
    innhald: dict
    fullstendigheit: float | None
    manglande_felt: list[str]
    grunn: str | None
    kjelde: str
    oppretta_at: str


class Kartleggingsstatus(BaseModel):
    sak_id: str
    kartleggingstype: Kartleggingstype
    personar: dict[str, bool] = Field(description="person id -> mapped")
    komplett: bool


def _valider(adapter: TypeAdapter, raw: Any, prefix: str = "body"):
    """Validate; on failure a 422 naming each field (the schema tag left out of the path),
    with pydantic's messages except where they would repeat the input. A string holding a
    NUL, which PostgreSQL cannot store, is refused here: it was a 500 (found by
    tests/test_openapi_fuzz.py)."""
    if nul := nul_i(raw):
        errors = [{"field": ".".join(map(str, [prefix, *p])), "type": "string_nul", "message": "must not contain NUL"} for p in nul]
        raise Problem(422, "Invalid request", f"{len(errors)} field(s) invalid", errors=errors)
    try:
        return adapter.validate_python(raw)
    except ValidationError as exc:
        errors = []
        for e in exc.errors():
            loc = [str(p) for p in e["loc"] if p not in SCHEMAS]
            message = e["msg"]
            if e["type"] in ("union_tag_not_found", "union_tag_invalid"):
                loc.append("schema")
                message = "must be one of: " + ", ".join(SCHEMAS)
            errors.append({"field": ".".join([prefix, *loc]), "type": e["type"], "message": message})
        raise Problem(422, "Invalid request", f"{len(errors)} field(s) invalid", errors=errors) from None


def _manglar(exc: Manglar, prefix: str) -> Problem:
    errors = [{"field": f"{prefix}.{f}", "type": "missing", "message": "required to complete this mapping"} for f in exc.felt]
    return Problem(422, "Mapping incomplete", f"{len(errors)} required field(s) not answered", errors=errors)


def _feil_skjema(exc: FeilSkjema, prefix: str) -> Problem:
    return Problem(
        422, "Invalid request", str(exc), errors=[{"field": f"{prefix}.schema", "type": "schema", "message": str(exc)}]
    )


async def _run(call, prefix: str = "body"):
    """A command, with the domain's refusals as problems."""
    try:
        return await call
    except handlers.SakFinstIkkje:
        raise Problem(404, "No such mapping case or person") from None
    except Manglar as exc:
        raise _manglar(exc, prefix) from None
    except FeilSkjema as exc:
        raise _feil_skjema(exc, prefix) from None
    except DomainError as exc:
        raise Problem(409, "Not possible in the mapping's state", str(exc)) from None


def _fullforing(sak, person_id: str) -> Fullforing:
    score, mangel = fullstendigheit(sak.personar[person_id])
    return Fullforing(
        sak_id=sak.sak_id,
        person_id=person_id,
        versjon=sak.versjon[person_id],
        sak_komplett=sak.komplett,
        fullstendigheit=score,
        manglande_felt=mangel,
    )


Caller = Annotated[str, Depends(caller)]


async def imdi(subject: Caller) -> str:
    if not subject.startswith("imdi:"):
        raise Problem(403, "Only an IMDi caseworker may do this")
    return subject


async def imdi_eller_personen(subject: Caller, person_id: PersonIdPath) -> str:
    if not (subject.startswith("imdi:") or subject == f"person:{person_id}"):
        raise Problem(403, "Only an IMDi caseworker or the person themself may read a mapping")
    return subject


async def kartleggar(subject: Caller) -> str:
    """Who may map: a mottak system or the vertskommune (§ 6), the settlement kommune
    (§ 10), or IMDi (resettlement refugees are mapped abroad by IMDi)."""
    if not subject.startswith(("mottak:", "kommune:", "imdi:")):
        raise Problem(403, "Only a mottak, a kommune or IMDi may submit mappings")
    return subject


async def rettleiar(subject: Caller) -> str:
    """The career-guidance note (§ 11) comes from the county (fylke)."""
    if not subject.startswith(("fylke:", "imdi:")):
        raise Problem(403, "Only a county (fylke) may add the career-guidance note")
    return subject


Kartleggar = Annotated[str, Depends(kartleggar)]


async def personen(subject: Caller, person_id: PersonIdPath) -> str:
    if subject != f"person:{person_id}":
        raise Problem(403, "Only the person themself may self-register")
    return person_id


# --- mottak, vertskommune, settlement kommune -------------------------------------------


@router.post(
    "/kartleggingar/{sak_id}/personar/{person_id}", response_model=Kvittering, tags=["kartlegging"],
    responses=problems(401, 403, 404, 409),
    openapi_extra=SUBMIT_DOC,
)
async def submit(rt: RuntimeDep, _: Kartleggar, sak_id: SakIdPath, person_id: PersonIdPath, body: JsonBody):
    """Submit and complete one person's mapping. With `schema` the schema's required fields
    must be answered; without it (the original, unversioned body) `utdanning` is enough and
    the gaps show in the completeness. Resubmitting identical content is safe; different
    content after completion is a correction (`/korrigering`)."""
    if "schema" in body:
        innhald, pakravde = _valider(INNSENDING, body).innhald(), True
    else:
        eldre = _valider(ELDRE, body)
        innhald, pakravde = eldre.innhald((await _sak(rt, sak_id)).skjema), False
    sak = await _run(handlers.fullfor(rt, sak_id, person_id, innhald, pakravde=pakravde))
    return Kvittering(sak_id=sak_id, person_id=person_id, sak_komplett=sak.komplett)


@router.put(
    "/kartleggingar/{sak_id}/personar/{person_id}/utkast", response_model=Utkastkvittering, tags=["kartlegging"],
    responses=problems(401, 403, 404, 409),
    openapi_extra=json_body(INNSENDING),
)
async def utkast(rt: RuntimeDep, _: Kartleggar, sak_id: SakIdPath, person_id: PersonIdPath, body: JsonBody):
    """Save a draft of one person's mapping (any number of times; no event)."""
    innhald = _valider(INNSENDING, body).innhald()
    await _run(handlers.lagre_utkast(rt, sak_id, person_id, innhald))
    return _utkastkvittering(sak_id, person_id, innhald)


def _utkastkvittering(sak_id: str, person_id: str, innhald: dict) -> Utkastkvittering:
    score, mangel = fullstendigheit(innhald)
    return Utkastkvittering(
        sak_id=sak_id,
        person_id=person_id,
        fullstendigheit=score,
        manglande_felt=mangel,
        manglar_for_fullforing=manglande(innhald, PAKREVD[innhald["schema"]]),
    )


@router.post(
    "/kartleggingar/{sak_id}/personar/{person_id}/fullfor", response_model=Fullforing, tags=["kartlegging"],
    responses=problems(401, 403, 404, 409),
)
async def fullfor(rt: RuntimeDep, _: Kartleggar, sak_id: SakIdPath, person_id: PersonIdPath):
    """Complete one person's mapping from the saved draft: emits `kartlegging.fullfort`.
    Completing a completed mapping again is a no-op."""
    sak = await _run(handlers.fullfor(rt, sak_id, person_id), prefix="utkast")
    return _fullforing(sak, person_id)


@router.post(
    "/kartleggingar/{sak_id}/personar/{person_id}/korrigering", response_model=Fullforing, tags=["kartlegging"],
    responses=problems(401, 403, 404, 409),
    openapi_extra=json_body(KORRIGERING),
)
async def korrigering(rt: RuntimeDep, _: Kartleggar, sak_id: SakIdPath, person_id: PersonIdPath, body: JsonBody):
    """Correct a completed mapping: the whole corrected content and why. A new version
    (`kartlegging.korrigert`); the same content as the current version is a no-op."""
    k = _valider(KORRIGERING, body)
    sak = await _run(handlers.korriger(rt, sak_id, person_id, k.innhald.innhald(), k.grunn), prefix="body.innhald")
    return _fullforing(sak, person_id)


@router.get(
    "/kartleggingar/{sak_id}/personar/{person_id}/versjonar",
    response_model=list[Versjon],
    tags=["kartlegging"],
    responses=problems(401, 403, 404),
)
async def versjonar(
    rt: RuntimeDep, sak_id: SakIdPath, person_id: PersonIdPath, _: Annotated[str, Depends(imdi_eller_personen)]
):
    """Every version of one person's mapping, oldest first (an IMDi caseworker or the person)."""
    async with rt.pool.acquire() as conn:
        if await store.person(conn, sak_id, person_id) is None:
            raise Problem(404, "No such mapping case or person")
        rows = await store.versjonar(conn, sak_id, person_id)
    return [Versjon(**(r | {"oppretta_at": r["oppretta_at"].isoformat()})) for r in rows]


@router.post(
    "/kartleggingar/{sak_id}/personar/{person_id}/karriererettleiing", status_code=201, tags=["kartlegging"],
    responses=problems(401, 403, 404, 409),
    openapi_extra=json_body(KARRIERE),
)
async def karriererettleiing(
    rt: RuntimeDep, _: Annotated[str, Depends(rettleiar)], sak_id: SakIdPath, person_id: PersonIdPath, body: JsonBody
) -> dict:
    """The county's career-guidance note (integreringslova § 11), after the mapping is
    complete. Kept in kartlegging and sent, keyed by pseudonym, to kompetanse only
    (`kartlegging.karriererettleiing`), which serves it to the consumers whose policy has it."""
    note = _valider(KARRIERE, body)
    try:
        dato = date.fromisoformat(note.dato)
    except ValueError:
        raise Problem(422, "Invalid request", errors=[{"field": "body.dato", "type": "date", "message": "not a date"}]) from None
    try:
        await handlers.karriererettleiing(rt, sak_id, person_id, dato, note.fylkesnummer, note.notat)
    except handlers.SakFinstIkkje:
        raise Problem(404, "No such mapping case or person") from None
    except handlers.IkkjeFullfort:
        raise Problem(409, "Career guidance builds on a completed mapping") from None
    return {"sak_id": sak_id, "person_id": person_id, "dato": dato.isoformat()}


# --- self-registration (privately living persons) -----------------------------------------


@router.post(
    "/kartleggingar/{sak_id}/personar/{person_id}/sjolvregistrering/kode", tags=["sjolvregistrering"],
    responses=problems(401, 403, 404, 409),
)
async def sjolvregistreringskode(
    rt: RuntimeDep, sak_id: SakIdPath, person_id: PersonIdPath, _: Annotated[str, Depends(imdi)]
) -> dict:
    """IMDi issues a privately living person the token with which they map themself."""
    sak = await _sak(rt, sak_id)
    if person_id not in sak.personar:
        raise Problem(404, "No such mapping case or person")
    if not sak.privatbuande:
        raise Problem(409, "Self-registration is for persons living privately")
    return {"sak_id": sak_id, "person_id": person_id, "token": tokens.issue(rt.settings.token_secret, f"person:{person_id}")}


async def _sjolv(rt: Runtime, sak_id: str, person_id: str):
    sak = await _sak(rt, sak_id)
    if person_id not in sak.personar:
        raise Problem(404, "No such mapping case or person")
    if not sak.privatbuande:
        raise Problem(403, "Self-registration is for persons living privately")
    return sak


@router.put(
    "/kartleggingar/{sak_id}/personar/{person_id}/sjolvregistrering/utkast",
    response_model=Utkastkvittering,
    tags=["sjolvregistrering"],
    responses=problems(401, 403, 404, 409),
    openapi_extra=json_body(INNSENDING),
)
async def sjolv_utkast(
    rt: RuntimeDep, sak_id: SakIdPath, person_id: Annotated[str, Depends(personen)], body: JsonBody
):
    """A privately living person saves a draft of their own mapping."""
    await _sjolv(rt, sak_id, person_id)
    innhald = _valider(INNSENDING, body).innhald()
    await _run(handlers.lagre_utkast(rt, sak_id, person_id, innhald))
    return _utkastkvittering(sak_id, person_id, innhald)


@router.post(
    "/kartleggingar/{sak_id}/personar/{person_id}/sjolvregistrering", response_model=Fullforing, tags=["sjolvregistrering"],
    responses=problems(401, 403, 404, 409),
    openapi_extra=json_body(INNSENDING),
)
async def sjolvregistrering(
    rt: RuntimeDep, sak_id: SakIdPath, person_id: Annotated[str, Depends(personen)], body: JsonBody
):
    """A privately living person submits and completes their own mapping."""
    await _sjolv(rt, sak_id, person_id)
    innhald = _valider(INNSENDING, body).innhald()
    sak = await _run(handlers.fullfor(rt, sak_id, person_id, innhald, kjelde="sjolvregistrering"))
    return _fullforing(sak, person_id)


# --- status and coverage -------------------------------------------------------------------


async def _sak(rt: Runtime, sak_id: str):
    async with rt.pool.acquire() as conn:
        found = await store.get_sak(conn, sak_id, for_update=False)
    if found is None:
        raise Problem(404, "No such mapping case")
    return found[0]


@router.get("/kartleggingar/{sak_id}", response_model=Kartleggingsstatus, tags=["kartlegging"], responses=problems(401, 403, 404))
async def status(rt: RuntimeDep, _: Kartleggar, sak_id: SakIdPath):
    """Which persons of the case are mapped: for those who map (it names persons, if only by
    pseudonymous id)."""
    sak = await _sak(rt, sak_id)
    return Kartleggingsstatus(
        sak_id=sak_id,
        kartleggingstype=sak.kartleggingstype,
        personar={p: v is not None for p, v in sak.personar.items()},
        komplett=sak.komplett,
    )


@router.get("/dekning", tags=["kartlegging"], responses=problems(401))
async def dekning(rt: RuntimeDep, _: Caller) -> dict:
    """Mapping coverage and completeness, in aggregate: persons to be mapped, mapped,
    drafts in progress, corrected, mean completeness and the most often missing fields."""
    async with rt.pool.acquire() as conn:
        return await store.dekning(conn)
