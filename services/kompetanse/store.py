"""Kompetanse's SQL: profiles and the hash-chained audit log of accesses."""

import json
from uuid import UUID

import asyncpg

from services.kompetanse import revisjon
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


REVISJON_KOLONNAR = (*revisjon.FELT, "hash")


async def log_access(
    conn: asyncpg.Connection,
    konsument: str,
    person_id: str,
    felt: list[str],
    formal: str,
    request_id: UUID,
    utfall: str,
    *,
    konsument_org: str | None = None,
    klient: str | None = None,
) -> int:
    """Append one access to the hash-chained audit log; its seq. Call it inside the reading
    transaction: the chain head stays locked until that commits, so appends are serialised
    (no fork, no hole in seq) and a read that rolls back leaves no entry."""
    hode = await conn.fetchrow("SELECT seq, hash FROM revisjonslogg_hode WHERE id = 1 FOR UPDATE")
    tid = await conn.fetchval("SELECT clock_timestamp()")  # after the lock: tid follows seq
    row = revisjon.chained(
        {
            "tid": tid,
            "konsument_org": konsument_org or konsument,
            "klient": klient or konsument,
            "person_id": person_id,
            "felt": list(felt),
            "formal": formal,
            "request_id": request_id,
            "utfall": utfall,
        },
        hode["seq"],
        hode["hash"],
    )
    await conn.execute(
        "WITH ny AS (INSERT INTO revisjonslogg (" + ", ".join(REVISJON_KOLONNAR) + ")"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING seq, hash)"
        " UPDATE revisjonslogg_hode h SET seq = ny.seq, hash = ny.hash FROM ny WHERE h.id = 1",
        *(row[k] for k in REVISJON_KOLONNAR),
    )
    return row["seq"]


async def revisjon_hode(conn: asyncpg.Connection) -> tuple[int, str]:
    row = await conn.fetchrow("SELECT seq, hash FROM revisjonslogg_hode WHERE id = 1")
    return row["seq"], row["hash"]


async def revisjon_rader(conn: asyncpg.Connection, etter: int, grense: int = 5000) -> list[asyncpg.Record]:
    """A batch of the audit log in seq order, after seq `etter` (for verification)."""
    return await conn.fetch(
        "SELECT " + ", ".join(REVISJON_KOLONNAR) + " FROM revisjonslogg WHERE seq > $1 ORDER BY seq LIMIT $2", etter, grense
    )


async def tilgangar(conn: asyncpg.Connection, person_id: str, grense: int = 500) -> list[dict]:
    """The accesses to one person's data, newest first (the right of access): who (the
    consumer organisation), when, for what purpose, which fields, and the outcome."""
    rows = await conn.fetch(
        "SELECT tid, konsument_org, formal, felt, utfall FROM revisjonslogg WHERE person_id = $1"
        " ORDER BY seq DESC LIMIT $2",
        person_id,
        grense,
    )
    return [dict(r) for r in rows]


async def count_profiles(conn: asyncpg.Connection) -> dict:
    row = await conn.fetchrow(
        "SELECT count(*) AS personar, count(utdanning) AS med_kompetanse, count(*) FILTER (WHERE bosatt) AS bosatte FROM profil"
    )
    return dict(row)
