"""Bosetting's SQL: saker, kommunar, capacity, proposals and the caseworkers' log."""

import json
from dataclasses import asdict
from datetime import date

import asyncpg

from services.bosetting import kpi
from services.bosetting.allokering import KommuneTilstand
from services.bosetting.domain import Person, Sak, Status
from services.bosetting.referansedata import Kommune, Tilbod
from shared.catalogue import Kategori
from shared.envelope import Envelope

_SAK_COLUMNS = (
    "sak_id, reg_nummer, kategori, sakstype, vedtaksdato, personar, status, kommunenummer,"
    " busetjingsdato, avslatt_av, mottak_id, privatbuande, bustadkommune, correlationid,"
    " frist, frist_naermar_sendt, frist_overskriden_sendt, oppheva_hos"
)
Plass = tuple[str, Kategori, int] | None


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
        privatbuande=row["privatbuande"],
        bustadkommune=row["bustadkommune"],
        correlationid=row["correlationid"],
        frist=row["frist"],
        frist_naermar_sendt=row["frist_naermar_sendt"],
        frist_overskriden_sendt=row["frist_overskriden_sendt"],
        oppheva_hos=list(row["oppheva_hos"]),
    )


def _values(sak: Sak) -> tuple:
    return (
        sak.sak_id,
        sak.reg_nummer,
        sak.kategori.value,
        sak.sakstype,
        sak.vedtaksdato,
        json.dumps([asdict(p) for p in sak.personar]),
        sak.status.value,
        sak.kommunenummer,
        sak.busetjingsdato,
        sak.avslatt_av,
        sak.mottak_id,
        sak.privatbuande,
        sak.bustadkommune,
        sak.correlationid,
        sak.frist,
        sak.frist_naermar_sendt,
        sak.frist_overskriden_sendt,
        sak.oppheva_hos,
    )


# --- saker -----------------------------------------------------------------------------


async def add_sak(conn: asyncpg.Connection, sak: Sak) -> bool:
    """Insert a new sak; False if the sak id exists already."""
    placeholders = ",".join(f"${i}" for i in range(1, 19))
    inserted = await conn.fetchval(
        f"INSERT INTO sak ({_SAK_COLUMNS}) VALUES ({placeholders}) ON CONFLICT (sak_id) DO NOTHING RETURNING true",
        *_values(sak),
    )
    return bool(inserted)


async def get_sak(conn: asyncpg.Connection, sak_id: str, *, for_update: bool = True) -> Sak | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_SAK_COLUMNS} FROM sak WHERE sak_id = $1{lock}", sak_id)
    return _sak(row) if row else None


async def save_sak(conn: asyncpg.Connection, sak: Sak) -> None:
    await conn.execute(
        "UPDATE sak SET reg_nummer = $2, kategori = $3, sakstype = $4, vedtaksdato = $5, personar = $6, status = $7,"
        " kommunenummer = $8, busetjingsdato = $9, avslatt_av = $10, mottak_id = $11, privatbuande = $12,"
        " bustadkommune = $13, correlationid = coalesce($14, correlationid), frist = $15, frist_naermar_sendt = $16,"
        " frist_overskriden_sendt = $17, oppheva_hos = $18, endra_at = now(),"
        " bosatt_at = CASE WHEN $7 = 'bosatt' THEN coalesce(bosatt_at, now()) END"
        " WHERE sak_id = $1",
        *_values(sak),
    )


async def fordelingsklare_saker(conn: asyncpg.Connection, limit: int) -> list[tuple[Sak, str]]:
    """Fordelingsklar saker without an open proposal, oldest decisions first, each with its
    row version (`xmin`, new with every update of the row). Not locked: the allocator
    solves without holding them and takes only those unchanged since (`lat_uendra`)."""
    rows = await conn.fetch(
        f"SELECT {_SAK_COLUMNS}, xmin::text AS versjon FROM sak s WHERE status = 'fordelingsklar'"
        " AND NOT EXISTS (SELECT 1 FROM forslag f WHERE f.sak_id = s.sak_id AND f.status = 'open')"
        " ORDER BY vedtaksdato, sak_id LIMIT $1",
        limit,
    )
    return [(_sak(r), r["versjon"]) for r in rows]


