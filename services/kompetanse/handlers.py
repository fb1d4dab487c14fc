"""Kompetanse's handlers: mapping and settlement events update the profiles; reads are audited."""

from uuid import UUID

from services.kompetanse import store
from services.kompetanse.domain import FELT, Profil
from shared.catalogue import Bosatt, Fordelt, Kompetanse
from shared.envelope import Envelope
from shared.outbox import UnitOfWork
from shared.service import Runtime


async def kartlegging_fullfort(uow: UnitOfWork, envelope: Envelope, data: Kompetanse) -> None:
    profil = await store.lock_or_new(uow.conn, data.person_id)
    profil.kartlagt(data)
    await store.save_profil(uow.conn, profil)


async def fordelt(uow: UnitOfWork, envelope: Envelope, data: Fordelt) -> None:
    # Settlement events may overtake the mapping events (different producers): profiles
    # are created by whichever comes first.
    for person_id in data.personar:
        profil = await store.lock_or_new(uow.conn, person_id)
        profil.fordelt(data.kommunenummer)
        await store.save_profil(uow.conn, profil)


async def bosatt(uow: UnitOfWork, envelope: Envelope, data: Bosatt) -> None:
    for person_id in data.personar:
        profil = await store.lock_or_new(uow.conn, person_id)
        profil.busett(data.kommunenummer)
        await store.save_profil(uow.conn, profil)


EVENT_HANDLERS = {
    "kartlegging.fullfort": kartlegging_fullfort,
    "kartlegging.korrigert": kartlegging_fullfort,  # a corrected version replaces the profile's content
    "bosetting.fordelt": fordelt,
    "bosetting.bosatt": bosatt,
}


async def les_profil(
    rt: Runtime,
    konsument: str,
    person_id: str,
    formal: str,
    request_id: UUID,
    *,
    konsument_org: str | None = None,
    klient: str | None = None,
) -> Profil | None:
    """Read one profile and record the access in the same transaction: no read goes unlogged.
    konsument_org and klient default to `konsument` (one static token for now)."""
    async with rt.pool.acquire() as conn, conn.transaction():
        profil = await store.get_profil(conn, person_id, for_update=False)
        served = profil is not None and profil.har_kompetanse
        await store.log_access(
            conn,
            konsument,
            person_id,
            list(FELT) if served else [],
            formal,
            request_id,
            "served" if served else "not_found",
            konsument_org=konsument_org,
            klient=klient,
        )
    return profil if served else None
