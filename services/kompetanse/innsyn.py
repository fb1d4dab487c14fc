"""The person's right of access (innsyn): who read my competence data, when, for what
purpose and which fields. Only the person themself, with a token IMDi issues for
`person:<person_id>` (`chain token person:<person_id>`)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from services.kompetanse import handlers, store
from shared.http import Problem, problems
from shared.service import Runtime, caller, current_runtime

router = APIRouter()
RuntimeDep = Annotated[Runtime, Depends(current_runtime)]
PersonIdPath = Annotated[str, Path(pattern=r"^p-[0-9a-f]{16,64}$", description="Pseudonymous person id")]
GRENSE = 500


class Tilgang(BaseModel):
    tid: datetime
    konsument_org: str
    konsument: str | None = Field(description="The consumer's name, from the policy file")
    formal: str
    felt: list[str]
    utfall: str


class Innsyn(BaseModel):
    person_id: str
    tilgangar: list[Tilgang]
    avkorta: bool


async def personen(person_id: PersonIdPath, subject: Annotated[str, Depends(caller)]) -> str:
    if subject != f"person:{person_id}":
        raise Problem(403, "Only the person themself may see who read their data")
    return person_id


@router.get("/innsyn/{person_id}", response_model=Innsyn, tags=["innsyn"], responses=problems(401, 403))
async def innsyn(rt: RuntimeDep, person_id: Annotated[str, Depends(personen)]) -> Innsyn:
    """Every recorded access to this person's competence data, newest first (at most 500)."""
    async with rt.pool.acquire() as conn:
        rows = await store.tilgangar(conn, person_id, GRENSE + 1)
    namn = {org: k.namn for org, k in handlers.policyar().konsument.items()}
    tilgangar = [Tilgang(**r, konsument=namn.get(r["konsument_org"])) for r in rows[:GRENSE]]
    return Innsyn(person_id=person_id, tilgangar=tilgangar, avkorta=len(rows) > GRENSE)