async def lat_uendra(conn: asyncpg.Connection, versjonar: dict[str, str]) -> set[str]:
    """Lock the saker still in the version read, fordelingsklar and without an open
    proposal; skip those another transaction holds (another allocator, or an event being
    applied): they are for the next batch."""
    rows = await conn.fetch(
        "SELECT s.sak_id FROM sak s JOIN unnest($1::text[], $2::text[]) AS v(sak_id, versjon) USING (sak_id)"
        " WHERE s.xmin::text = v.versjon AND s.status = 'fordelingsklar'"
        " AND NOT EXISTS (SELECT 1 FROM forslag f WHERE f.sak_id = s.sak_id AND f.status = 'open')"
        " ORDER BY s.sak_id FOR UPDATE OF s SKIP LOCKED",
        list(versjonar),
        list(versjonar.values()),
    )
    return {r["sak_id"] for r in rows}


async def saker_med_frist_no(conn: asyncpg.Connection, idag: date, varsel_dagar: int, limit: int) -> list[Sak]:
    """Open saker whose next deadline event may be due; locked, skipping rows another
    replica's deadline watch holds (so each event is decided by one transaction)."""
    rows = await conn.fetch(
        f"SELECT {_SAK_COLUMNS} FROM sak WHERE status NOT IN ('bosatt', 'trukke') AND NOT frist_overskriden_sendt"
        " AND (frist < $1 OR (NOT frist_naermar_sendt AND frist - $2::int <= $1))"
        " ORDER BY frist LIMIT $3 FOR UPDATE SKIP LOCKED",
        idag,
        varsel_dagar,
        limit,
    )
    return [_sak(r) for r in rows]


async def list_saker(conn, status: Status | None, kommunenummer: str | None, limit: int, offset: int = 0):
    return await conn.fetch(
        "SELECT sak_id, reg_nummer, kategori, sakstype, status, kommunenummer, busetjingsdato, vedtaksdato, frist,"
        " jsonb_array_length(personar) AS tal_personar, avslatt_av FROM sak"
        " WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kommunenummer = $2)"
        " ORDER BY vedtaksdato, sak_id LIMIT $3 OFFSET $4",
        status.value if status else None,
        kommunenummer,
        limit,
        offset,
    )


async def kommunens_saker(conn: asyncpg.Connection, kommunenummer: str, status: Status | None) -> list[Sak]:
    """Households allocated to a kommune (fordelt, søkt ut or bosatt there)."""
    rows = await conn.fetch(
        f"SELECT {_SAK_COLUMNS} FROM sak WHERE kommunenummer = $1 AND status IN ('fordelt', 'sokt_ut', 'bosatt')"
        " AND ($2::text IS NULL OR status = $2) ORDER BY vedtaksdato, sak_id",
        kommunenummer,
        status.value if status else None,
    )
    return [_sak(r) for r in rows]


# --- capacity --------------------------------------------------------------------------


async def reserver(conn: asyncpg.Connection, kommunenummer: str, kategori: Kategori, personar: int) -> bool:
    """Take places only if they are free; False if another command took them meanwhile."""
    return bool(
        await conn.fetchval(
            "UPDATE kapasitet SET brukt = brukt + $3 WHERE kommunenummer = $1 AND kategori = $2"
            " AND brukt + $3 <= plassar RETURNING true",
            kommunenummer,
            kategori.value,
            personar,
        )
    )


async def frigje(conn: asyncpg.Connection, kommunenummer: str, kategori: Kategori, personar: int) -> None:
    await conn.execute(
        "UPDATE kapasitet SET brukt = greatest(brukt - $3, 0) WHERE kommunenummer = $1 AND kategori = $2",
        kommunenummer,
        kategori.value,
        personar,
    )


