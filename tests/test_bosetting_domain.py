"""Bosetting's domain, with no I/O: the sak state machine and the greedy allocation."""

from datetime import date

import pytest

from services.bosetting.domain import (
    DomainError,
    Kapasitet,
    Person,
    Sak,
    Status,
    UgyldigOvergang,
    fordel_saker,
    velg_kommune,
)
from shared.catalogue import AvtaleInngatt, Avslatt, Bosatt, Fordelt, Kategori

VEDTAKSDATO = date(2023, 3, 1)
DAG = date(2023, 9, 1)


def sak(n: int = 3, kategori: Kategori = Kategori.barnefamilie, sak_id: str = "sak-test-000001", **extra) -> Sak:
    personar = [Person(f"p-{i:016x}{sak_id[-6:]}", 1985 if i < 2 else 2015, "K") for i in range(n)]
    fields = dict(
        sak_id=sak_id,
        reg_nummer="REG-ABC123",
        kategori=kategori,
        sakstype="asyl",
        vedtaksdato=VEDTAKSDATO,
        personar=personar,
    )
    return Sak(**(fields | extra))


def klar(**kw) -> Sak:
    s = sak(**kw)
    s.kartlegging_fullfort(True)
    assert s.status == Status.fordelingsklar
    return s


def fordelt(kommune: str = "0301", **kw) -> Sak:
    s = klar(**kw)
    s.fordel(kommune)
    return s


def sokt_ut(kommune: str = "0301", dato: date = DAG, **kw) -> Sak:
    s = fordelt(kommune, **kw)
    s.avtal(kommune, dato)
    return s


def bosatt(**kw) -> Sak:
    s = sokt_ut(**kw)
    s.bosett(DAG)
    return s


# --- valid transitions -----------------------------------------------------------------


def test_a_new_sak_is_under_kartlegging():
    assert sak().status == Status.under_kartlegging


def test_incomplete_kartlegging_keeps_the_sak_under_kartlegging():
    s = sak()
    assert s.kartlegging_fullfort(False) == []
    assert s.status == Status.under_kartlegging


def test_complete_kartlegging_makes_the_sak_fordelingsklar():
    s = sak()
    assert s.kartlegging_fullfort(True) == []
    assert s.status == Status.fordelingsklar


@pytest.mark.parametrize("later", [fordelt, sokt_ut, bosatt])
def test_a_late_kartlegging_does_not_move_an_allocated_sak_back(later):
    s = later()
    before = s.status
    assert s.kartlegging_fullfort(True) == []
    assert s.status == before


def test_fordel_allocates_and_emits_fordelt_with_every_person():
    s = klar(n=4)
    events = s.fordel("1103")
    assert s.status == Status.fordelt
    assert s.kommunenummer == "1103"
    assert len(events) == 1
    (e,) = events
    assert isinstance(e, Fordelt)
    assert e.kommunenummer == "1103"
    assert e.reg_nummer == "REG-ABC123"
    assert e.kategori == Kategori.barnefamilie
    assert e.personar == [p.person_id for p in s.personar]
    assert len(e.personar) == 4


def test_avtal_agrees_a_date_and_emits_avtale_inngatt():
    s = fordelt("1103")
    events = s.avtal("1103", DAG)
    assert s.status == Status.sokt_ut
    assert s.busetjingsdato == DAG
    assert s.kommunenummer == "1103"
    assert events == [AvtaleInngatt(kommunenummer="1103", busetjingsdato=DAG)]


def test_avsla_returns_the_sak_to_fordelingsklar_and_remembers_the_kommune():
    s = fordelt("1103")
    events = s.avsla("1103", "ingen bustad")
    assert s.status == Status.fordelingsklar
    assert s.kommunenummer is None
    assert s.avslatt_av == ["1103"]
    assert events == [Avslatt(kommunenummer="1103", grunn="ingen bustad")]


def test_a_refused_sak_can_be_allocated_elsewhere_and_refusals_accumulate():
    s = fordelt("1103")
    s.avsla("1103", "nei")
    s.fordel("0301")
    s.avsla("0301", "nei")
    assert s.avslatt_av == ["1103", "0301"]
    assert s.status == Status.fordelingsklar


def test_fordel_to_a_kommune_that_refused_is_an_error():
    s = fordelt("1103")
    s.avsla("1103", "nei")
    with pytest.raises(DomainError):
        s.fordel("1103")
    assert s.status == Status.fordelingsklar
    assert s.kommunenummer is None


