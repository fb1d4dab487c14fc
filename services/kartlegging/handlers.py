"""Kartlegging's handlers: events and commands in, one domain call, one transaction."""

from services.kartlegging import store
from services.kartlegging.domain import Kartleggingssak
from shared.catalogue import VedtakFattet
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


async def fullfor(rt: Runtime, sak_id: str, person_id: str, innhald: dict) -> Kartleggingssak:
    async with unit_of_work(rt.pool, rt.source) as uow:
        found = await store.get_sak(uow.conn, sak_id)
        if found is None:
            raise SakFinstIkkje(sak_id)
        sak, uow.correlationid = found
        try:
            events = sak.fullfor(person_id, innhald)
        except KeyError:
            raise SakFinstIkkje(person_id) from None
        if events:
            await store.save_person(uow.conn, sak_id, person_id, innhald)
        for event in events:
            await uow.emit(event, sak_id)
        return sak