async def flytt_plassar(conn: asyncpg.Connection, for_: Plass, etter: Plass) -> None:
    """Move places from what a sak held before a command to what it holds after. Places a
    kommune has agreed to are taken even beyond its decision (the agreement binds)."""
    if for_ == etter:
        return
    if for_:
        await frigje(conn, *for_)
    if etter:
        await conn.execute(
            "INSERT INTO kapasitet (kommunenummer, kategori, plassar, brukt) VALUES ($1, $2, 0, $3)"
            " ON CONFLICT (kommunenummer, kategori) DO UPDATE SET brukt = kapasitet.brukt + $3",
            etter[0],
            etter[1].value,
            etter[2],
        )


async def kommune_tilstand(conn: asyncpg.Connection, kommunenummer: str | None = None) -> list[KommuneTilstand]:
    """Kommunar (all, or one) as the optimiser sees them: free and decided places per group, offers."""
    rows = await conn.fetch(
        "SELECT k.kommunenummer, k.fylke, k.innbyggjarar, k.vidaregaande, k.sjukehus, k.mindrearig_teneste, k.sektorar,"
        " k.tek_imot,"
        " coalesce(jsonb_object_agg(c.kategori, jsonb_build_array(c.plassar, c.brukt))"
        "   FILTER (WHERE c.kategori IS NOT NULL), '{}') AS kapasitet"
        " FROM kommune k LEFT JOIN kapasitet c USING (kommunenummer) WHERE $1::text IS NULL OR k.kommunenummer = $1"
        " GROUP BY k.kommunenummer ORDER BY 1",
        kommunenummer,
    )
    result = []
    for r in rows:
        kap = {Kategori(g): v for g, v in json.loads(r["kapasitet"]).items()}
        result.append(
            KommuneTilstand(
                kommunenummer=r["kommunenummer"],
                fylke=r["fylke"],
                ledige={g: max(0, p - b) for g, (p, b) in kap.items()},
                plassar={g: p for g, (p, _) in kap.items()},
                vidaregaande=r["vidaregaande"],
                sjukehus=r["sjukehus"],
                mindrearig_teneste=r["mindrearig_teneste"],
                sektorar=frozenset(r["sektorar"]),
                tek_imot=r["tek_imot"],
                innbyggjarar=r["innbyggjarar"],
            )
        )
    return result


async def set_vedtak(conn: asyncpg.Connection, ar: int, kommunenummer: str, plassar: dict[Kategori, int], i_ar: bool) -> None:
    """A kommune's decision per group for a year; this year's also becomes its capacity."""
    await conn.executemany(
        "INSERT INTO anmodning (ar, kommunenummer, kategori, vedtatt) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (ar, kommunenummer, kategori) DO UPDATE SET vedtatt = excluded.vedtatt, endra_at = now()",
        [(ar, kommunenummer, k.value, n) for k, n in plassar.items()],
    )
    if i_ar:
        await conn.executemany(
            "INSERT INTO kapasitet (kommunenummer, kategori, plassar) VALUES ($1, $2, $3)"
            " ON CONFLICT (kommunenummer, kategori) DO UPDATE SET plassar = excluded.plassar",
            [(kommunenummer, k.value, n) for k, n in plassar.items()],
        )


async def set_anmodning(conn: asyncpg.Connection, ar: int, rows: list[tuple[str, Kategori, int]]) -> None:
    await conn.executemany(
        "INSERT INTO anmodning (ar, kommunenummer, kategori, anmoda) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (ar, kommunenummer, kategori) DO UPDATE SET anmoda = excluded.anmoda, endra_at = now()",
        [(ar, knr, k.value, n) for knr, k, n in rows],
    )


async def add_rapport(conn: asyncpg.Connection, kommunenummer: str, rapport: dict, kjelde: str) -> None:
    """Record a capacity report and make its values the kommune's current ones."""
    await conn.execute(
        "INSERT INTO kapasitetsrapport (kommunenummer, dato, ledige_bustader, tek_imot, ar, vedtaksplassar, kjelde)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        kommunenummer,
        rapport["dato"],
        rapport.get("ledige_bustader"),
        rapport.get("tek_imot"),
        rapport.get("ar"),
        json.dumps(rapport["vedtaksplassar"]) if rapport.get("vedtaksplassar") is not None else None,
        kjelde,
    )
    await conn.execute(
        "UPDATE kommune SET ledige_bustader = coalesce($2, ledige_bustader), tek_imot = coalesce($3, tek_imot),"
        " rapportert_dato = greatest(rapportert_dato, $4) WHERE kommunenummer = $1",
        kommunenummer,
        rapport.get("ledige_bustader"),
        rapport.get("tek_imot"),
        rapport["dato"],
    )


