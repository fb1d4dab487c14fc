"""Bosetting's SQL: saker, kommunar and their capacity."""

import csv
import json
from importlib import resources

import asyncpg

from services.bosetting.domain import Kapasitet, Person, Sak, Status
from shared.catalogue import Kategori

_SAK_COLUMNS = (
    "sak_id, reg_nummer, kategori, sakstype, vedtaksdato, personar, status, kommunenummer,"
    " busetjingsdato, avslatt_av, mottak_id, bustadkommune, correlationid"
)


def _sak(row: asyncpg.Record) -> Sak:
    return Sak(
        sak_id=row["sak_id"],
        reg_nummer=row["reg_nummer"],
        kategori=Kategori(row["kategori"]),
        sakstype=row["sakstype"],
        vedtaksdato=row["vedtaksdato"],
        personar=[Person(**p) for p in json.loads(row["personar"])],
        status=Status(row["status"]),
        kommunenummer=row["kommunenummer"],
        busetjingsdato=row["busetjingsdato"],
        avslatt_av=list(row["avslatt_av"]),
        mottak_id=row["mottak_id"],
        bustadkommune=row["bustadkommune"],
        correlationid=row["correlationid"],
    )


async def add_sak(conn: asyncpg.Connection, sak: Sak) -> bool:
    """Insert a new sak; False if the sak id exists already."""
    inserted = await conn.fetchval(
        f"INSERT INTO sak ({_SAK_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)"
        " ON CONFLICT (sak_id) DO NOTHING RETURNING true",
        sak.sak_id,
        sak.reg_nummer,
        sak.kategori.value,
        sak.sakstype,
        sak.vedtaksdato,
        json.dumps([p.__dict__ for p in sak.personar]),
        sak.status.value,
        sak.kommunenummer,
        sak.busetjingsdato,
        sak.avslatt_av,
        sak.mottak_id,
        sak.bustadkommune,
        sak.correlationid,
    )
    return bool(inserted)


async def get_sak(conn: asyncpg.Connection, sak_id: str, *, for_update: bool = True) -> Sak | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_SAK_COLUMNS} FROM sak WHERE sak_id = $1{lock}", sak_id)
    return _sak(row) if row else None


async def save_sak(conn: asyncpg.Connection, sak: Sak) -> None:
    await conn.execute(
        "UPDATE sak SET status = $2, kommunenummer = $3, busetjingsdato = $4, avslatt_av = $5, mottak_id = $6,"
        " endra_at = now(), bosatt_at = CASE WHEN $2 = 'bosatt' THEN coalesce(bosatt_at, now()) END"
        " WHERE sak_id = $1",
        sak.sak_id,
        sak.status.value,
        sak.kommunenummer,
        sak.busetjingsdato,
        sak.avslatt_av,
        sak.mottak_id,
    )


async def fordelingsklare_saker(conn: asyncpg.Connection, limit: int) -> list[Sak]:
    """Oldest decisions first; rows another allocator holds are skipped, not waited for."""
    rows = await conn.fetch(
        f"SELECT {_SAK_COLUMNS} FROM sak WHERE status = 'fordelingsklar'"
        " ORDER BY vedtaksdato, sak_id LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [_sak(r) for r in rows]


async def all_kapasitet(conn: asyncpg.Connection) -> list[Kapasitet]:
    rows = await conn.fetch("SELECT kommunenummer, kategori, plassar, brukt FROM kapasitet ORDER BY 1, 2 FOR UPDATE")
    return [Kapasitet(r["kommunenummer"], Kategori(r["kategori"]), r["plassar"], r["brukt"]) for r in rows]


async def save_brukt(conn: asyncpg.Connection, kapasitet: list[Kapasitet]) -> None:
    await conn.executemany(
        "UPDATE kapasitet SET brukt = $3 WHERE kommunenummer = $1 AND kategori = $2",
        [(k.kommunenummer, k.kategori.value, k.brukt) for k in kapasitet],
    )


async def frigje_plassar(conn: asyncpg.Connection, kommunenummer: str, kategori: Kategori, personar: int) -> None:
    await conn.execute(
        "UPDATE kapasitet SET brukt = greatest(brukt - $3, 0) WHERE kommunenummer = $1 AND kategori = $2",
        kommunenummer,
        kategori.value,
        personar,
    )


async def set_plassar(conn: asyncpg.Connection, kommunenummer: str, plassar: dict[Kategori, int]) -> None:
    await conn.executemany(
        "INSERT INTO kapasitet (kommunenummer, kategori, plassar) VALUES ($1, $2, $3)"
        " ON CONFLICT (kommunenummer, kategori) DO UPDATE SET plassar = excluded.plassar",
        [(kommunenummer, k.value, n) for k, n in plassar.items()],
    )


async def kommune_exists(conn: asyncpg.Connection, kommunenummer: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM kommune WHERE kommunenummer = $1", kommunenummer))


async def load_kommunar(conn: asyncpg.Connection, csv_text: str | None = None) -> int:
    """Load kommune reference data (semicolon-separated, Statistics Norway's numbering)."""
    text = csv_text or resources.files("services.bosetting").joinpath("kommunar.csv").read_text(encoding="utf-8")
    rows = [
        (r["kommunenummer"], r["namn"], r["fylke"], int(r["innbyggjarar"]))
        for r in csv.DictReader(text.splitlines(), delimiter=";")
    ]
    await conn.executemany(
        "INSERT INTO kommune VALUES ($1, $2, $3, $4) ON CONFLICT (kommunenummer) DO UPDATE"
        " SET namn = excluded.namn, fylke = excluded.fylke, innbyggjarar = excluded.innbyggjarar",
        rows,
    )
    return len(rows)


async def kommunar(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT k.kommunenummer, k.namn, k.fylke, coalesce(jsonb_object_agg(c.kategori,"
        " jsonb_build_object('plassar', c.plassar, 'brukt', c.brukt)) FILTER (WHERE c.kategori IS NOT NULL), '{}') AS kapasitet"
        " FROM kommune k LEFT JOIN kapasitet c USING (kommunenummer) GROUP BY 1, 2, 3 ORDER BY 1"
    )


async def list_saker(conn: asyncpg.Connection, status: Status | None, kommunenummer: str | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT sak_id, reg_nummer, kategori, status, kommunenummer, busetjingsdato, vedtaksdato,"
        " jsonb_array_length(personar) AS tal_personar FROM sak"
        " WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kommunenummer = $2)"
        " ORDER BY vedtaksdato, sak_id LIMIT $3",
        status.value if status else None,
        kommunenummer,
        limit,
    )


async def statistikk(conn: asyncpg.Connection) -> dict:
    per_status = {
        r["status"]: {"saker": r["saker"], "personar": r["personar"]}
        for r in await conn.fetch(
            "SELECT status, count(*) AS saker, sum(jsonb_array_length(personar))::int AS personar FROM sak GROUP BY status"
        )
    }
    tid = await conn.fetchrow(
        "SELECT avg(extract(epoch FROM bosatt_at - oppretta_at)) AS snitt,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM bosatt_at - oppretta_at)) AS median,"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM bosatt_at - oppretta_at)) AS p95,"
        " avg(busetjingsdato - vedtaksdato) AS dagar_snitt"
        " FROM sak WHERE status = 'bosatt'"
    )
    return {
        "per_status": per_status,
        "sekund_vedtak_til_bosatt": {"snitt": tid["snitt"], "median": tid["median"], "p95": tid["p95"]},
        "dagar_vedtak_til_busetjingsdato_snitt": float(tid["dagar_snitt"]) if tid["dagar_snitt"] is not None else None,
    }
