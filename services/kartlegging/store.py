"""Kartlegging's SQL."""

import json
from uuid import UUID

import asyncpg

from services.kartlegging.domain import Kartleggingssak
from shared.catalogue import Kartleggingstype


async def add_sak(conn: asyncpg.Connection, sak: Kartleggingssak, correlationid: UUID) -> bool:
    inserted = await conn.fetchval(
        "INSERT INTO kartleggingssak (sak_id, kartleggingstype, correlationid) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING RETURNING true",
        sak.sak_id,
        sak.kartleggingstype.value,
        correlationid,
    )
    if inserted:
        await conn.executemany(
            "INSERT INTO kartlegging (sak_id, person_id) VALUES ($1, $2)", [(sak.sak_id, p) for p in sak.personar]
        )
    return bool(inserted)


async def get_sak(conn: asyncpg.Connection, sak_id: str, *, for_update: bool = True) -> tuple[Kartleggingssak, UUID] | None:
    head = await conn.fetchrow(
        "SELECT kartleggingstype, correlationid FROM kartleggingssak WHERE sak_id = $1" + (" FOR UPDATE" if for_update else ""),
        sak_id,
    )
    if head is None:
        return None
    rows = await conn.fetch("SELECT person_id, innhald FROM kartlegging WHERE sak_id = $1 ORDER BY person_id", sak_id)
    personar = {r["person_id"]: json.loads(r["innhald"]) if r["innhald"] else None for r in rows}
    return Kartleggingssak(sak_id, Kartleggingstype(head["kartleggingstype"]), personar), head["correlationid"]


async def save_person(conn: asyncpg.Connection, sak_id: str, person_id: str, innhald: dict) -> None:
    await conn.execute(
        "UPDATE kartlegging SET innhald = $3, fullfort_at = now() WHERE sak_id = $1 AND person_id = $2",
        sak_id,
        person_id,
        json.dumps(innhald),
    )


async def dekning(conn: asyncpg.Connection) -> dict:
    row = await conn.fetchrow(
        "SELECT count(*) AS personar, count(innhald) AS kartlagde FROM kartlegging"
    )
    return {"personar": row["personar"], "kartlagde": row["kartlagde"]}
