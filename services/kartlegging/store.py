"""Kartlegging's SQL."""

import json
from datetime import date
from uuid import UUID

import asyncpg

from services.kartlegging.domain import Kartleggingssak, fullstendigheit
from shared.catalogue import Kartleggingstype


async def add_sak(conn: asyncpg.Connection, sak: Kartleggingssak, correlationid: UUID) -> bool:
    inserted = await conn.fetchval(
        "INSERT INTO kartleggingssak (sak_id, kartleggingstype, correlationid, privatbuande) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING RETURNING true",
        sak.sak_id,
        sak.kartleggingstype.value,
        correlationid,
        sak.privatbuande,
    )
    if inserted:
        await conn.executemany(
            "INSERT INTO kartlegging (sak_id, person_id) VALUES ($1, $2)", [(sak.sak_id, p) for p in sak.personar]
        )
    return bool(inserted)


def _json(value: str | None) -> dict | None:
    return json.loads(value) if value else None


async def get_sak(conn: asyncpg.Connection, sak_id: str, *, for_update: bool = True) -> tuple[Kartleggingssak, UUID] | None:
    head = await conn.fetchrow(
        "SELECT kartleggingstype, correlationid, privatbuande FROM kartleggingssak WHERE sak_id = $1"
        + (" FOR UPDATE" if for_update else ""),
        sak_id,
    )
    if head is None:
        return None
    rows = await conn.fetch(
        "SELECT person_id, innhald, utkast, versjon FROM kartlegging WHERE sak_id = $1 ORDER BY person_id", sak_id
    )
    sak = Kartleggingssak(
        sak_id,
        Kartleggingstype(head["kartleggingstype"]),
        {r["person_id"]: _json(r["innhald"]) for r in rows},
        privatbuande=head["privatbuande"],
        utkast={r["person_id"]: _json(r["utkast"]) for r in rows if r["utkast"]},
        versjon={r["person_id"]: r["versjon"] for r in rows if r["versjon"]},
    )
    return sak, head["correlationid"]


async def save_utkast(conn: asyncpg.Connection, sak_id: str, person_id: str, innhald: dict) -> None:
    await conn.execute(
        "UPDATE kartlegging SET utkast = $3, utkast_at = now() WHERE sak_id = $1 AND person_id = $2",
        sak_id,
        person_id,
        json.dumps(innhald),
    )


async def save_versjon(
    conn: asyncpg.Connection, sak: Kartleggingssak, person_id: str, kjelde: str, grunn: str | None = None
) -> None:
    """The person's current mapping, and the same as a new row of its history."""
    innhald, versjon = sak.personar[person_id], sak.versjon[person_id]
    score, mangel = fullstendigheit(innhald)
    await conn.execute(
        "UPDATE kartlegging SET innhald = $3, versjon = $4, fullstendigheit = $5, manglande_felt = $6,"
        " utkast = NULL, utkast_at = NULL, fullfort_at = coalesce(fullfort_at, now())"
        " WHERE sak_id = $1 AND person_id = $2",
        sak.sak_id,
        person_id,
        json.dumps(innhald),
        versjon,
        score,
        mangel,
    )
    await conn.execute(
        "INSERT INTO kartleggingsversjon (sak_id, person_id, versjon, innhald, fullstendigheit, manglande_felt, grunn, kjelde)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        sak.sak_id,
        person_id,
        versjon,
        json.dumps(innhald),
        score,
        mangel,
        grunn,
        kjelde,
    )


async def versjonar(conn: asyncpg.Connection, sak_id: str, person_id: str) -> list[dict]:
    rows = await conn.fetch(
        "SELECT versjon, innhald, fullstendigheit, manglande_felt, grunn, kjelde, oppretta_at FROM kartleggingsversjon"
        " WHERE sak_id = $1 AND person_id = $2 ORDER BY versjon",
        sak_id,
        person_id,
    )
    return [dict(r) | {"innhald": json.loads(r["innhald"])} for r in rows]


async def person(conn: asyncpg.Connection, sak_id: str, person_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT innhald, utkast, versjon, fullstendigheit, manglande_felt FROM kartlegging WHERE sak_id = $1 AND person_id = $2",
        sak_id,
        person_id,
    )


async def save_karriererettleiing(
    conn: asyncpg.Connection, sak_id: str, person_id: str, dato: date, fylkesnummer: str, notat: str
) -> None:
    await conn.execute(
        "INSERT INTO karriererettleiing (sak_id, person_id, dato, fylkesnummer, notat) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (sak_id, person_id, dato) DO UPDATE SET fylkesnummer = excluded.fylkesnummer, notat = excluded.notat",
        sak_id,
        person_id,
        dato,
        fylkesnummer,
        notat,
    )


async def dekning(conn: asyncpg.Connection) -> dict:
    """Coverage and completeness, in aggregate only."""
    row = await conn.fetchrow(
        "SELECT count(*) AS personar, count(innhald) AS kartlagde, count(utkast) AS utkast,"
        " avg(fullstendigheit) AS snitt, count(*) FILTER (WHERE fullstendigheit >= 1) AS fullstendige,"
        " count(*) FILTER (WHERE versjon > 1) AS korrigerte"
        " FROM kartlegging"
    )
    per_type = await conn.fetch(
        "SELECT s.kartleggingstype, count(*) AS personar, count(k.innhald) AS kartlagde, avg(k.fullstendigheit) AS snitt"
        " FROM kartlegging k JOIN kartleggingssak s USING (sak_id) GROUP BY s.kartleggingstype ORDER BY 1"
    )
    manglande = await conn.fetch(
        "SELECT felt, count(*) AS n FROM kartlegging, unnest(manglande_felt) AS felt"
        " WHERE innhald IS NOT NULL GROUP BY felt ORDER BY n DESC, felt"
    )

    def snitt(value) -> float | None:
        return None if value is None else round(float(value), 4)

    return {
        "personar": row["personar"],
        "kartlagde": row["kartlagde"],
        "utkast": row["utkast"],
        "korrigerte": row["korrigerte"],
        "fullstendigheit": {
            "snitt": snitt(row["snitt"]),
            "fullstendige": row["fullstendige"],
            "manglande_felt": {r["felt"]: r["n"] for r in manglande},
        },
        "per_kartleggingstype": {
            r["kartleggingstype"]: {"personar": r["personar"], "kartlagde": r["kartlagde"], "snitt_fullstendigheit": snitt(r["snitt"])}
            for r in per_type
        },
    }
