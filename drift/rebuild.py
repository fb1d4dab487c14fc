"""Rebuild a read model from the event log and switch over atomically, while the live
service keeps running (`chain rebuild kompetanse [--dry-run]`).

1. Build. In the service's database a schema `rebuild_<time>` gets
   `profil (LIKE public.profil INCLUDING ALL)` (columns, defaults, constraints, indexes).
   On a connection of its own with `search_path = rebuild_<time>, public` the service's own
   handlers run unchanged: the unqualified `profil` in its SQL is the fresh table, while
   `inbox`, `identitet` and the rest are still the live ones. `chain.eventlog` is read from
   its first offset in batches of 500 events per transaction, with a unit of work whose
   `emit` does nothing: a rebuild restores state, it notifies no one again. When it has
   reached the end of the log as it was when the round started, another round reads what
   came meanwhile, until little is left; then the table is ANALYZEd.
2. Switch, in one transaction: `LOCK public.profil IN ACCESS EXCLUSIVE MODE` (the live
   handlers wait), catch up, check, and swap: the fresh table becomes `public.profil` with
   the old table's index names (migrations may name them); the old one is kept as
   `rebuild_<time>.profil_gammal` for comparison or a switch back. Drop the schema when
   satisfied.

Which events: exactly those the live service has applied, i.e. those in its inbox, in the
river's order (per producer and subject by sequence, each once; a relay's re-publish is a
duplicate). Applying everything in the log instead, as a naive rebuild would, goes wrong
at the switch: an event the live service has not applied yet (queued, waiting on the lock,
in a retry tier) would be applied by the rebuild without a notification, and the live
service, applying it after the switch to a profile that already shows the change, would
find nothing changed and notify no one: the consumers would miss it. And a dead-lettered
event, which the live service never applied, would be applied. So an event not (yet) in the
inbox waits, with whatever follows it for that subject, and under the lock is applied if it
has been applied live by then; the rest is left to the live service, which applies it to
the new table after the switch, notifying as always. Under the lock the inbox is fixed (a
handler that has not committed has not applied anything), so the catch-up reads the log
until every inbox event of a handled type is applied: if the log lacks one (retention,
`x-max-age`), the rebuild stops and nothing is switched.

What events do not hold is carried over from the live table under the lock: for
kompetanse, `skjerma` set by IMDi's identity registration (an HTTP command). Protection,
once known, is never lifted, so a person protected in the live table stays protected.

Not copied by LIKE, so refused or left to the operator: foreign keys to or from the table
and views on it (they would stay with the old table: refused), triggers, grants (the
services run as the table's owner), row-level security.

`--dry-run` builds and catches up the same way under an EXCLUSIVE lock (reads go on,
writes wait) and reports the differences against the live table (rows only in one, rows
that differ and in which columns; wall-clock columns such as `endra_at` are not compared),
then drops the schema. A real rebuild reports the differences it corrected.

New projections (KPI tables) are one `Projeksjon` in `PROJEKSJONAR`.
"""

import asyncio
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from uuid import UUID

import aio_pika
import asyncpg

from drift import journal
from services.bosetting import handlers as bosetting
from services.kompetanse import handlers as kompetanse
from shared.catalogue import EventData, parse_data
from shared.config import Settings
from shared.envelope import Envelope, parse_envelope
from shared.outbox import UnitOfWork
from shared.river import Handler
from shared.topology import EVENTLOG

BATCH = 500  # events per transaction while building
PREFETCH = 1000
NAERT = 200  # build rounds go on until fewer events than this are left to read under the lock
LAAS_FRIST = "5s"  # waiting for the lock stalls the live service behind us: give up soon ...
LAAS_FORSOK = 3  # ... and try again
INNHENT_FRIST = 10.0  # seconds under the lock to find the inbox's events in the log
SLUTT_FRIST = 2.0  # an empty log delivers nothing from `last`

Framdrift = Callable[[str, int, int | None], None]  # (phase, done, total)


@dataclass(frozen=True)
class Projeksjon:
    """A read model that can be rebuilt: one table in one service's database, written by
    that service's event handlers through unqualified SQL."""

    service: str
    tabell: str
    nokkel: str  # primary key column
    handlers: dict[str, Handler]
    klokke: tuple[str, ...] = ()  # wall-clock columns: never equal, not compared
    # Run under the lock: what the events do not hold, carried over from the live table
    # ({ny}: the rebuilt table, {live}: the live one).
    bevar: str | None = None


