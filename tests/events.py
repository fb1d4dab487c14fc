"""Builders for test events: a household's vedtak and the envelopes a chain would carry."""

import secrets
from datetime import date

from shared.catalogue import (
    KartleggingFullfort,
    KartleggingStartet,
    Kartleggingstype,
    Kategori,
    MottakStatusEndret,
    Sakstype,
    Utdanning,
    VedtakFattet,
    VedtakPerson,
)
from shared.publish import envelope_for

UDI = "urn:no:udi"
KARTLEGGING = "urn:chain:kartlegging"


def new_sak_id() -> str:
    return f"sak-test-{secrets.token_hex(6)}"


def new_person_id() -> str:
    return "p-" + secrets.token_hex(10)


def vedtak(n_adults: int = 2, n_children: int = 1, kategori: Kategori = Kategori.barnefamilie, **extra) -> VedtakFattet:
    personar = [VedtakPerson(person_id=new_person_id(), fodselsar=1985, kjonn="K") for _ in range(n_adults)]
    personar += [VedtakPerson(person_id=new_person_id(), fodselsar=2015, kjonn="M") for _ in range(n_children)]
    fields = dict(
        reg_nummer="REG-" + secrets.token_hex(4).upper(),
        kategori=kategori,
        sakstype=Sakstype.asyl,
        vedtakstype="opphald",
        vedtaksdato=date(2023, 3, 1),
        mottak_id="mottak-01",
        personar=personar,
    )
    return VedtakFattet(**(fields | extra))


def fullfort(person_id: str, komplett: bool) -> KartleggingFullfort:
    return KartleggingFullfort(
        person_id=person_id,
        kartleggingstype=Kartleggingstype.ordinaer,
        utdanning=Utdanning(niva="bachelor", ar=15),
        sak_komplett=komplett,
    )


def case_history(sak_id: str) -> list:
    """All events bosetting consumes for one family, as their producers would number them."""
    v = vedtak()
    adults = [p.person_id for p in v.personar if p.fodselsar < 2000]
    return [
        envelope_for(v, sak_id, UDI, 1),
        envelope_for(MottakStatusEndret(mottak_id="mottak-01", status="innkvartert", dato=date(2023, 3, 2)), sak_id, "urn:no:mottak:1", 1),
        envelope_for(MottakStatusEndret(mottak_id="mottak-07", status="flytta", dato=date(2023, 4, 2)), sak_id, "urn:no:mottak:1", 2),
        envelope_for(KartleggingStartet(kartleggingstype=Kartleggingstype.ordinaer, personar=adults), sak_id, KARTLEGGING, 1),
        envelope_for(fullfort(adults[0], False), sak_id, KARTLEGGING, 2),
        envelope_for(fullfort(adults[1], True), sak_id, KARTLEGGING, 3),
    ]
