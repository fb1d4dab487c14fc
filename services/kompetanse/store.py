"""Kompetanse's SQL: profiles and the hash-chained audit log of accesses."""

import json
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import asyncpg

from services.kompetanse import revisjon
from services.kompetanse.domain import Profil


JSON_KOLONNAR = ("utdanning", "arbeid", "sprak", "saerlege_behov", "karriererettleiing")
PROFIL_KOLONNAR = (
    "person_id", "sak_id", "kategori", "skjerma", "kartleggingstype", "utdanning", "arbeid", "sprak",
    "saerlege_behov", "digitale_ferdigheiter", "forerkort", "karriererettleiing", "kommunenummer", "bosatt", "kartlagt_at",
)  # fmt: skip


def _profil(row: asyncpg.Record) -> Profil:
    return Profil(**{k: json.loads(row[k]) if k in JSON_KOLONNAR and row[k] is not None else row[k] for k in PROFIL_KOLONNAR})


async def get_profil(conn: asyncpg.Connection, person_id: str, *, for_update: bool = True) -> Profil | None:
    row = await conn.fetchrow(
        f"SELECT {', '.join(PROFIL_KOLONNAR)} FROM profil WHERE person_id = $1" + (" FOR UPDATE" if for_update else ""),
        person_id,
    )
    return _profil(row) if row else None


async def lock_or_new(conn: asyncpg.Connection, person_id: str) -> Profil:
    await conn.execute("INSERT INTO profil (person_id) VALUES ($1) ON CONFLICT DO NOTHING", person_id)
    return await get_profil(conn, person_id)


async def busett_kommune(conn: asyncpg.Connection, sak_id: str) -> str | None:
    """Where the case's household was settled, if it was (as far as kompetanse knows)."""
    return await conn.fetchval(
        "SELECT kommunenummer FROM profil WHERE sak_id = $1 AND bosatt AND NOT skjerma ORDER BY person_id LIMIT 1", sak_id
    )


async def synlege_i_sak(conn: asyncpg.Connection, sak_id: str) -> list[str]:
    """The case's persons whose identity is not protected."""
    return [r["person_id"] for r in await conn.fetch("SELECT person_id FROM profil WHERE sak_id = $1 AND NOT skjerma", sak_id)]


async def lock_sak(conn: asyncpg.Connection, sak_id: str) -> list[Profil]:
    """The profiles of one case's persons, locked (in person id order: no deadlock)."""
    rows = await conn.fetch(
        f"SELECT {', '.join(PROFIL_KOLONNAR)} FROM profil WHERE sak_id = $1 ORDER BY person_id FOR UPDATE", sak_id
    )
    return [_profil(r) for r in rows]


async def save_profil(conn: asyncpg.Connection, p: Profil) -> None:
    verdiar = [json.dumps(getattr(p, k)) if k in JSON_KOLONNAR and getattr(p, k) is not None else getattr(p, k) for k in PROFIL_KOLONNAR]
    sett = ", ".join(f"{k} = ${i}" for i, k in enumerate(PROFIL_KOLONNAR[1:], start=2))
    await conn.execute(f"UPDATE profil SET {sett}, endra_at = now() WHERE person_id = $1", *verdiar)


async def registrer_identitet(conn: asyncpg.Connection, person_id: str, oppslag: bytes, kryptert: bytes, versjon: int) -> bool:
    """Link a fødselsnummer (its keyed hash and ciphertext) to a person id. False when the
    number is already linked to another person id; registering the same link again is a no-op."""
    eigar = await conn.fetchval("SELECT person_id FROM identitet WHERE oppslag = $1", oppslag)
    if eigar is not None:
        return eigar == person_id
    await conn.execute(
        "INSERT INTO identitet (person_id, oppslag, kryptert, nokkel_versjon) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (person_id) DO UPDATE SET oppslag = excluded.oppslag, kryptert = excluded.kryptert,"
        " nokkel_versjon = excluded.nokkel_versjon",
        person_id,
        oppslag,
        kryptert,
        versjon,
    )
    return True


async def person_for_oppslag(conn: asyncpg.Connection, oppslag: bytes) -> str | None:
    return await conn.fetchval("SELECT person_id FROM identitet WHERE oppslag = $1", oppslag)


async def kryptert_fnr(conn: asyncpg.Connection, person_id: str) -> bytes | None:
    return await conn.fetchval("SELECT kryptert FROM identitet WHERE person_id = $1", person_id)


async def skjerm(conn: asyncpg.Connection, person_id: str) -> None:
    await conn.execute(
        "INSERT INTO profil (person_id, skjerma) VALUES ($1, true) ON CONFLICT (person_id) DO UPDATE SET skjerma = true",
        person_id,
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
    """Append one access to the hash-chained audit log; its seq (see `log_accesses`)."""
    entry = {
        "konsument_org": konsument_org or konsument,
        "klient": klient or konsument,
        "person_id": person_id,
        "felt": list(felt),
        "formal": formal,
        "request_id": request_id,
        "utfall": utfall,
    }
    return (await log_accesses(conn, [entry]))[0]


async def log_accesses(conn: asyncpg.Connection, entries: list[Mapping[str, Any]]) -> list[int]:
    """Append accesses, in order, to the hash-chained audit log; their seqs. Call it inside
    a transaction: the chain head stays locked until that commits, so appends are
    serialised (no fork, no hole in seq) and a rollback leaves no entry."""
    hode = await conn.fetchrow("SELECT seq, hash FROM revisjonslogg_hode WHERE id = 1 FOR UPDATE")
    tid = await conn.fetchval("SELECT clock_timestamp()")  # after the lock: tid follows seq
    seq, forrige, rows = hode["seq"], hode["hash"], []
    for entry in entries:
        row = revisjon.chained({"tid": tid, **entry}, seq, forrige)
        rows.append(tuple(row[k] for k in REVISJON_KOLONNAR))
        seq, forrige = row["seq"], row["hash"]
    await conn.executemany(
        "INSERT INTO revisjonslogg (" + ", ".join(REVISJON_KOLONNAR) + ")"
        " VALUES (" + ", ".join(f"${i + 1}" for i in range(len(REVISJON_KOLONNAR))) + ")",
        rows,
    )
    await conn.execute("UPDATE revisjonslogg_hode SET seq = $1, hash = $2 WHERE id = 1", seq, forrige)
    return [r[REVISJON_KOLONNAR.index("seq")] for r in rows]


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


async def statistikk_rader(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Mapped, unprotected persons grouped by county, category, month of mapping and
    education level, with how many have work experience and Norwegian at B1 or above."""
    return await conn.fetch(
        """
        SELECT coalesce(left(kommunenummer, 2), 'ukjend') AS fylke,
               coalesce(kategori, 'ukjend') AS kategori,
               to_char(kartlagt_at AT TIME ZONE 'Europe/Oslo', 'YYYY-MM') AS manad,
               utdanning->>'niva' AS niva,
               count(*) AS personar,
               count(*) FILTER (WHERE jsonb_array_length(arbeid) > 0) AS med_arbeid,
               count(*) FILTER (WHERE EXISTS (
                   SELECT 1 FROM jsonb_array_elements(sprak) s
                   WHERE s->>'sprak' = 'norsk' AND s->>'niva' IN ('B1', 'B2', 'C1', 'C2', 'morsmal'))) AS norsk
        FROM profil
        WHERE utdanning IS NOT NULL AND NOT skjerma AND kartlagt_at IS NOT NULL
        GROUP BY 1, 2, 3, 4
        """
    )
