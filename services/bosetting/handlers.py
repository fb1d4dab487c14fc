"""Bosetting's handlers: events and commands in, domain decisions, one transaction each."""

import asyncio
import contextlib
import json
from dataclasses import asdict
from datetime import date

from services.bosetting import allokering, kpi, store
from services.bosetting.domain import DomainError, Sak, Status
from services.bosetting.referansedata import Tilbod
from shared.catalogue import (
    KapasitetRapportert,
    KartleggingFullfort,
    KartleggingKorrigert,
    Kategori,
    MottakStatusEndret,
    SaerlegeBehovFlagga,
    VedtakFattet,
    VedtakKorrigert,
)
from shared import klokke
from shared.envelope import Envelope
from shared.outbox import UnitOfWork, unit_of_work
from shared.river import NotReady, Rejected
from shared.service import Runtime


class SakFinstIkkje(LookupError):
    """No sak with that id."""


class KommuneFinstIkkje(LookupError):
    """No kommune with that number."""


class IkkjeOpeForslag(DomainError):
    """Saker without an open proposal to confirm."""

    def __init__(self, sak_ids: list[str]):
        super().__init__(f"{len(sak_ids)} sak(er) have no open proposal")
        self.sak_ids = sak_ids


class Hindra(DomainError):
    """A caseworker's override breaks a hard constraint."""


def arsdel(idag: date) -> float:
    """Fraction of the settlement year that has passed, for even use of decided places."""
    return (idag - date(idag.year, 1, 1)).days / 365


async def _sak_or_wait(uow: UnitOfWork, sak_id: str) -> Sak:
    sak = await store.get_sak(uow.conn, sak_id)
    if sak is None:  # its vedtak has not arrived yet: hold the event and retry later
        raise NotReady("sak not known yet")
    return sak


async def _apply(uow: UnitOfWork, sak: Sak, command, *args) -> list:
    """Run one domain command on a locked sak; move its places by what it holds before and
    after, store it and emit its events, all in the caller's transaction."""
    for_ = sak.plass()
    events = command(*args)
    await store.flytt_plassar(uow.conn, for_, sak.plass())
    await store.save_sak(uow.conn, sak)
    uow.correlationid = sak.correlationid or uow.correlationid
    emitted = []
    for event in events:
        await uow.emit(event, sak.sak_id)
        emitted.append(uow.pending[-1].envelope)
    await _kpi_eigne(uow, sak.sak_id, list(zip(emitted, events, strict=True)))
    return events


async def _kpi_eigne(uow: UnitOfWork, sak_id: str, hendingar: list[tuple[Envelope, object]]) -> None:
    """Fold bosetting's own events into the KPI projection as they are emitted, in the
    same transaction: coming back through the broker they were 44% of bosetting's
    deliveries and its slowest hop (bench/chain.py). They go into the inbox too, as
    applied: `chain rebuild kpi` folds from the log exactly the events the inbox holds
    (same ids and times, so both agree), and a copy still delivered is a duplicate."""
    hendingar = [(e, d) for e, d in hendingar if e.type in KPI_EIGNE_TYPAR]
    if not hendingar:
        return
    record = await store.kpi_sak(uow.conn, sak_id)
    for envelope, data in hendingar:
        record = kpi.apply(record, envelope, data)
    if record is not None:
        await store.lagre_kpi_sak(uow.conn, record)
    await store.merk_brukt(uow.conn, [e for e, _ in hendingar])


async def _forkast_forslag(uow: UnitOfWork, sak_id: str) -> None:
    """An open proposal for a sak that changed is stale: release its reservation."""
    forslag = await store.ope_forslag(uow.conn, sak_id, for_update=True)
    if forslag:
        await store.frigje(uow.conn, forslag["kommunenummer"], Kategori(forslag["kategori"]), forslag["personar"])
        await store.avgjer_forslag(uow.conn, sak_id, "forelda")


# --- events --------------------------------------------------------------------------


async def vedtak_fattet(uow: UnitOfWork, envelope: Envelope, data: VedtakFattet) -> None:
    if not await store.add_sak(uow.conn, Sak.opne(envelope.subject, data, envelope.correlationid)):
        raise Rejected("a sak with this id exists already")


