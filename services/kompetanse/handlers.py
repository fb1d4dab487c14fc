"""Kompetanse's handlers: vedtak, mapping and settlement events update the profiles and
notify the consumers who may see the change; reads and identity registrations are
commands from the API, each one transaction with its audit entry."""

from functools import lru_cache
from uuid import UUID

import asyncpg

from services.kompetanse import identitet, revisor, store
from services.kompetanse.domain import Profil, tom, varsel
from services.kompetanse.policy import Avslag, Policyar, Tilgang, last
from shared.catalogue import (
    Bosatt,
    Fordelt,
    Karriererettleiing,
    Kompetanse,
    KompetanseEndra,
    SaerlegeBehovFlagga,
    VedtakFattet,
)
from shared.config import settings
from shared.envelope import Envelope
from shared.outbox import UnitOfWork
from shared.service import Runtime


@lru_cache
def policyar() -> Policyar:
    return last(settings().kompetanse_policy)


@lru_cache
def nokkelsett() -> identitet.Nokkelsett:
    return identitet.nokkelsett(settings().kompetanse_fnr_key)


async def _endre(uow: UnitOfWork, profil: Profil, endring) -> None:
    """Apply one change to a profile, save it, and emit the notifications it causes."""
    for_ = profil.verdiar()
    endring(profil)
    await store.save_profil(uow.conn, profil)
    for v in varsel(list(policyar().policy.values()), for_, profil.verdiar(), profil.skjerma):
        if not policyar().har_mottakar(v.policy, profil.kommunenummer):
            continue  # no registered consumer would get it
        await uow.emit(KompetanseEndra(person_id=profil.person_id, policy=v.policy, endra=v.endra), profil.person_id, v.headers)


async def vedtak(uow: UnitOfWork, envelope: Envelope, data: VedtakFattet) -> None:
    # Protected persons are recorded only as protected (id and flag), so a later event or
    # registration about them can never make them visible.
    await _lock_hushald(uow, envelope.subject)
    # A correction that reaches us after the household was settled (a child missing from
    # the registration): the person moved in with the household. Bosetting applies such a
    # correction to the settled case without a new event, so no bosatt will name them.
    busett_i = await store.busett_kommune(uow.conn, envelope.subject)
    for p in data.personar:
        profil = await store.lock_or_new(uow.conn, p.person_id)
        await _endre(uow, profil, lambda pr, p=p: _vedtak(pr, envelope.subject, data, p.skjerma, busett_i))


async def _lock_hushald(uow: UnitOfWork, sak_id: str) -> None:
    """Lock the household's known profiles before reading who is settled. Its correction
    (from UDI) and its settlement (from bosetting) come from two producers, so the river's
    per-producer sequence lock does not order them; with two replicas applying both at
    once, each would miss the other's uncommitted change. Whichever takes these row locks
    second waits for the other's commit, and its next statement sees it."""
    await store.lock_sak(uow.conn, sak_id)


def _vedtak(profil: Profil, sak_id: str, data: VedtakFattet, skjerma: bool, busett_i: str | None) -> None:
    profil.vedtak(sak_id, data.kategori.value, skjerma)
    if busett_i and not profil.skjerma and not profil.bosatt:
        profil.busett(busett_i)


async def kartlegging_fullfort(uow: UnitOfWork, envelope: Envelope, data: Kompetanse) -> None:
    profil = await store.lock_or_new(uow.conn, data.person_id)
    await _endre(uow, profil, lambda p: p.kartlagt(data, envelope.time))


async def behov_flagga(uow: UnitOfWork, envelope: Envelope, data: SaerlegeBehovFlagga) -> None:
    profil = await store.lock_or_new(uow.conn, data.person_id)
    await _endre(uow, profil, lambda p: p.behov_flagga(list(data.behov)))


async def karriererettleiing(uow: UnitOfWork, envelope: Envelope, data: Karriererettleiing) -> None:
    profil = await store.lock_or_new(uow.conn, data.person_id)
    await _endre(uow, profil, lambda p: p.rettleiing(data))


async def fordelt(uow: UnitOfWork, envelope: Envelope, data: Fordelt) -> None:
    # Settlement events may overtake the mapping events (different producers): profiles
    # are created by whichever comes first.
    for person_id in sorted(data.personar):
        profil = await store.lock_or_new(uow.conn, person_id)
        await _endre(uow, profil, lambda p: p.fordelt(envelope.subject, data.kategori.value, data.kommunenummer))