PROJEKSJONAR = {
    "kompetanse": Projeksjon(
        "kompetanse",
        "profil",
        "person_id",
        kompetanse.EVENT_HANDLERS,
        klokke=("endra_at",),
        bevar="INSERT INTO {ny} (person_id, skjerma) SELECT person_id, true FROM {live} WHERE skjerma"
        " ON CONFLICT (person_id) DO UPDATE SET skjerma = true",
    ),
    # Bosetting's KPI projection (docs/kpi.md): folded from the vedtak and mapping events
    # and from bosetting's own events, which it folds as it emits them and records in its
    # inbox as applied (services/bosetting/handlers.py: _kpi_eigne).
    "kpi": Projeksjon(
        "bosetting",
        "kpi_sak",
        "sak_id",
        {t: bosetting.kpi_hending for t in bosetting.KPI_TYPAR},
        klokke=("endra_at",),
    ),
}


class RebuildFeil(RuntimeError):
    """The rebuild was refused or stopped; nothing was switched."""


@dataclass
class Avvik:
    """Rebuilt against live: keys only in one, and for rows in both the columns that differ."""

    berre_ombygd: list[str] = field(default_factory=list)
    berre_live: list[str] = field(default_factory=list)
    ulike: dict[str, list[str]] = field(default_factory=dict)

    @property
    def tomt(self) -> bool:
        return not (self.berre_ombygd or self.berre_live or self.ulike)

    def samandrag(self, utval: int = 20) -> dict:
        return {
            "berre_ombygd": len(self.berre_ombygd),
            "berre_live": len(self.berre_live),
            "ulike": len(self.ulike),
            "døme": {"berre_ombygd": self.berre_ombygd[:utval], "berre_live": self.berre_live[:utval], "ulike": dict(list(self.ulike.items())[:utval])},
        }


@dataclass
class Rapport:
    projeksjon: str
    schema: str
    dry_run: bool
    lese: int = 0  # events read from the log
    brukt: int = 0  # applied (the live service had applied them)
    utan_handlar: int = 0  # types the projection has no handler for
    ugyldige: int = 0  # unparseable envelope or data
    duplikat: int = 0  # sequence already applied: a re-publish, or stale (the river ignores it too)
    ventande: int = 0  # not applied live yet: left to the live service
    rader: int = 0
    sekund: float = 0.0
    laas_sekund: float = 0.0  # how long the live service waited
    avvik: Avvik = field(default_factory=Avvik)
    bytta: bool = False
    gammal: str | None = None  # where the old table is kept

    @property
    def rate(self) -> float:
        return self.lese / self.sekund if self.sekund else 0.0

    def samandrag(self) -> dict:
        d = asdict(self) | {"rate": round(self.rate, 1), "avvik": self.avvik.samandrag()}
        return d | {"sekund": round(self.sekund, 3), "laas_sekund": round(self.laas_sekund, 3)}


class StilleUnitOfWork(UnitOfWork):
    """A unit of work whose events go nowhere: the live service notified when it applied them."""

    async def emit(self, data: EventData, subject: str, headers: dict[str, str] | None = None) -> None:
        return None