async def vedtak_korrigert(uow: UnitOfWork, envelope: Envelope, data: VedtakKorrigert) -> None:
    sak = await _sak_or_wait(uow, envelope.subject)
    await _forkast_forslag(uow, sak.sak_id)
    await _apply(uow, sak, sak.korriger, data)


async def kartlegging_fullfort(uow: UnitOfWork, envelope: Envelope, data: KartleggingFullfort) -> None:
    sak = await _sak_or_wait(uow, envelope.subject)
    await _apply(uow, sak, sak.kartlegging_fullfort, data)


async def kartlegging_korrigert(uow: UnitOfWork, envelope: Envelope, data: KartleggingKorrigert) -> None:
    sak = await _sak_or_wait(uow, envelope.subject)
    await _apply(uow, sak, sak.kartlagt, data)


async def mottak_status_endret(uow: UnitOfWork, envelope: Envelope, data: MottakStatusEndret) -> None:
    sak = await _sak_or_wait(uow, envelope.subject)
    await _apply(uow, sak, sak.mottak_status, data.mottak_id, data.status)


async def saerlege_behov_flagga(uow: UnitOfWork, envelope: Envelope, data: SaerlegeBehovFlagga) -> None:
    sak = await _sak_or_wait(uow, envelope.subject)
    await _apply(uow, sak, sak.saerlege_behov_flagga, data.person_id, data.behov)


async def kapasitet_rapportert(uow: UnitOfWork, envelope: Envelope, data: KapasitetRapportert) -> None:
    if envelope.subject != f"kommune-{data.kommunenummer}":
        raise Rejected("subject does not match kommunenummer")
    if not await store.kommune_exists(uow.conn, data.kommunenummer):
        raise Rejected("unknown kommunenummer")
    await _rapporter(uow, data, "event")


async def kpi_hending(uow: UnitOfWork, envelope: Envelope, data) -> None:
    """The KPI projection: fold the event into its case's record (kpi.apply), in the same
    transaction as the event's other effects."""
    if not envelope.subject.startswith("sak-"):
        return
    sak = kpi.apply(await store.kpi_sak(uow.conn, envelope.subject), envelope, data)
    if sak is not None:
        await store.lagre_kpi_sak(uow.conn, sak)


def _med_kpi(handler):
    async def begge(uow: UnitOfWork, envelope: Envelope, data) -> None:
        # The cause first, then what the handler emits (`_kpi_eigne`): the order of the
        # event log, which `chain rebuild kpi` folds.
        await kpi_hending(uow, envelope, data)
        await handler(uow, envelope, data)

    return begge


# Bosetting's own events are folded into the KPI projection as they are emitted; the queue
# is no longer bound to them (app.py). Their handlers stay: an operator's replay of them to
# bosetting's queue folds nothing twice (kpi.apply skips an event id it has seen).
KPI_EIGNE = ("fordelt", "avslatt", "fordeling_oppheva", "avtale_inngatt", "bosatt", "trukke")
KPI_EIGNE_TYPAR = frozenset(f"bosetting.{t}" for t in KPI_EIGNE)
EVENT_HANDLERS = {
    "vedtak.fattet": _med_kpi(vedtak_fattet),
    "vedtak.korrigert": _med_kpi(vedtak_korrigert),
    "kartlegging.startet": kpi_hending,
    "kartlegging.fullfort": _med_kpi(kartlegging_fullfort),
    "kartlegging.korrigert": kartlegging_korrigert,
    "mottak.status_endret": mottak_status_endret,
    "mottak.saerlege_behov_flagga": saerlege_behov_flagga,
    "kommune.kapasitet_rapportert": kapasitet_rapportert,
} | {f"bosetting.{t}": kpi_hending for t in KPI_EIGNE}
# The events the KPI projection folds (what `chain rebuild kpi` replays).
KPI_TYPAR = ("vedtak.fattet", "vedtak.korrigert", "kartlegging.startet", "kartlegging.fullfort", *(f"bosetting.{t}" for t in KPI_EIGNE))


# --- commands from kommunar and caseworkers (HTTP) -----------------------------------