# --- kommunar --------------------------------------------------------------------------


async def load_kommunar(conn: asyncpg.Connection, kommunar: list[Kommune], tilbod: dict[str, Tilbod]) -> int:
    """Load reference data; offers are set only for kommunar that have not reported their own."""
    await conn.executemany(
        "INSERT INTO kommune (kommunenummer, namn, fylke, innbyggjarar, fylkesnummer) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (kommunenummer) DO UPDATE SET namn = excluded.namn, fylke = excluded.fylke,"
        " innbyggjarar = excluded.innbyggjarar, fylkesnummer = excluded.fylkesnummer",
        [(k.kommunenummer, k.namn, k.fylke, k.innbyggjarar, k.fylkesnummer) for k in kommunar],
    )
    await conn.executemany(
        "UPDATE kommune SET vidaregaande = $2, sjukehus = $3, mindrearig_teneste = $4, sektorar = $5"
        " WHERE kommunenummer = $1 AND NOT tilbod_rapportert",
        [(t.kommunenummer, t.vidaregaande, t.sjukehus, t.mindrearig_teneste, sorted(t.sektorar)) for t in tilbod.values()],
    )
    return len(kommunar)


async def set_tilbod(conn: asyncpg.Connection, tilbod: Tilbod) -> None:
    await conn.execute(
        "UPDATE kommune SET vidaregaande = $2, sjukehus = $3, mindrearig_teneste = $4, sektorar = $5,"
        " tilbod_rapportert = true WHERE kommunenummer = $1",
        tilbod.kommunenummer,
        tilbod.vidaregaande,
        tilbod.sjukehus,
        tilbod.mindrearig_teneste,
        sorted(tilbod.sektorar),
    )