class Hendingslogg:
    """`chain.eventlog` read over AMQP 0.9.1 from its first offset: a stream wants a
    prefetch and acks, and every delivery carries its offset in `x-stream-offset`."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self._inn: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()

    async def __aenter__(self) -> "Hendingslogg":
        self.connection = await aio_pika.connect(self.amqp_url)
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.get_queue(EVENTLOG, ensure=False)
        await queue.consume(self._inn.put, arguments={"x-stream-offset": "first"})
        return self

    async def __aexit__(self, *exc) -> None:
        await self.connection.close()

    async def slutt(self) -> int | None:
        """About the log's end now: where a consumer at `last` starts (its last chunk). The
        stream has no length to ask for: a passive declare reports 0. None: an empty log."""
        channel = await self.connection.channel()
        try:
            await channel.set_qos(prefetch_count=1)
            queue = await channel.get_queue(EVENTLOG, ensure=False)
            forste: asyncio.Queue = asyncio.Queue()
            await queue.consume(forste.put, arguments={"x-stream-offset": "last"})
            try:
                return (await asyncio.wait_for(forste.get(), SLUTT_FRIST)).headers["x-stream-offset"]
            except TimeoutError:
                return None
        finally:
            await channel.close()

    async def les(self, maks: int, til: int | None = None, frist: float = 30.0) -> list[tuple[int, bytes]]:
        """Up to `maks` deliveries as (offset, body), ending with offset `til` if it comes;
        [] if nothing comes within `frist`."""
        try:
            ut = [await asyncio.wait_for(self._inn.get(), frist)]
        except TimeoutError:
            return []
        # then what has arrived already: no idle waits, the catch-up runs under the lock
        while len(ut) < maks and not self._inn.empty() and (til is None or ut[-1].headers["x-stream-offset"] < til):
            ut.append(self._inn.get_nowait())
        if ut:
            await ut[-1].ack(multiple=True)  # acks are only credit on a stream
        return [(m.headers["x-stream-offset"], m.body) for m in ut]


class Ombygging:
    """One rebuild: the fresh table on `conn` (search_path set), fed from `logg`."""

    def __init__(self, p: Projeksjon, conn: asyncpg.Connection, logg: Hendingslogg, r: Rapport, framdrift: Framdrift) -> None:
        self.p, self.conn, self.logg, self.r, self.framdrift = p, conn, logg, r, framdrift
        self.ny, self.live = f"{r.schema}.{p.tabell}", f"public.{p.tabell}"
        self.siste: dict[tuple[str, str], int] = defaultdict(int)  # last sequence applied per (source, subject)
        self.venter: dict[tuple[str, str], dict[int, tuple[Envelope, EventData | None]]] = {}
        self.i_live: set[tuple[str, UUID]] = set()  # known to be in the live inbox, not applied here yet
        self.offset = -1  # last offset read
        self.forste: int | None = None  # first offset read (retention may have cut the log's start)

    # --- build ----------------------------------------------------------------------------

    async def bygg(self) -> None:
        """Read the log in rounds until less than NAERT is left for the catch-up under the lock."""
        while (slutt := await self.logg.slutt()) is not None and slutt - self.offset > NAERT:
            while self.offset < slutt:
                batch = await self.logg.les(BATCH, til=slutt)
                if not batch:
                    raise RebuildFeil(f"the event log stopped at offset {self.offset} before {slutt}")
                async with self.conn.transaction():
                    await self.ta_imot(batch)
                self.framdrift("les", self.offset - self.forste + 1, slutt - self.forste + 1)
        await self.conn.execute(f"ANALYZE {self.ny}")

    async def ta_imot(self, batch: list[tuple[int, bytes]]) -> None:
        hendingar = []
        for offset, body in batch:
            self.offset = offset
            if self.forste is None:
                self.forste = offset
            self.r.lese += 1
            try:
                envelope = parse_envelope(body)
                data = parse_data(envelope) if envelope.type in self.p.handlers else None
            except ValueError:  # pydantic's ValidationError and UnknownEvent are ValueErrors
                self.r.ugyldige += 1  # the live service dead-lettered it: it never applied it
                continue
            self.r.utan_handlar += data is None
            hendingar.append((envelope, data))
        await self.kjenn_att([e for e, d in hendingar if d is not None])
        for envelope, data in hendingar:
            await self.legg_til(envelope, data)

    async def kjenn_att(self, envelopes: list[Envelope]) -> None:
        """Learn which of these events the live service has applied (are in its inbox)."""
        if envelopes:
            rows = await self.conn.fetch(
                "SELECT source, event_id FROM public.inbox"
                " WHERE (source, event_id) IN (SELECT * FROM unnest($1::text[], $2::uuid[]))",
                [e.source for e in envelopes],
                [e.id for e in envelopes],
            )
            self.i_live.update((r["source"], r["event_id"]) for r in rows)

    async def legg_til(self, envelope: Envelope, data: EventData | None) -> None:
        """Like the river: per producer and subject in sequence order, each event once."""
        key = (envelope.source, envelope.subject)
        venter = self.venter.setdefault(key, {})
        if envelope.sequence <= self.siste[key] or envelope.sequence in venter:
            self.r.duplikat += 1
        else:
            venter[envelope.sequence] = (envelope, data)
        await self.flyt(key)

    async def flyt(self, key: tuple[str, str]) -> None:
        """Apply the subject's next events while they follow on and the live service has
        applied them; an event it has not waits here, and so does what follows it."""
        venter = self.venter[key]
        while (neste := self.siste[key] + 1) in venter:
            envelope, data = venter[neste]
            if data is not None:
                if (envelope.source, envelope.id) not in self.i_live:
                    break
                uow = StilleUnitOfWork(self.conn, f"urn:chain:{self.p.service}", envelope, None)
                await self.p.handlers[envelope.type](uow, envelope, data)
                self.i_live.discard((envelope.source, envelope.id))
                self.r.brukt += 1
            del venter[neste]
            self.siste[key] = neste
        if not venter:
            del self.venter[key]

    # --- switch ---------------------------------------------------------------------------

    async def byt(self, dry_run: bool) -> None:
        """Catch up under the lock, compare, and swap (or, for a dry run, roll back)."""
        tr, laast = await self.laas(dry_run)
        try:
            await self.ta_igjen()
            if self.p.bevar:
                await self.conn.execute(self.p.bevar.format(ny=self.ny, live=self.live))
            await self.sjekk_kolonnar()
            self.r.avvik = await self.avvik()
            self.r.rader = await self.conn.fetchval(f"SELECT count(*) FROM {self.ny}")
            self.r.ventande = sum(map(len, self.venter.values()))
            if not dry_run:
                await self.swap()
        except BaseException:
            await tr.rollback()
            raise
        if dry_run:
            await tr.rollback()
        else:
            await tr.commit()
            self.r.bytta, self.r.gammal = True, f"{self.r.schema}.{self.p.tabell}_gammal"
        self.r.laas_sekund = time.monotonic() - laast

    async def laas(self, dry_run: bool) -> tuple[asyncpg.transaction.Transaction, float]:
        """A transaction holding the live table: EXCLUSIVE for a dry run (reads go on),
        ACCESS EXCLUSIVE to swap it. A short lock_timeout, tried again: while we wait in
        the lock queue the live service waits behind us."""
        modus = "EXCLUSIVE" if dry_run else "ACCESS EXCLUSIVE"
        for forsok in range(LAAS_FORSOK):
            start = time.monotonic()  # the live service waits from here: behind us in the lock queue
            tr = self.conn.transaction()
            await tr.start()
            try:
                await self.conn.execute(f"SET LOCAL lock_timeout = '{LAAS_FRIST}'")
                await self.conn.execute(f"LOCK TABLE {self.live} IN {modus} MODE")
                return tr, start
            except asyncpg.LockNotAvailableError:
                await tr.rollback()
                await asyncio.sleep(1.0 + forsok)
        raise RebuildFeil(f"could not lock {self.live} within {LAAS_FRIST} in {LAAS_FORSOK} tries: a long transaction holds it")

    async def ta_igjen(self) -> None:
        """Under the lock: apply what the live service has applied since, until every event
        of a handled type in its inbox is applied here too."""
        maal = await self.conn.fetchval("SELECT count(*) FROM public.inbox WHERE type = ANY($1::text[])", list(self.p.handlers))
        await self.kjenn_att([e for v in self.venter.values() for e, d in v.values() if d is not None])
        for key in list(self.venter):
            await self.flyt(key)
        frist = time.monotonic() + INNHENT_FRIST
        while self.r.brukt < maal:
            batch = await self.logg.les(BATCH, frist=max(0.0, frist - time.monotonic()))
            if not batch:
                raise RebuildFeil(
                    f"{maal - self.r.brukt} events the live service has applied are not in the event log"
                    " (cut by its retention?): the log cannot rebuild this table"
                )
            await self.ta_imot(batch)
            self.framdrift("innhenting", self.r.brukt, maal)

    async def kolonnar(self, tabell: str) -> list[tuple[str, str]]:
        return [
            tuple(r)
            for r in await self.conn.fetch(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                tabell,
            )
        ]

    async def sjekk_kolonnar(self) -> None:
        if await self.kolonnar(self.ny) != await self.kolonnar(self.live):
            raise RebuildFeil(f"{self.live} changed during the rebuild (a migration?): run it again")

    async def avvik(self) -> Avvik:
        k = self.p.nokkel
        kolonnar = [c for c, _ in await self.kolonnar(self.live) if c != k and c not in self.p.klokke]
        ulike = ", ".join(f"CASE WHEN n.{c} IS DISTINCT FROM g.{c} THEN '{c}' END" for c in kolonnar)
        rows = await self.conn.fetch(
            f"SELECT * FROM (SELECT coalesce(n.{k}, g.{k}) AS nokkel, g.{k} IS NULL AS berre_ombygd, n.{k} IS NULL AS berre_live,"
            f" array_remove(ARRAY[{ulike}]::text[], NULL) AS ulike FROM {self.ny} n FULL JOIN {self.live} g ON n.{k} = g.{k}) x"
            " WHERE berre_ombygd OR berre_live OR cardinality(ulike) > 0 ORDER BY nokkel"
        )
        a = Avvik()
        for r in rows:
            if r["berre_ombygd"]:
                a.berre_ombygd.append(r["nokkel"])
            elif r["berre_live"]:
                a.berre_live.append(r["nokkel"])
            else:
                a.ulike[r["nokkel"]] = list(r["ulike"])
        return a

    async def indeksar(self, tabell: str) -> list[tuple[str, str]]:
        """(name, definition without name and table): how an index is matched to its copy."""
        rows = await self.conn.fetch(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) AS def FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = $1::regclass ORDER BY c.relname",
            tabell,
        )
        return [(r["relname"], re.sub(r" INDEX \S+ ON \S+ ", " INDEX ON ", r["def"])) for r in rows]

    async def swap(self) -> None:
        """The fresh table becomes public's, with the old index names (LIKE named its own);
        the old table goes to the rebuild schema as `<tabell>_gammal`. Names must not clash
        at any step, hence the detour through temporary index names."""
        s, t = self.r.schema, self.p.tabell
        gamle: dict[str, list[str]] = defaultdict(list)
        for namn, d in await self.indeksar(self.live):
            gamle[d].append(namn)
        par = []  # (new index, temporary name, old name)
        for i, (namn, d) in enumerate(await self.indeksar(self.ny)):
            if not gamle[d]:
                raise RebuildFeil(f"no index on {self.live} matches {d}")
            par.append((namn, f"{s}_{i}", gamle[d].pop()))
        if any(gamle.values()):
            raise RebuildFeil(f"indexes of {self.live} without a copy: {sorted(n for v in gamle.values() for n in v)}")
        for namn, tmp, _ in par:
            await self.conn.execute(f"ALTER INDEX {s}.{namn} RENAME TO {tmp}")
        await self.conn.execute(
            f"ALTER TABLE {s}.{t} RENAME TO {t}_ny;"
            f" ALTER TABLE public.{t} SET SCHEMA {s};"
            f" ALTER TABLE {s}.{t} RENAME TO {t}_gammal;"
            f" ALTER TABLE {s}.{t}_ny SET SCHEMA public;"
            f" ALTER TABLE public.{t}_ny RENAME TO {t}"
        )
        for _, tmp, gammal in par:
            await self.conn.execute(f"ALTER INDEX public.{tmp} RENAME TO {gammal}")


async def avhengige(conn: asyncpg.Connection, tabell: str) -> list[str]:
    """Views and foreign keys on the table: they would stay with the old one after a swap."""
    rows = await conn.fetch(
        "SELECT r.ev_class::regclass::text AS namn FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid"
        " WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = $1::regclass AND r.ev_class <> $1::regclass"
        " UNION SELECT conname FROM pg_constraint WHERE contype = 'f' AND $1::regclass IN (conrelid, confrelid)",
        tabell,
    )
    return sorted(r["namn"] for r in rows)


def _ingen_framdrift(fase: str, gjort: int, totalt: int | None) -> None:
    pass


async def bygg_om(cfg: Settings, projeksjon: str, *, dry_run: bool = False, framdrift: Framdrift = _ingen_framdrift) -> Rapport:
    """Rebuild one projection from the event log; switch unless `dry_run`. Raises RebuildFeil."""
    p = PROJEKSJONAR[projeksjon]
    r = Rapport(projeksjon, "rebuild_" + datetime.now(UTC).strftime("%Y%m%d_%H%M%S_%f"), dry_run)
    start = time.monotonic()
    conn = await asyncpg.connect(cfg.database_url(p.service))
    try:
        # Two rebuilds of one table would swap each other's work away: one at a time.
        if not await conn.fetchval("SELECT pg_try_advisory_lock(7310, hashtext($1))", f"rebuild:{p.tabell}"):
            raise RebuildFeil(f"another rebuild of {p.tabell} is running")
        if dep := await avhengige(conn, f"public.{p.tabell}"):
            raise RebuildFeil(f"public.{p.tabell} has dependants a swap would leave on the old table: {dep}")
        await conn.execute(f"CREATE SCHEMA {r.schema}; CREATE TABLE {r.schema}.{p.tabell} (LIKE public.{p.tabell} INCLUDING ALL)")
        await conn.execute(f"SET search_path TO {r.schema}, public")
        try:
            async with Hendingslogg(cfg.amqp_url) as logg:
                o = Ombygging(p, conn, logg, r, framdrift)
                await o.bygg()
                await o.byt(dry_run)
        finally:
            if not r.bytta:  # a dry run, or it failed: the schema holds only the fresh table
                await conn.execute(f"DROP SCHEMA IF EXISTS {r.schema} CASCADE")
    finally:
        await conn.close()
    r.sekund = time.monotonic() - start
    return r


async def kjor(cfg: Settings, projeksjon: str, *, dry_run: bool = False, framdrift: Framdrift = _ingen_framdrift) -> Rapport:
    """`bygg_om`, recorded in the operations journal."""
    async with journal.record(cfg, "rebuild", {"projeksjon": projeksjon, "dry_run": dry_run}) as op:
        r = await bygg_om(cfg, projeksjon, dry_run=dry_run, framdrift=framdrift)
        op.resultat.update(r.samandrag())
    return r
