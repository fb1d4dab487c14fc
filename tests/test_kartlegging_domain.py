"""Kartlegging's domain, with no I/O: who is mapped, and when a case is complete."""

from datetime import date

import pytest

from services.kartlegging.domain import DomainError, Kartleggingssak, skal_kartleggjast
from shared.catalogue import (
    KartleggingFullfort,
    KartleggingStartet,
    Kartleggingstype,
    Kategori,
    Sakstype,
    VedtakFattet,
    VedtakPerson,
)

SAK = "sak-test-kartl1"


def pid(n: int) -> str:
    return f"p-{n:020x}"


def vedtak(fodselsar: list[int], kategori=Kategori.barnefamilie, sakstype=Sakstype.asyl, ar: int = 2023) -> VedtakFattet:
    return VedtakFattet(
        reg_nummer="REG-ABC123",
        kategori=kategori,
        sakstype=sakstype,
        vedtakstype="opphald",
        vedtaksdato=date(ar, 6, 30),
        personar=[VedtakPerson(person_id=pid(i), fodselsar=y, kjonn="K") for i, y in enumerate(fodselsar)],
    )


INNHALD = {
    "utdanning": {"niva": "bachelor", "fagfelt": "sjukepleie", "ar": 15, "dokumentert": True},
    "arbeid": [{"yrke": "sjukepleiar", "sektor": "helse", "ar": 6}],
    "sprak": [{"sprak": "arabisk", "niva": "morsmal"}, {"sprak": "engelsk", "niva": "B2"}],
}


# --- who is mapped ---------------------------------------------------------------------


def test_adults_are_mapped_and_children_are_not():
    sak, events = Kartleggingssak.opne(SAK, vedtak([1980, 1983, 2012, 2019]))
    assert list(sak.personar) == [pid(0), pid(1)]
    assert all(v is None for v in sak.personar.values())
    assert events == [KartleggingStartet(kartleggingstype=Kartleggingstype.ordinaer, personar=[pid(0), pid(1)])]


def test_age_is_counted_at_the_vedtak_year():
    # born 2005: 18 in 2023 (mapped); born 2006: 17 in 2023 (not mapped)
    sak, _ = Kartleggingssak.opne(SAK, vedtak([1980, 2005, 2006], ar=2023))
    assert list(sak.personar) == [pid(0), pid(1)]
    # the same household decided a year later: the 2006-born is now 18
    sak, _ = Kartleggingssak.opne(SAK, vedtak([1980, 2005, 2006], ar=2024))
    assert list(sak.personar) == [pid(0), pid(1), pid(2)]


def test_skal_kartleggjast_boundaries():
    d = date(2023, 1, 1)
    assert skal_kartleggjast(2005, Kategori.vaksen, d)
    assert not skal_kartleggjast(2006, Kategori.vaksen, d)
    assert not skal_kartleggjast(2006, Kategori.barnefamilie, d)
    assert skal_kartleggjast(2015, Kategori.einsleg_mindrearig, d)


def test_every_unaccompanied_minor_is_mapped():
    sak, events = Kartleggingssak.opne(SAK, vedtak([2008, 2010, 2012], kategori=Kategori.einsleg_mindrearig))
    assert list(sak.personar) == [pid(0), pid(1), pid(2)]
    assert events[0].personar == [pid(0), pid(1), pid(2)]


def test_collective_protection_gets_the_simplified_mapping():
    sak, events = Kartleggingssak.opne(SAK, vedtak([1980, 2015], sakstype=Sakstype.kollektivt_vern))
    assert sak.kartleggingstype == Kartleggingstype.forenkla
    assert events[0].kartleggingstype == Kartleggingstype.forenkla


@pytest.mark.parametrize("sakstype", [Sakstype.asyl, Sakstype.overforing, Sakstype.familiesameining])
def test_other_sakstypar_get_the_ordinary_mapping(sakstype):
    sak, events = Kartleggingssak.opne(SAK, vedtak([1980], sakstype=sakstype))
    assert sak.kartleggingstype == Kartleggingstype.ordinaer
    assert events[0].kartleggingstype == Kartleggingstype.ordinaer


def test_a_household_with_no_adult_maps_its_oldest_person():
    sak, events = Kartleggingssak.opne(SAK, vedtak([2012, 2007, 2010]))
    assert list(sak.personar) == [pid(1)]
    assert events[0].personar == [pid(1)]


# --- completing ------------------------------------------------------------------------


def test_fullfor_emits_kartlegging_fullfort_and_completes_on_the_last_person():
    sak, _ = Kartleggingssak.opne(SAK, vedtak([1980, 1983, 2015]))
    assert not sak.komplett

    first = sak.fullfor(pid(0), INNHALD)
    assert len(first) == 1 and isinstance(first[0], KartleggingFullfort)
    assert first[0].person_id == pid(0)
    assert first[0].sak_komplett is False
    assert first[0].kartleggingstype == Kartleggingstype.ordinaer
    assert first[0].utdanning.niva == "bachelor" and first[0].utdanning.ar == 15
    assert [a.yrke for a in first[0].arbeid] == ["sjukepleiar"]
    assert [s.niva for s in first[0].sprak] == ["morsmal", "B2"]
    assert not sak.komplett

    second = sak.fullfor(pid(1), {"utdanning": {"niva": "ingen", "ar": 0}})
    assert len(second) == 1
    assert second[0].person_id == pid(1)
    assert second[0].sak_komplett is True
    assert sak.komplett


def test_a_case_of_one_is_complete_with_its_first_mapping():
    sak, _ = Kartleggingssak.opne(SAK, vedtak([1980], sakstype=Sakstype.kollektivt_vern))
    (event,) = sak.fullfor(pid(0), INNHALD)
    assert event.sak_komplett is True
    assert event.kartleggingstype == Kartleggingstype.forenkla


def test_identical_resubmission_is_a_no_op():
    sak, _ = Kartleggingssak.opne(SAK, vedtak([1980, 1983]))
    sak.fullfor(pid(0), INNHALD)
    assert sak.fullfor(pid(0), dict(INNHALD)) == []
    assert sak.personar[pid(0)] == INNHALD
    assert not sak.komplett


def test_different_resubmission_is_refused_and_keeps_the_first():
    sak, _ = Kartleggingssak.opne(SAK, vedtak([1980, 1983]))
    sak.fullfor(pid(0), INNHALD)
    changed = INNHALD | {"utdanning": {"niva": "master", "ar": 17}}
    with pytest.raises(DomainError):
        sak.fullfor(pid(0), changed)
    assert sak.personar[pid(0)] == INNHALD


def test_an_unknown_person_raises_key_error():
    sak, _ = Kartleggingssak.opne(SAK, vedtak([1980, 2015]))
    with pytest.raises(KeyError):
        sak.fullfor(pid(99), INNHALD)
    # a child of the household is not to be mapped either
    with pytest.raises(KeyError):
        sak.fullfor(pid(1), INNHALD)
    assert sak.personar == {pid(0): None}