async def kommune_exists(conn: asyncpg.Connection, kommunenummer: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM kommune WHERE kommunenummer = $1", kommunenummer))


_KOMMUNE = (
    "SELECT k.kommunenummer, k.namn, k.fylke, k.fylkesnummer, k.innbyggjarar, k.vidaregaande, k.sjukehus,"
    " k.mindrearig_teneste, k.sektorar, k.tek_imot, k.ledige_bustader, k.rapportert_dato,"
    " coalesce(jsonb_object_agg(c.kategori, jsonb_build_object('plassar', c.plassar, 'brukt', c.brukt))"
    "   FILTER (WHERE c.kategori IS NOT NULL), '{}') AS kapasitet"
    " FROM kommune k LEFT JOIN kapasitet c USING (kommunenummer)"
)


def _kommune(row: asyncpg.Record) -> dict:
    return {**dict(row), "kapasitet": json.loads(row["kapasitet"])}


async def kommunar(conn: asyncpg.Connection) -> list[dict]:
    return [_kommune(r) for r in await conn.fetch(f"{_KOMMUNE} GROUP BY k.kommunenummer ORDER BY 1")]


async def kommune(conn: asyncpg.Connection, kommunenummer: str) -> dict | None:
    row = await conn.fetchrow(f"{_KOMMUNE} WHERE k.kommunenummer = $1 GROUP BY k.kommunenummer", kommunenummer)
    if row is None:
        return None
    result = _kommune(row)
    result["anmodningar"] = [
        dict(r)
        for r in await conn.fetch(
            "SELECT ar, kategori, anmoda, vedtatt FROM anmodning WHERE kommunenummer = $1 ORDER BY ar, kategori",
            kommunenummer,
        )
    ]
    result["rapportar"] = [
        {**dict(r), "vedtaksplassar": json.loads(r["vedtaksplassar"]) if r["vedtaksplassar"] else None}
        for r in await conn.fetch(
            "SELECT dato, ledige_bustader, tek_imot, ar, vedtaksplassar, kjelde, mottatt_at FROM kapasitetsrapport"
            " WHERE kommunenummer = $1 ORDER BY mottatt_at DESC LIMIT 50",
            kommunenummer,
        )
    ]
    return result


# --- proposals and rounds --------------------------------------------------------------


async def add_runde(conn: asyncpg.Connection, runde: dict) -> int:
    columns = list(runde)
    return await conn.fetchval(
        f"INSERT INTO fordelingsrunde ({', '.join(columns)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})"
        " RETURNING runde_id",
        *runde.values(),
    )


async def add_forslag(conn: asyncpg.Connection, runde_id: int, sak: Sak, forslag: dict) -> None:
    await conn.execute(
        "INSERT INTO forslag (sak_id, runde_id, kommunenummer, kategori, personar, score, ledd, alternativ, bindande)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        sak.sak_id,
        runde_id,
        forslag["kommunenummer"],
        sak.kategori.value,
        sak.tal_personar,
        forslag["score"],
        json.dumps(forslag["ledd"]),
        json.dumps(forslag["alternativ"]),
        json.dumps(forslag["bindande"]),
    )


_FORSLAG = (
    "SELECT f.sak_id, f.runde_id, f.kommunenummer, f.kategori, f.personar, f.score, f.ledd, f.alternativ,"
    " f.bindande, f.status, f.avgjort_at, r.kjort_at, r.algoritme FROM forslag f JOIN fordelingsrunde r USING (runde_id)"
)


def _forslag(row: asyncpg.Record) -> dict:
    return {**dict(row), **{k: json.loads(row[k]) for k in ("ledd", "alternativ", "bindande")}}


async def ope_forslag(conn: asyncpg.Connection, sak_id: str, *, for_update: bool = False) -> dict | None:
    lock = " FOR UPDATE OF f" if for_update else ""
    row = await conn.fetchrow(f"{_FORSLAG} WHERE f.sak_id = $1 AND f.status = 'open'{lock}", sak_id)
    return _forslag(row) if row else None


async def siste_forslag(conn: asyncpg.Connection, sak_id: str) -> dict | None:
    row = await conn.fetchrow(f"{_FORSLAG} WHERE f.sak_id = $1 ORDER BY f.runde_id DESC LIMIT 1", sak_id)
    return _forslag(row) if row else None


async def list_forslag(conn: asyncpg.Connection, status: str, limit: int, offset: int) -> list[dict]:
    rows = await conn.fetch(f"{_FORSLAG} WHERE f.status = $1 ORDER BY f.runde_id, f.sak_id LIMIT $2 OFFSET $3", status, limit, offset)
    return [_forslag(r) for r in rows]


async def avgjer_forslag(conn: asyncpg.Connection, sak_id: str, status: str) -> None:
    await conn.execute(
        "UPDATE forslag SET status = $2, avgjort_at = now() WHERE sak_id = $1 AND status = 'open'", sak_id, status
    )


async def runde(conn: asyncpg.Connection, runde_id: int) -> dict | None:
    row = await conn.fetchrow("SELECT * FROM fordelingsrunde WHERE runde_id = $1", runde_id)
    return {**dict(row), "skuggeprisar": json.loads(row["skuggeprisar"])} if row else None


async def rundar(conn: asyncpg.Connection, limit: int) -> list[dict]:
    rows = await conn.fetch(
        "SELECT runde_id, kjort_at, algoritme, arsdel, saker, personar, foreslatt, utsett, objektiv, ovre_grense, gap,"
        " sekund, kandidatar FROM fordelingsrunde ORDER BY runde_id DESC LIMIT $1",
        limit,
    )
    return [dict(r) for r in rows]


async def logg(conn: asyncpg.Connection, sak_id: str, handling: str, utfort_av: str, grunn: str | None, detaljar: dict) -> None:
    await conn.execute(
        "INSERT INTO sakshandsamarlogg (sak_id, handling, utfort_av, grunn, detaljar) VALUES ($1, $2, $3, $4, $5)",
        sak_id,
        handling,
        utfort_av,
        grunn,
        json.dumps(detaljar),
    )


async def logg_for(conn: asyncpg.Connection, sak_id: str) -> list[dict]:
    rows = await conn.fetch(
        "SELECT tid, handling, utfort_av, grunn, detaljar FROM sakshandsamarlogg WHERE sak_id = $1 ORDER BY logg_id", sak_id
    )
    return [{**dict(r), "detaljar": json.loads(r["detaljar"])} for r in rows]


# --- statistics ------------------------------------------------------------------------


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
    frist = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE frist_naermar_sendt AND NOT frist_overskriden_sendt) AS naermar,"
        " count(*) FILTER (WHERE frist_overskriden_sendt) AS overskriden FROM sak"
    )
    forslag = {
        r["status"]: r["n"] for r in await conn.fetch("SELECT status, count(*) AS n FROM forslag GROUP BY status")
    }
    rundar = await conn.fetchrow(
        "SELECT count(*) AS rundar, max(gap) AS storste_gap, avg(sekund) AS snitt_sekund, max(sekund) AS max_sekund"
        " FROM fordelingsrunde"
    )
    return {
        "per_status": per_status,
        "sekund_vedtak_til_bosatt": {"snitt": tid["snitt"], "median": tid["median"], "p95": tid["p95"]},
        "dagar_vedtak_til_busetjingsdato_snitt": float(tid["dagar_snitt"]) if tid["dagar_snitt"] is not None else None,
        "frist": {"naermar": frist["naermar"], "overskriden": frist["overskriden"]},
        "forslag": forslag,
        "fordelingsrundar": dict(rundar),
    }