def test_bosett_settles_and_emits_bosatt_with_persons_and_vedtaksdato():
    s = sokt_ut("1103", n=3)
    settled = date(2023, 9, 15)
    events = s.bosett(settled)
    assert s.status == Status.bosatt
    assert s.busetjingsdato == settled
    (e,) = events
    assert isinstance(e, Bosatt)
    assert e.kommunenummer == "1103"
    assert e.busetjingsdato == settled
    assert e.kategori == Kategori.barnefamilie
    assert e.vedtaksdato == VEDTAKSDATO
    assert e.personar == [p.person_id for p in s.personar]


# --- invalid transitions ---------------------------------------------------------------


@pytest.mark.parametrize("state", [sak, fordelt, sokt_ut, bosatt], ids=lambda f: f.__name__)
def test_fordel_only_from_fordelingsklar(state):
    s = state()
    before = (s.status, s.kommunenummer)
    with pytest.raises(UgyldigOvergang):
        s.fordel("1103")
    assert (s.status, s.kommunenummer) == before


@pytest.mark.parametrize("state", [sak, klar, bosatt], ids=lambda f: f.__name__)
def test_avtal_only_from_fordelt(state):
    s = state()
    before = s.status
    with pytest.raises(UgyldigOvergang):
        s.avtal("0301", date(2024, 1, 1))
    assert s.status == before


def test_avtal_by_a_kommune_the_sak_is_not_allocated_to_is_refused():
    s = fordelt("0301")
    with pytest.raises(UgyldigOvergang):
        s.avtal("1103", DAG)
    assert s.status == Status.fordelt
    assert s.busetjingsdato is None


def test_avtal_again_with_another_date_is_refused():
    s = sokt_ut("0301", DAG)
    with pytest.raises(UgyldigOvergang):
        s.avtal("0301", date(2023, 10, 1))
    assert s.busetjingsdato == DAG


@pytest.mark.parametrize("state", [sak, klar, sokt_ut, bosatt], ids=lambda f: f.__name__)
def test_avsla_only_from_fordelt(state):
    s = state()
    before = s.status
    with pytest.raises(UgyldigOvergang):
        s.avsla("0301", "nei")
    assert s.status == before
    assert s.avslatt_av == []


def test_avsla_by_a_kommune_the_sak_is_not_allocated_to_is_refused():
    s = fordelt("0301")
    with pytest.raises(UgyldigOvergang):
        s.avsla("1103", "nei")
    assert s.status == Status.fordelt
    assert s.avslatt_av == []


@pytest.mark.parametrize("state", [sak, klar, fordelt], ids=lambda f: f.__name__)
def test_bosett_only_from_sokt_ut(state):
    s = state()
    before = s.status
    with pytest.raises(UgyldigOvergang):
        s.bosett(DAG)
    assert s.status == before


def test_ugyldig_overgang_is_a_domain_error():
    assert issubclass(UgyldigOvergang, DomainError)


# --- idempotent repeats ----------------------------------------------------------------


def test_avtal_twice_with_the_same_date_is_a_no_op():
    s = sokt_ut("0301", DAG)
    assert s.avtal("0301", DAG) == []
    assert s.status == Status.sokt_ut
    assert s.busetjingsdato == DAG


def test_bosett_twice_is_a_no_op():
    s = bosatt()
    assert s.bosett(DAG) == []
    assert s.status == Status.bosatt


def test_avsla_repeated_is_a_no_op():
    s = fordelt("0301")
    s.avsla("0301", "nei")
    assert s.avsla("0301", "nei") == []
    assert s.avsla("0301", "nei") == []
    assert s.status == Status.fordelingsklar
    assert s.avslatt_av == ["0301"]



def test_avsla_repeated_after_reallocation_is_a_no_op():
    s = fordelt("0301")
    s.avsla("0301", "nei")
    s.fordel("1103")  # the allocator runs between the refusal and its retry
    assert s.avsla("0301", "nei") == []
    assert s.status == Status.fordelt and s.kommunenummer == "1103"


def test_avtal_repeated_after_settlement_is_a_no_op():
    s = fordelt("0301")
    s.avtal("0301", date(2023, 6, 1))
    s.bosett(date(2023, 6, 1))
    assert s.avtal("0301", date(2023, 6, 1)) == []
    assert s.status == Status.bosatt


# --- velg_kommune ----------------------------------------------------------------------


def kap(kommune: str, ledige: int, kategori: Kategori = Kategori.barnefamilie, brukt: int = 0) -> Kapasitet:
    return Kapasitet(kommune, kategori, ledige + brukt, brukt)


def test_a_household_is_never_split_across_too_few_places():
    s = klar(n=4)
    assert velg_kommune(s, [kap("0301", 3), kap("1103", 2, brukt=5)]) is None
    chosen = velg_kommune(s, [kap("0301", 3), kap("1103", 4, brukt=5)])
    assert chosen is not None and chosen.kommunenummer == "1103"