@contextlib.asynccontextmanager
async def _sak_command(rt: Runtime, sak_id: str):
    async with unit_of_work(rt.pool, rt.source) as uow:
        sak = await store.get_sak(uow.conn, sak_id)
        if sak is None:
            raise SakFinstIkkje(sak_id)
        yield uow, sak


async def avtal(rt: Runtime, sak_id: str, kommunenummer: str, busetjingsdato: date) -> Sak:
    async with _sak_command(rt, sak_id) as (uow, sak):
        await _apply(uow, sak, sak.avtal, kommunenummer, busetjingsdato)
        return sak


async def avsla(rt: Runtime, sak_id: str, kommunenummer: str, grunn: str) -> Sak:
    async with _sak_command(rt, sak_id) as (uow, sak):
        await _apply(uow, sak, sak.avsla, kommunenummer, grunn)  # frees the refused places
        return sak


async def bosett(rt: Runtime, sak_id: str, kommunenummer: str, busetjingsdato: date) -> Sak:
    async with _sak_command(rt, sak_id) as (uow, sak):
        await _apply(uow, sak, sak.bosett, kommunenummer, busetjingsdato)
        return sak


async def trekk(rt: Runtime, sak_id: str, arsak: str, grunn: str, utfort_av: str) -> Sak:
    async with _sak_command(rt, sak_id) as (uow, sak):
        await _forkast_forslag(uow, sak_id)
        if await _apply(uow, sak, sak.trekk, arsak):
            await store.logg(uow.conn, sak_id, "trukke", utfort_av, grunn, {"arsak": arsak})
        return sak


async def stadfest(rt: Runtime, sak_ids: list[str], utfort_av: str, grunn: str | None) -> list[Sak]:
    """Confirm proposals: each sak is allocated to its proposed kommune and `bosetting.fordelt`
    is emitted. All or nothing; confirming a proposal that is already confirmed is a no-op."""
    async with unit_of_work(rt.pool, rt.source) as uow:
        saker, manglar = [], []
        # Lock every sak first, in one order, before any capacity row: the allocator takes
        # saker then capacity too, so the two can never wait on each other in a cycle.
        locked = {sak_id: await store.get_sak(uow.conn, sak_id) for sak_id in sorted(set(sak_ids))}
        for sak_id, sak in locked.items():
            forslag = await store.ope_forslag(uow.conn, sak_id, for_update=True) if sak else None
            if forslag is None:
                if not (sak and await _alt_stadfesta(uow, sak)):
                    manglar.append(sak_id)
                continue
            await store.frigje(uow.conn, forslag["kommunenummer"], sak.kategori, forslag["personar"])
            await _apply(uow, sak, sak.fordel, forslag["kommunenummer"])
            await store.avgjer_forslag(uow.conn, sak_id, "stadfesta")
            await store.logg(uow.conn, sak_id, "stadfesta", utfort_av, grunn, {"kommunenummer": forslag["kommunenummer"]})
            saker.append(sak)
        if manglar:
            raise IkkjeOpeForslag(manglar)  # rolls the whole batch back
        return saker


async def _alt_stadfesta(uow: UnitOfWork, sak: Sak) -> bool:
    siste = await store.siste_forslag(uow.conn, sak.sak_id)
    return bool(siste and siste["status"] == "stadfesta" and sak.kommunenummer == siste["kommunenummer"])


