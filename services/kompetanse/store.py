"""Kompetanse's SQL: profiles and the access log."""

import json
from uuid import UUID

import asyncpg

from services.kompetanse.domain import Profil


async def get_profil(conn: asyncpg.Connection, person_id: str, *, for_update: bool = True) -> Profil | None:
    row = await conn.fetchrow(
        "SELECT person_id, kartleggingstype, utdanning, arbeid, sprak, kommunenummer, bosatt FROM profil"
        " WHERE person_id = $1" + (" FOR UPDATE" if for_update else ""),
        person_id,
    )
    if row is None:
        return None
    return Profil(
        person_id=row["person_id"],
        kartleggingstype=row["kartleggingstype"],
        utdanning=json.loads(row["utdanning"]) if row["utdanning"] else None,
        arbeid=json.loads(row["arbeid"]),
        sprak=json.loads(row["sprak"]),
        kommunenummer=row["kommunenummer"],
        bosatt=row["bosatt"],
    )


async def lock_or_new(conn: asyncpg.Connection, person_id: str) -> Profil:
    await conn.execute("INSERT INTO profil (person_id) VALUES ($1) ON CONFLICT DO NOTHING", person_id)
    return await get_profil(conn, person_id)


async def save_profil(conn: asyncpg.Connection, p: Profil) -> None:
    await conn.execute(
        "UPDATE profil SET kartleggingstype = $2, utdanning = $3, arbeid = $4, sprak = $5, kommunenummer = $6,"
        " bosatt = $7, endra_at = now() WHERE person_id = $1",
        p.person_id,
        p.kartleggingstype,
        json.dumps(p.utdanning) if p.utdanning is not None else None,
        json.dumps(p.arbeid),
        json.dumps(p.sprak),
        p.kommunenummer,
        p.bosatt,
    )


async def log_access(
    conn: asyncpg.Connection, konsument: str, person_id: str, felt: list[str], formal: str, request_id: UUID, utfall: str
) -> None:
    await conn.execute(
        "INSERT INTO tilgangslogg (konsument, person_id, felt, formal, request_id, utfall) VALUES ($1, $2, $3, $4, $5, $6)",
        konsument,
        person_id,
        felt,
        formal,
        request_id,
        utfall,
    )


async def count_profiles(conn: asyncpg.Connection) -> dict:
    row = await conn.fetchrow(
        "SELECT count(*) AS personar, count(utdanning) AS med_kompetanse, count(*) FILTER (WHERE bosatt) AS bosatte FROM profil"
    )
    return dict(row)
