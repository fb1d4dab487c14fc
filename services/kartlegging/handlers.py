"""Kartlegging's handlers: events and commands in, one domain call, one transaction."""

from collections.abc import Callable

from services.kartlegging import store
from services.kartlegging.domain import Kartleggingssak
from shared.catalogue import Karriererettleiing, VedtakFattet
from shared.envelope import Envelope
from shared.outbox import UnitOfWork, unit_of_work
from shared.river import Rejected
from shared.service import Runtime


class SakFinstIkkje(LookupError):
    """No mapping case (or no such person in it)."""


async def vedtak_fattet(uow: UnitOfWork, envelope: Envelope, data: VedtakFattet) -> None:
    sak, events = Kartleggingssak.opne(envelope.subject, data)
    if not await store.add_sak(uow.conn, sak, envelope.correlationid):
        raise Rejected("a mapping case for this sak exists already")
    for event in events:
        await uow.emit(event, sak.sak_id)


EVENT_HANDLERS = {"vedtak.fattet": vedtak_fattet}


async def _command(
    rt: Runtime, sak_id: str, person_id: str, decide: Callable[[Kartleggingssak], list], kjelde: str, grunn: str | None = None
) -> Kartleggingssak:
    """Load the case, let the domain decide, save what changed and emit, in one transaction."""
    async with unit_of_work(rt.pool, rt.source) as uow:
        found = await store.get_sak(uow.conn, sak_id)
        if found is None:
            raise SakFinstIkkje(sak_id)
        sak, uow.correlationid = found
        if person_id not in sak.personar:
            raise SakFinstIkkje(person_id)
        events = decide(sak)
        if events:
            await store.save_versjon(uow.conn, sak, person_id, kjelde, grunn)
        for event in events:
            await uow.emit(event, sak_id)
        return sak


async def lagre_utkast(rt: Runtime, sak_id: str, person_id: str, innhald: dict) -> Kartleggingssak:
    async with unit_of_work(rt.pool, rt.source) as uow:
        found = await store.get_sak(uow.conn, sak_id)
        if found is None:
            raise SakFinstIkkje(sak_id)
        sak, _ = found
        if person_id not in sak.personar:
            raise SakFinstIkkje(person_id)
        sak.lagre_utkast(person_id, innhald)
        await store.save_utkast(uow.conn, sak_id, person_id, innhald)
        return sak


async def fullfor(
    rt: Runtime, sak_id: str, person_id: str, innhald: dict | None = None, *, pakravde: bool = True, kjelde: str = "mottak"
) -> Kartleggingssak:
    return await _command(rt, sak_id, person_id, lambda sak: sak.fullfor(person_id, innhald, pakravde=pakravde), kjelde)


async def korriger(rt: Runtime, sak_id: str, person_id: str, innhald: dict, grunn: str, kjelde: str = "mottak") -> Kartleggingssak:
    return await _command(rt, sak_id, person_id, lambda sak: sak.korriger(person_id, innhald, grunn), kjelde, grunn)


class IkkjeFullfort(LookupError):
    """The person's mapping is not complete yet."""


async def karriererettleiing(rt: Runtime, sak_id: str, person_id: str, dato, fylkesnummer: str, notat: str) -> None:
    """The county's career guidance (§ 11) builds on a completed mapping. Kept here, and
    sent to kompetanse, which serves it to the consumers whose policy includes it."""
    async with unit_of_work(rt.pool, rt.source) as uow:
        row = await store.person(uow.conn, sak_id, person_id)
        if row is None:
            raise SakFinstIkkje(person_id)
        if row["innhald"] is None:
            raise IkkjeFullfort(person_id)
        await store.save_karriererettleiing(uow.conn, sak_id, person_id, dato, fylkesnummer, notat)
        await uow.emit(Karriererettleiing(person_id=person_id, fylkesnummer=fylkesnummer, dato=dato, notat=notat), sak_id)