async def overstyr(rt: Runtime, sak_id: str, kommunenummer: str, grunn: str, utfort_av: str, idag: date) -> Sak:
    """A caseworker allocates to another kommune than proposed (or without a proposal).
    Hard constraints still hold: refusals, minors' places, capacity, "cannot take new"."""
    async with _sak_command(rt, sak_id) as (uow, sak):
        if sak.status == Status.fordelt and sak.kommunenummer == kommunenummer:
            return sak  # a retried override
        forslag = await store.ope_forslag(uow.conn, sak_id, for_update=True)
        if forslag:
            await store.frigje(uow.conn, forslag["kommunenummer"], sak.kategori, forslag["personar"])
        kommune = await store.kommune_tilstand(uow.conn, kommunenummer)
        if not kommune:
            raise KommuneFinstIkkje(kommunenummer)
        if sak.status != Status.fordelingsklar:
            raise DomainError(f"cannot allocate a sak in status {sak.status}")
        hindring = allokering.hindring(sak.hushald(idag), kommune[0])
        if hindring:
            raise Hindra(hindring)
        await _apply(uow, sak, sak.fordel, kommunenummer)
        if forslag:
            await store.avgjer_forslag(uow.conn, sak_id, "overstyrt")
        detaljar = {"kommunenummer": kommunenummer, "foreslatt": forslag["kommunenummer"] if forslag else None}
        await store.logg(uow.conn, sak_id, "overstyrt", utfort_av, grunn, detaljar)
        return sak


async def kvifor_ikkje(rt: Runtime, sak_id: str, kommunenummer: str, idag: date) -> dict:
    """Explain, from the sak's latest proposal and its batch's shadow prices, why a kommune
    was not proposed (scores are recomputed today, so waiting time has moved on a little)."""
    async with rt.pool.acquire() as conn:
        sak = await store.get_sak(conn, sak_id, for_update=False)
        if sak is None:
            raise SakFinstIkkje(sak_id)
        kommunar = await store.kommune_tilstand(conn)
        if not any(k.kommunenummer == kommunenummer for k in kommunar):
            raise KommuneFinstIkkje(kommunenummer)
        forslag = await store.siste_forslag(conn, sak_id)
        runde = await store.runde(conn, forslag["runde_id"]) if forslag else None
    resultat = allokering.Resultat(
        algoritme=runde["algoritme"] if runde else rt.settings.allocator,
        forslag={sak_id: _forslag_av_rad(sak_id, forslag)} if forslag else {},
        utsett={},
        objektiv=0.0,
        ovre_grense=0.0,
        gap=runde["gap"] if runde else 0.0,
        sekund=0.0,
        skuggeprisar={
            (knr, Kategori(kategori)): pris
            for key, pris in (runde["skuggeprisar"] if runde else {}).items()
            for knr, kategori in [key.split(":")]
        },
        kandidatar=0,
    )
    return allokering.kvifor_ikkje(sak.hushald(idag), kommunenummer, kommunar, resultat, arsdel=arsdel(idag))


def _forslag_av_rad(sak_id: str, rad: dict) -> allokering.Forslag:
    return allokering.Forslag(
        sak_id=sak_id,
        kommunenummer=rad["kommunenummer"],
        score=rad["score"],
        ledd=rad["ledd"],
        alternativ=tuple(allokering.Alternativ(**a) for a in rad["alternativ"]),
        bindande=tuple(rad["bindande"]),
    )


# --- the allocation batch and the deadline watch (background loops) ------------------


def _forslag_json(f: allokering.Forslag) -> dict:
    return {
        "kommunenummer": f.kommunenummer,
        "score": f.score,
        "ledd": f.ledd,
        "alternativ": [asdict(a) for a in f.alternativ],
        "bindande": list(f.bindande),
    }