async def fordeling_slutt(uow: UnitOfWork, envelope: Envelope, data) -> None:
    """Refused, cancelled or withdrawn: the kommune loses the case's persons."""
    for profil in await store.lock_sak(uow.conn, envelope.subject):
        await _endre(uow, profil, Profil.fordeling_slutt)


async def bosatt(uow: UnitOfWork, envelope: Envelope, data: Bosatt) -> None:
    # The household moves together: its persons named in the event, and any a correction
    # added that bosetting had not applied when it settled the case (protected ones never).
    await _lock_hushald(uow, envelope.subject)
    for person_id in sorted(set(data.personar) | set(await store.synlege_i_sak(uow.conn, envelope.subject))):
        profil = await store.lock_or_new(uow.conn, person_id)
        await _endre(uow, profil, lambda p: p.busett(data.kommunenummer))


EVENT_HANDLERS = {
    "vedtak.fattet": vedtak,
    "vedtak.korrigert": vedtak,
    "kartlegging.fullfort": kartlegging_fullfort,
    "kartlegging.korrigert": kartlegging_fullfort,  # a corrected version replaces the profile's content
    "kartlegging.karriererettleiing": karriererettleiing,
    "mottak.saerlege_behov_flagga": behov_flagga,
    "bosetting.fordelt": fordelt,
    "bosetting.avslatt": fordeling_slutt,
    "bosetting.fordeling_oppheva": fordeling_slutt,
    "bosetting.trukke": fordeling_slutt,
    "bosetting.bosatt": bosatt,
}


# --- commands from the API ---------------------------------------------------------------


class FnrIBruk(ValueError):
    """The fødselsnummer is linked to another person id already."""


async def registrer_identitet(rt: Runtime, person_id: str, fnr: str, skjerma: bool) -> None:
    """Link a person id to its fødselsnummer (encrypted; found by keyed hash)."""
    n = nokkelsett()
    async with rt.pool.acquire() as conn, conn.transaction():
        ok = await store.registrer_identitet(
            conn, person_id, identitet.oppslagsnokkel(n, fnr), identitet.krypter(n, fnr, person_id), n.versjon
        )
        if not ok:
            raise FnrIBruk()
        if skjerma:
            await store.skjerm(conn, person_id)


async def finn_person(rt: Runtime, fnr: str) -> str | None:
    async with rt.pool.acquire() as conn:
        return await store.person_for_oppslag(conn, identitet.oppslagsnokkel(nokkelsett(), fnr))


async def les_profil(rt: Runtime, tilgang: Tilgang, person_id: str | None, formal: str, request_id: UUID) -> dict | None:
    """One consumer's read of one person under its policy, answered only once its entry in
    the audit log is committed (no read goes unlogged, refusals included; entries of
    concurrent reads share a commit, see revisor.py). None: unknown, protected, or nothing
    in the fields the policy grants (all answered alike). Raises Avslag, after its entry is
    committed, when the policy refuses."""
    avslag, vist = None, None
    felt = tilgang.policy.felt
    async with rt.pool.acquire() as conn:
        profil = await store.get_profil(conn, person_id, for_update=False) if person_id else None
        try:
            tilgang.sjekk_formal(formal)
            if profil is not None and not profil.skjerma:
                tilgang.sjekk_person(profil.kommunenummer)
                vist = profil.vis(felt, await _fnr(conn, person_id) if "fodselsnummer" in felt else None)
        except Avslag as refused:
            avslag = refused
    if avslag:
        utfall, vist_felt = f"refused: {avslag.grunn}"[:200], []
    elif vist is not None and any(not tom(v) for k, v in vist.items() if k != "person_id"):
        utfall, vist_felt = "served", list(felt)
    else:
        vist = None
        utfall, vist_felt = ("skjerma" if profil and profil.skjerma else "not_found"), []
    await revisor.for_pool(rt.pool).logg(_oppforing(tilgang, person_id, vist_felt, formal, request_id, utfall))
    if avslag:
        raise avslag
    return vist


async def _fnr(conn: asyncpg.Connection, person_id: str) -> str | None:
    blob = await store.kryptert_fnr(conn, person_id)
    return identitet.dekrypter(nokkelsett(), blob, person_id) if blob else None


def _oppforing(tilgang: Tilgang, person_id, felt, formal, request_id, utfall) -> dict:
    """An audit entry (store.log_accesses)."""
    return {
        "konsument_org": tilgang.konsument.org,
        "klient": tilgang.klient.klient_id,
        "person_id": person_id or "-",
        "felt": felt,
        "formal": formal,
        "request_id": request_id,
        "utfall": utfall,
    }
