"""Kompetanse's HTTP API: individual competence data for authorised consumers, audited.

For now one bearer token from configuration (CHAIN_KOMPETANSE_TOKEN) stands for the
consumer; Maskinporten JWTs and per-consumer field policies replace it.
"""

import secrets
from typing import Annotated
from uuid import uuid4

from fastapi import APIRouter, Depends, Header, Path, Query

from services.kompetanse import handlers, store
from shared.http import Problem
from shared.service import Runtime, current_runtime

router = APIRouter()
RuntimeDep = Annotated[Runtime, Depends(current_runtime)]
PersonIdPath = Annotated[str, Path(pattern=r"^p-[0-9a-f]{16,64}$", description="Pseudonymous person id")]


def consumer(rt: RuntimeDep, authorization: Annotated[str | None, Header()] = None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), rt.settings.kompetanse_token.encode()):
        raise Problem(401, "Missing or invalid bearer token")
    return "dev"


@router.get("/personar/{person_id}/kompetanse", tags=["kompetanse"])
async def kompetanse(
    rt: RuntimeDep,
    person_id: PersonIdPath,
    konsument: Annotated[str, Depends(consumer)],
    formal: Annotated[str, Query(min_length=3, max_length=100, description="Purpose of the access (audited)")],
) -> dict:
    profil = await handlers.les_profil(rt, konsument, person_id, formal, uuid4())
    if profil is None:
        raise Problem(404, "No competence data for this person")
    return profil.vis()


@router.get("/statistikk", tags=["kompetanse"])
async def statistikk(rt: RuntimeDep, _: Annotated[str, Depends(consumer)]) -> dict:
    async with rt.pool.acquire() as conn:
        return await store.count_profiles(conn)