async def fordel(rt: Runtime, idag: date | None = None) -> int:
    """One allocation batch: the optimiser (or the greedy baseline) proposes a kommune for
    every fordelingsklar household without a proposal, and each proposal reserves its
    places. Returns how many proposals were made.

    The solve (up to seconds for thousands of households) holds no lock: the saker are read,
    solved, and then only those unchanged since are locked and proposed, in a short
    transaction. Held through the solve, their row locks stopped the river's whole batch at
    the first event for any of them (bench/chain.py)."""
    idag = idag or klokke.idag()
    async with rt.pool.acquire() as conn:
        lesne = await store.fordelingsklare_saker(conn, rt.settings.allocation_batch)
        if not lesne:
            return 0
        kommunar = await store.kommune_tilstand(conn)
    saker = [sak for sak, _ in lesne]
    solve = allokering.optimer if rt.settings.allocator == "milp" else allokering.gradig
    # The solver is CPU work: off the event loop, so the queue and HTTP keep flowing.
    res = await asyncio.to_thread(solve, [s.hushald(idag) for s in saker], kommunar, arsdel=arsdel(idag))
    versjon = {sak.sak_id: v for sak, v in lesne}
    async with unit_of_work(rt.pool, rt.source) as uow:
        uendra = await store.lat_uendra(uow.conn, {sak_id: versjon[sak_id] for sak_id in res.forslag})
        runde_id = await store.add_runde(uow.conn, _runde(res, saker, idag))
        by_id = {s.sak_id: s for s in saker}
        made = 0
        # Capacity rows in one order (kommune, group), as a confirmation takes them: two
        # transactions taking the same rows in opposite orders deadlock (sim/chaos.py saw it).
        for sak_id, forslag in sorted(res.forslag.items(), key=lambda f: (f[1].kommunenummer, by_id[f[0]].kategori.value, f[0])):
            sak = by_id[sak_id]
            # Changed while solving, or capacity shrunk meanwhile (a new decision): next batch.
            if sak_id in uendra and await store.reserver(uow.conn, forslag.kommunenummer, sak.kategori, sak.tal_personar):
                await store.add_forslag(uow.conn, runde_id, sak, _forslag_json(forslag))
                made += 1
        return made


def _runde(res: allokering.Resultat, saker: list[Sak], idag: date) -> dict:
    return {
        "algoritme": res.algoritme,
        "arsdel": arsdel(idag),
        "saker": len(saker),
        "personar": sum(s.tal_personar for s in saker),
        "foreslatt": len(res.forslag),
        "utsett": len(res.utsett),
        "objektiv": res.objektiv,
        "ovre_grense": res.ovre_grense,
        "gap": res.gap,
        "sekund": res.sekund,
        "kandidatar": res.kandidatar,
        "skuggeprisar": _json_skuggeprisar(res.skuggeprisar),
    }


def _json_skuggeprisar(prisar: dict[tuple[str, Kategori], float]) -> str:
    return json.dumps({f"{knr}:{kategori.value}": p for (knr, kategori), p in prisar.items() if p > 1e-9})


async def fristvakt(rt: Runtime, idag: date | None = None, batch: int = 500) -> int:
    """Emit the deadline events that are due. Each is decided under the sak's row lock in
    the same transaction as its outbox row and the sak's flag, so it is emitted once, even
    across restarts and with several replicas (they skip each other's locked rows)."""
    idag = idag or klokke.idag()
    async with unit_of_work(rt.pool, rt.source) as uow:
        saker = await store.saker_med_frist_no(uow.conn, idag, rt.settings.frist_varsel_dagar, batch)
        emitted = 0
        for sak in saker:
            emitted += len(await _apply(uow, sak, sak.fristvarsel, idag, rt.settings.frist_varsel_dagar))
        return emitted


# --- kommunar --------------------------------------------------------------------------


async def _rapporter(uow: UnitOfWork, data: KapasitetRapportert, kjelde: str) -> None:
    await store.add_rapport(uow.conn, data.kommunenummer, data.model_dump(), kjelde)  # dates as dates (asyncpg)
    if data.vedtaksplassar is not None and data.ar is not None:
        await store.set_vedtak(uow.conn, data.ar, data.kommunenummer, data.vedtaksplassar, data.ar == klokke.idag().year)


async def rapporter(rt: Runtime, data: KapasitetRapportert) -> None:
    async with unit_of_work(rt.pool, rt.source) as uow:
        await _rapporter(uow, data, "http")


async def set_vedtak(rt: Runtime, ar: int, kommunenummer: str, plassar: dict[Kategori, int]) -> None:
    async with unit_of_work(rt.pool, rt.source) as uow:
        await store.set_vedtak(uow.conn, ar, kommunenummer, plassar, ar == klokke.idag().year)


async def set_anmodning(rt: Runtime, ar: int, rows: list[tuple[str, Kategori, int]]) -> None:
    async with unit_of_work(rt.pool, rt.source) as uow:
        await store.set_anmodning(uow.conn, ar, rows)


async def set_tilbod(rt: Runtime, tilbod: Tilbod) -> None:
    async with unit_of_work(rt.pool, rt.source) as uow:
        await store.set_tilbod(uow.conn, tilbod)

