"""Kartlegging's domain, with no I/O: who is mapped, and when a case is complete."""

from datetime import date

import pytest

from services.kartlegging.domain import (
    DomainError,
    FeilSkjema,
    Kartleggingssak,
    Manglar,
    fullstendigheit,
    kompetanse,
    skal_kartleggjast,
)
from services.kartlegging.skjema import FORENKLA_V1, ORDINAER_V1, Eldre
from shared.catalogue import (
    KartleggingFullfort,
    KartleggingKorrigert,
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


# A complete ordinary mapping (every critical field answered).
INNHALD = {
    "schema": ORDINAER_V1,
    "heimel": "integreringslova_6",
    "utdanning": {"niva": "bachelor", "fagfelt": "sjukepleie", "ar": 15, "dokumentert": True},
    "arbeid": [{"yrke": "sjukepleiar", "sektor": "helse", "ar": 6}],
    "sprak": {"norsk": "A2", "engelsk": "B2", "andre": [{"sprak": "arabisk", "niva": "morsmal"}]},
    "digitale_ferdigheiter": "gode",
    "forerkort": "B",
    "bil": False,
    "helse": {"indikatorar": ["psykisk_helse_oppfolging", "nedsett_funksjonsevne"]},
    "nettverk_kommunar": ["4601"],
    "onske": {"arbeid": ["sjukepleiar"], "utdanning": []},
}
MINIMAL_FORENKLA = {
    "schema": FORENKLA_V1,
    "heimel": "integreringslova_6",
    "utdanning": {"niva": "ingen", "ar": 0},
    "sprak": {"norsk": "ingen", "engelsk": "A1"},
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
    assert [(s.sprak, s.niva) for s in first[0].sprak] == [("norsk", "A2"), ("engelsk", "B2"), ("arabisk", "morsmal")]
    assert first[0].fullstendigheit == 1.0 and first[0].manglande_felt == []
    assert not sak.komplett

    second = sak.fullfor(pid(1), INNHALD | {"utdanning": {"niva": "ingen", "ar": 0}})
    assert len(second) == 1
    assert second[0].person_id == pid(1)
    assert second[0].sak_komplett is True
    assert sak.komplett


def test_a_case_of_one_is_complete_with_its_first_mapping():
    sak, _ = Kartleggingssak.opne(SAK, vedtak([1980], sakstype=Sakstype.kollektivt_vern))
    (event,) = sak.fullfor(pid(0), MINIMAL_FORENKLA)
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
    changed = INNHALD | {"utdanning": {"niva": "master", "fagfelt": "sjukepleie", "ar": 17}}
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


# --- schemas, required fields, completeness ------------------------------------------------


def test_ordinary_requires_more_than_forenkla():
    sak, _ = Kartleggingssak.opne(SAK, vedtak([1980]))
    with pytest.raises(Manglar) as exc:
        sak.fullfor(pid(0), MINIMAL_FORENKLA | {"schema": ORDINAER_V1})
    assert exc.value.felt == ["arbeid", "digitale_ferdigheiter", "helse"]
    assert sak.personar[pid(0)] is None

    forenkla, _ = Kartleggingssak.opne(SAK, vedtak([1980], sakstype=Sakstype.kollektivt_vern))
    with pytest.raises(Manglar) as exc:
        forenkla.fullfor(pid(0), {"schema": FORENKLA_V1, "utdanning": {"niva": "ingen", "ar": 0}})
    assert exc.value.felt == ["heimel", "sprak.norsk", "sprak.engelsk"]
    (event,) = forenkla.fullfor(pid(0), MINIMAL_FORENKLA)
    assert event.kartleggingstype == Kartleggingstype.forenkla


def test_an_ordinary_case_refuses_the_simplified_schema_but_not_the_other_way_round():
    sak, _ = Kartleggingssak.opne(SAK, vedtak([1980]))
    with pytest.raises(FeilSkjema):
        sak.fullfor(pid(0), MINIMAL_FORENKLA)
    with pytest.raises(FeilSkjema):
        sak.lagre_utkast(pid(0), MINIMAL_FORENKLA)
    forenkla, _ = Kartleggingssak.opne(SAK, vedtak([1980], sakstype=Sakstype.kollektivt_vern))
    assert len(forenkla.fullfor(pid(0), INNHALD)) == 1


def test_completeness_counts_the_critical_fields_of_the_schema():
    assert fullstendigheit(INNHALD) == (1.0, [])
    # ordinary: 11 critical fields; fagfelt does not apply without education beyond compulsory school
    assert fullstendigheit({"schema": ORDINAER_V1, "utdanning": {"niva": "bachelor", "ar": 15}}) == (
        round(1 / 11, 4),
        ["heimel", "utdanning.fagfelt", "arbeid", "sprak.norsk", "sprak.engelsk", "digitale_ferdigheiter",
         "forerkort", "helse", "nettverk_kommunar", "onske"],
    )
    assert fullstendigheit({"schema": ORDINAER_V1, "utdanning": {"niva": "ingen", "ar": 0}}) == (0.1, [
        "heimel", "arbeid", "sprak.norsk", "sprak.engelsk", "digitale_ferdigheiter", "forerkort", "helse",
        "nettverk_kommunar", "onske"])
    # forenkla: 6 critical fields
    assert fullstendigheit(MINIMAL_FORENKLA) == (round(4 / 6, 4), ["arbeid", "nettverk_kommunar"])
    assert fullstendigheit(MINIMAL_FORENKLA | {"arbeid": [], "nettverk_kommunar": []}) == (1.0, [])


def test_the_bus_gets_coarse_needs_only():
    bus = kompetanse(INNHALD)
    assert bus["saerlege_behov"] == ["oppfolging_helse"]  # nedsett_funksjonsevne stays here
    assert "helse" not in bus and "onske" not in bus and "bil" not in bus
    event = KartleggingFullfort(person_id=pid(0), kartleggingstype=Kartleggingstype.ordinaer, sak_komplett=True, **bus)
    dumped = event.model_dump_json()
    assert "psykisk" not in dumped and "funksjonsevne" not in dumped and "sjukepleiar\"]" not in dumped


def test_draft_then_complete_from_the_draft():
    sak, _ = Kartleggingssak.opne(SAK, vedtak([1980]))
    sak.lagre_utkast(pid(0), {"schema": ORDINAER_V1, "heimel": "integreringslova_6"})
    sak.lagre_utkast(pid(0), INNHALD)  # any number of times
    assert sak.personar[pid(0)] is None
    (event,) = sak.fullfor(pid(0))
    assert event.person_id == pid(0) and sak.personar[pid(0)] == INNHALD and sak.versjon[pid(0)] == 1
    assert pid(0) not in sak.utkast
    assert sak.fullfor(pid(0)) == []  # completing again: no-op
    with pytest.raises(DomainError):
        sak.lagre_utkast(pid(0), INNHALD)


def test_complete_without_a_draft_is_refused():
    sak, _ = Kartleggingssak.opne(SAK, vedtak([1980]))
    with pytest.raises(DomainError, match="no draft"):
        sak.fullfor(pid(0))


def test_a_correction_is_a_new_version_and_the_same_content_is_a_no_op():
    sak, _ = Kartleggingssak.opne(SAK, vedtak([1980, 1983]))
    with pytest.raises(DomainError):
        sak.korriger(pid(0), INNHALD, "too early")
    sak.fullfor(pid(0), INNHALD)
    changed = INNHALD | {"forerkort": "tyngre"}
    (event,) = sak.korriger(pid(0), changed, "licence class was wrong")
    assert isinstance(event, KartleggingKorrigert)
    assert event.versjon == 2 and event.grunn == "licence class was wrong" and event.forerkort == "tyngre"
    assert sak.korriger(pid(0), changed, "again") == []
    (event,) = sak.korriger(pid(0), INNHALD, "back")
    assert event.versjon == 3
    with pytest.raises(Manglar):
        sak.korriger(pid(0), {"schema": ORDINAER_V1, "utdanning": {"niva": "ingen", "ar": 0}}, "incomplete")


def test_the_original_body_becomes_the_cases_schema_with_what_was_sent():
    eldre = Eldre.model_validate({
        "utdanning": {"niva": "bachelor", "ar": 15},
        "sprak": [{"sprak": "arabisk", "niva": "morsmal"}, {"sprak": "engelsk", "niva": "B2"}],
        "saerlege_behov": ["tilrettelagt_bustad"],
    })
    innhald = eldre.innhald(ORDINAER_V1)
    assert innhald == {
        "schema": ORDINAER_V1,
        "utdanning": {"niva": "bachelor", "ar": 15, "dokumentert": False},
        "sprak": {"engelsk": "B2", "andre": [{"sprak": "arabisk", "niva": "morsmal"}]},
        "helse": {"indikatorar": ["tilrettelagt_bustad"]},
    }
    sak, _ = Kartleggingssak.opne(SAK, vedtak([1980]))
    (event,) = sak.fullfor(pid(0), innhald, pakravde=False)
    assert event.saerlege_behov == ["tilrettelagt_bustad"]
    assert event.manglande_felt == ["heimel", "utdanning.fagfelt", "arbeid", "sprak.norsk", "digitale_ferdigheiter",
                                    "forerkort", "nettverk_kommunar", "onske"]
    assert event.fullstendigheit == round(3 / 11, 4)