def test_a_household_may_take_exactly_the_free_places():
    s = klar(n=4)
    chosen = velg_kommune(s, [kap("0301", 4)])
    assert chosen is not None and chosen.kommunenummer == "0301"


def test_only_kommunar_with_places_in_the_sak_group_are_candidates():
    s = klar(n=1, kategori=Kategori.einsleg_mindrearig)
    kapasitet = [kap("0301", 50, Kategori.barnefamilie), kap("1103", 50, Kategori.vaksen)]
    assert velg_kommune(s, kapasitet) is None
    kapasitet.append(kap("1108", 1, Kategori.einsleg_mindrearig))
    chosen = velg_kommune(s, kapasitet)
    assert chosen is not None
    assert (chosen.kommunenummer, chosen.kategori) == ("1108", Kategori.einsleg_mindrearig)


def test_a_refusing_kommune_is_never_chosen_again():
    s = fordelt("0301")
    s.avsla("0301", "nei")
    chosen = velg_kommune(s, [kap("0301", 100), kap("1103", 5)])
    assert chosen is not None and chosen.kommunenummer == "1103"
    s.fordel("1103")
    s.avsla("1103", "nei")
    assert velg_kommune(s, [kap("0301", 100), kap("1103", 5)]) is None


def test_a_privately_living_household_goes_to_its_bustadkommune_when_it_has_room():
    s = klar(n=3, bustadkommune="1106")
    chosen = velg_kommune(s, [kap("0301", 100), kap("1106", 3), kap("1103", 50)])
    assert chosen is not None and chosen.kommunenummer == "1106"


def test_a_privately_living_household_goes_elsewhere_when_its_bustadkommune_is_full():
    s = klar(n=3, bustadkommune="1106")
    chosen = velg_kommune(s, [kap("0301", 10), kap("1106", 2), kap("1103", 50)])
    assert chosen is not None and chosen.kommunenummer == "1103"


def test_a_bustadkommune_without_places_in_the_group_is_not_chosen():
    s = klar(n=1, bustadkommune="1106")
    chosen = velg_kommune(s, [kap("1106", 10, Kategori.vaksen), kap("0301", 2)])
    assert chosen is not None and chosen.kommunenummer == "0301"


def test_otherwise_the_kommune_with_most_free_places_is_chosen():
    s = klar(n=2)
    kapasitet = [kap("0301", 5), kap("1103", 12, brukt=30), kap("1108", 8)]
    chosen = velg_kommune(s, kapasitet)
    assert chosen is not None and chosen.kommunenummer == "1103"


# --- fordel_saker ----------------------------------------------------------------------


def test_fordel_saker_reserves_places_as_it_goes():
    a = klar(n=3, sak_id="sak-test-00000a")
    b = klar(n=3, sak_id="sak-test-00000b")
    oslo = kap("0301", 4)
    result = fordel_saker([a, b], [oslo])
    assert [s.sak_id for s, _ in result] == ["sak-test-00000a"]
    assert a.status == Status.fordelt and a.kommunenummer == "0301"
    assert b.status == Status.fordelingsklar and b.kommunenummer is None
    assert oslo.brukt == 3 and oslo.ledige == 1


def test_fordel_saker_spreads_households_when_the_first_kommune_fills():
    a = klar(n=3, sak_id="sak-test-00000a")
    b = klar(n=3, sak_id="sak-test-00000b")
    kapasitet = [kap("0301", 4), kap("1103", 3)]
    result = fordel_saker([a, b], kapasitet)
    assert {s.sak_id: s.kommunenummer for s, _ in result} == {"sak-test-00000a": "0301", "sak-test-00000b": "1103"}
    assert [k.ledige for k in kapasitet] == [1, 0]


def test_fordel_saker_returns_the_fordelt_events():
    a = klar(n=2)
    result = fordel_saker([a], [kap("0301", 10)])
    assert len(result) == 1
    s, events = result[0]
    assert s is a
    assert len(events) == 1 and isinstance(events[0], Fordelt)
    assert events[0].kommunenummer == "0301"
    assert events[0].personar == [p.person_id for p in a.personar]


def test_without_a_candidate_the_sak_stays_fordelingsklar():
    s = klar(n=5)
    kapasitet = [kap("0301", 4), kap("1103", 50, Kategori.vaksen)]
    assert fordel_saker([s], kapasitet) == []
    assert s.status == Status.fordelingsklar
    assert s.kommunenummer is None
    assert [k.brukt for k in kapasitet] == [0, 0]