# --- the KPI projection -------------------------------------------------------------------


async def kpi_sak(conn: asyncpg.Connection, sak_id: str) -> "kpi.KpiSak | None":
    """The case's KPI record, locked. A case's events come from several producers and are
    applied concurrently: the placeholder row makes the second wait for the first (without
    it both would start from nothing, and the later write would drop the earlier event)."""
    # One round trip: the no-op update of an existing row locks it and returns its data.
    data = json.loads(await conn.fetchval(
        "INSERT INTO kpi_sak (sak_id, data) VALUES ($1, 'null')"
        " ON CONFLICT (sak_id) DO UPDATE SET data = kpi_sak.data RETURNING data",
        sak_id,
    ))
    return kpi.fra_json(data) if data else None


async def merk_brukt(conn: asyncpg.Connection, envelopes: list[Envelope]) -> None:
    """Record events as applied in the inbox (bosetting's own, applied as emitted)."""
    await conn.execute(
        "INSERT INTO inbox (source, event_id, type) SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[])"
        " ON CONFLICT DO NOTHING",
        [e.source for e in envelopes],
        [e.id for e in envelopes],
        [e.type for e in envelopes],
    )


async def lagre_kpi_sak(conn: asyncpg.Connection, sak: "kpi.KpiSak") -> None:
    await conn.execute(
        "INSERT INTO kpi_sak (sak_id, data) VALUES ($1, $2)"
        " ON CONFLICT (sak_id) DO UPDATE SET data = excluded.data, endra_at = now()",
        sak.sak_id,
        json.dumps(kpi.til_json(sak)),
    )


async def kpi_saker(conn: asyncpg.Connection) -> list["kpi.KpiSak"]:
    return [kpi.fra_json(json.loads(r["data"])) for r in await conn.fetch("SELECT data FROM kpi_sak WHERE data != 'null'")]


async def kapasitet_inndata(conn: asyncpg.Connection, ar: int) -> "kpi.KapasitetInndata":
    """Each kommune's requested (anmoda) and decided (vedtatt) places for the year, all groups."""
    rows = await conn.fetch(
        "SELECT k.kommunenummer, k.namn, k.fylkesnummer, k.fylke,"
        " coalesce(sum(a.anmoda), 0) AS oppmoda, coalesce(sum(a.vedtatt), 0) AS vedtaksplassar"
        " FROM kommune k LEFT JOIN anmodning a ON a.kommunenummer = k.kommunenummer AND a.ar = $1"
        " GROUP BY k.kommunenummer, k.namn, k.fylkesnummer, k.fylke",
        ar,
    )
    return kpi.KapasitetInndata(
        kommunar={r["kommunenummer"]: kpi.KommuneKapasitet(**{k: v for k, v in r.items() if k != "kommunenummer"}) for r in rows}
    )
