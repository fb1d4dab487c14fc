"""Kompetanse's HTTP API: individual competence data for authorised consumers, audited.

Consumers authenticate with Maskinporten-style JWTs (shared/maskinporten.py) and read
under their policy (policy.toml): 401 for a token that is not accepted, 403 with the
reason for what the policy refuses, 404 alike for an unknown, unmapped or protected person.
IMDi registers each person's fødselsnummer (with its signed caseworker token); consumers
may look a person up by it, in a POST body so it never lands in a URL or an access log.
"""

from functools import lru_cache
from typing import Annotated
from uuid import uuid4

from fastapi import APIRouter, Body, Depends, Header, Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.kompetanse import handlers, identitet, statistikk, store
from services.kompetanse.policy import Avslag, Tilgang
from shared.config import settings
from shared.http import Problem, problems
from shared.log import get_logger
from shared.maskinporten import Klient, TokenAvvist, Verifikator
from shared.service import Runtime, caller, current_runtime

log = get_logger()
router = APIRouter()
RuntimeDep = Annotated[Runtime, Depends(current_runtime)]
PersonIdPath = Annotated[str, Path(pattern=r"^p-[0-9a-f]{16,64}$", description="Pseudonymous person id")]
Formal = Annotated[str, Query(pattern=r"^[a-z_]{3,40}$", description="Purpose of the access, one of the policy's (audited)")]


def _fnr(v: str) -> str:
    if not identitet.gyldig(v):
        raise ValueError("not a valid fødselsnummer or D-number")  # never echo the value
    return v


Fodselsnummer = Annotated[str, Field(min_length=11, max_length=11), AfterValidator(_fnr)]


@lru_cache
def verifikator() -> Verifikator:
    cfg = settings()
    return Verifikator(cfg.maskinporten_utferdarar, cfg.kompetanse_audience)


async def klient(authorization: Annotated[str | None, Header(description="Bearer <Maskinporten JWT>")] = None) -> Klient:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Problem(401, "Missing bearer token")
    try:
        return await verifikator().verifiser(token.strip())
    except TokenAvvist as avvist:
        log.warning("kompetanse_token_refused", reason=avvist.grunn)
        raise Problem(401, "Token not accepted", avvist.grunn) from None


def _avslag(k: Klient, avslag: Avslag) -> Problem:
    log.warning("kompetanse_refused", consumer_org=k.org, client=k.klient_id, reason=avslag.grunn)
    return Problem(403, "Forbidden", avslag.grunn)


async def tilgang(k: Annotated[Klient, Depends(klient)]) -> Tilgang:
    try:
        return handlers.policyar().tilgang(k)
    except Avslag as avslag:
        raise _avslag(k, avslag) from None


TilgangDep = Annotated[Tilgang, Depends(tilgang)]


async def _les(rt: Runtime, t: Tilgang, person_id: str | None, formal: str) -> dict:
    try:
        profil = await handlers.les_profil(rt, t, person_id, formal, uuid4())
    except Avslag as avslag:
        raise _avslag(t.klient, avslag) from None
    if profil is None:
        raise Problem(404, "No competence data for this person")
    return profil


@router.get("/personar/{person_id}/kompetanse", tags=["kompetanse"], responses=problems(401, 403, 404))
async def kompetanse(rt: RuntimeDep, person_id: PersonIdPath, t: TilgangDep, formal: Formal) -> dict:
    """One person's competence data: the fields the consumer's policy grants, nothing more."""
    return await _les(rt, t, person_id, formal)


class Oppslag(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fodselsnummer: Fodselsnummer
    formal: str = Field(pattern=r"^[a-z_]{3,40}$", description="Purpose of the access, one of the policy's (audited)")


@router.post("/personar/oppslag", tags=["kompetanse"], responses=problems(401, 403, 404))
async def oppslag(rt: RuntimeDep, t: TilgangDep, body: Oppslag) -> dict:
    """Look a person up by fødselsnummer (in the body, never in the URL): the same answer as
    the read by person id, which it returns too."""
    return await _les(rt, t, await handlers.finn_person(rt, body.fodselsnummer), body.formal)


class Identitet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fodselsnummer: Fodselsnummer
    skjerma: bool = Field(default=False, strict=True, description="Protected identity: never served to anyone")


@router.put("/identitetar/{person_id}", status_code=204, tags=["identitet"], responses=problems(401, 403, 409))
async def registrer(rt: RuntimeDep, person_id: PersonIdPath, subject: Annotated[str, Depends(caller)], body: Annotated[Identitet, Body()]) -> None:
    """IMDi links a pseudonymous person id to its fødselsnummer (stored encrypted)."""
    if not subject.startswith("imdi:"):
        raise Problem(403, "Only IMDi registers identities")
    try:
        await handlers.registrer_identitet(rt, person_id, body.fodselsnummer, body.skjerma)
    except handlers.FnrIBruk:
        raise Problem(409, "This fødselsnummer is linked to another person id") from None


@router.get("/statistikk", tags=["statistikk"], responses=problems(401, 403))
async def aggregat(rt: RuntimeDep, k: Annotated[Klient, Depends(klient)]) -> dict:
    """Anonymised competence statistics by county, category and month; cells of fewer than
    5 persons are suppressed (see `statistikk.py`). Open to every registered consumer."""
    try:
        handlers.policyar().sjekk_statistikk(k)
    except Avslag as avslag:
        raise _avslag(k, avslag) from None
    async with rt.pool.acquire() as conn:
        rader = await store.statistikk_rader(conn)
    tabell = statistikk.tabell(rader)
    return {"tabell": tabell} | statistikk.oppsummering(tabell)
