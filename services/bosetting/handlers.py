"""Bosetting's handlers: events and commands in, one domain call, one transaction."""

from contextlib import asynccontextmanager
from datetime import date

from services.bosetting import store
from services.bosetting.domain import Person, Sak, fordel_saker
from shared.catalogue import Kategori, KartleggingFullfort, MottakStatusEndret, VedtakFattet
from shared.envelope import Envelope
from shared.outbox import UnitOfWork, unit_of_work
from shared.river import NotReady, Rejected
from shared.service import Runtime


class SakFinstIkkje(LookupError):
    """No sak with that id."""


async def _sak_or_wait(uow: UnitOfWork, sak_id: str) -> Sak:
    sak = await store.get_sak(uow.conn, sak_id)
    if sak is None:  # its vedtak has not arrived yet: hold the event and retry later
        raise NotReady("sak not known yet")
    return sak


async def _save(uow: UnitOfWork, sak: Sak, events) -> None:
    await store.save_sak(uow.conn, sak)
    for event in events:
        await uow.emit(event, sak.sak_id)


# --- events --------------------------------------------------------------------------


async def vedtak_fattet(uow: UnitOfWork, envelope: Envelope, data: VedtakFattet) -> None:
    sak = Sak(
        sak_id=envelope.subject,
        reg_nummer=data.reg_nummer,
        kategori=data.kategori,
        sakstype=data.sakstype.value,
        vedtaksdato=data.vedtaksdato,
        personar=[Person(p.person_id, p.fodselsar, p.kjonn) for p in data.personar],
        mottak_id=data.mottak_id,
        bustadkommune=data.bustadkommune,
        correlationid=envelope.correlationid,
    )
    if not await store.add_sak(uow.conn, sak):
        raise Rejected("a sak with this id exists already")


async def kartlegging_fullfort(uow: UnitOfWork, envelope: Envelope, data: KartleggingFullfort) -> None:
    sak = await _sak_or_wait(uow, envelope.subject)
    await _save(uow, sak, sak.kartlegging_fullfort(data.sak_komplett))


async def mottak_status_endret(uow: UnitOfWork, envelope: Envelope, data: MottakStatusEndret) -> None:
    sak = await _sak_or_wait(uow, envelope.subject)
    await _save(uow, sak, sak.mottak_status(data.mottak_id, data.status))


EVENT_HANDLERS = {
    "vedtak.fattet": vedtak_fattet,
    "kartlegging.fullfort": kartlegging_fullfort,
    "mottak.status_endret": mottak_status_endret,
}


# --- commands (HTTP and the allocator) ----------------------------------------------


@asynccontextmanager
async def _sak_command(rt: Runtime, sak_id: str):
    async with unit_of_work(rt.pool, rt.source) as uow:
        sak = await store.get_sak(uow.conn, sak_id)
        if sak is None:
            raise SakFinstIkkje(sak_id)
        uow.correlationid = sak.correlationid or uow.correlationid
        yield uow, sak


async def avtal(rt: Runtime, sak_id: str, kommunenummer: str, busetjingsdato: date) -> Sak:
    async with _sak_command(rt, sak_id) as (uow, sak):
        await _save(uow, sak, sak.avtal(kommunenummer, busetjingsdato))
        return sak


async def avsla(rt: Runtime, sak_id: str, kommunenummer: str, grunn: str) -> Sak:
    async with _sak_command(rt, sak_id) as (uow, sak):
        events = sak.avsla(kommunenummer, grunn)
        if events:  # the refused places are free for other households again
            await store.frigje_plassar(uow.conn, kommunenummer, sak.kategori, sak.tal_personar)
        await _save(uow, sak, events)
        return sak


async def bosett(rt: Runtime, sak_id: str, busetjingsdato: date) -> Sak:
    async with _sak_command(rt, sak_id) as (uow, sak):
        await _save(uow, sak, sak.bosett(busetjingsdato))
        return sak


async def fordel(rt: Runtime, batch: int = 500) -> int:
    """One allocation round over the oldest fordelingsklar saker; returns how many were allocated."""
    async with unit_of_work(rt.pool, rt.source) as uow:
        saker = await store.fordelingsklare_saker(uow.conn, batch)
        if not saker:
            return 0
        kapasitet = await store.all_kapasitet(uow.conn)  # row locks: one allocator at a time
        allocated = fordel_saker(saker, kapasitet)
        for sak, events in allocated:
            uow.correlationid = sak.correlationid or uow.correlationid
            await _save(uow, sak, events)
        await store.save_brukt(uow.conn, kapasitet)
        return len(allocated)


async def set_kapasitet(rt: Runtime, kommunenummer: str, plassar: dict[Kategori, int]) -> None:
    async with unit_of_work(rt.pool, rt.source) as uow:
        await store.set_plassar(uow.conn, kommunenummer, plassar)
