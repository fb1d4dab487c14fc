"""Bosetting's domain, with no I/O: the sak state machine, its places and its deadline.

(Which kommune a household goes to is decided in allokering.py, tested in test_allokering.py.)
"""

from datetime import date
from uuid import uuid4

import pytest

from services.bosetting.domain import (
    IkkjeKommunensSak,
    FINAL,
    HELD,
    DomainError,
    Person,
    Sak,
    Status,
    UgyldigOvergang,
    frist_for,
    legg_til_manader,
)
from shared.catalogue import (
    Arbeidserfaring,
    AvtaleInngatt,
    Avslatt,
    Bosatt,
    Fordelt,
    FordelingOppheva,
    FristNaermar,
    FristOverskriden,
    KartleggingFullfort,
    KartleggingKorrigert,
    Kartleggingstype,
    Kategori,
    Sakstype,
    Trukke,
    Utdanning,
    VedtakFattet,
    VedtakKorrigert,
    VedtakPerson,
)

VEDTAKSDATO = date(2023, 3, 1)
DAG = date(2023, 9, 1)


def pid(i: int, sak_id: str = "sak-test-000001") -> str:
    return f"p-{i:016x}{sak_id[-6:]}"


def sak(n: int = 3, kategori: Kategori = Kategori.barnefamilie, sak_id: str = "sak-test-000001", **extra) -> Sak:
    personar = [Person(pid(i, sak_id), 1985 if i < 2 else 2015, "K") for i in range(n)]
    fields = dict(
        sak_id=sak_id,
        reg_nummer="REG-ABC123",
        kategori=kategori,
        sakstype="asyl",
        vedtaksdato=VEDTAKSDATO,
        personar=personar,
    )
    return Sak(**(fields | extra))


def fullfort(person_id: str, komplett: bool, **extra) -> KartleggingFullfort:
    fields = dict(
        person_id=person_id,
        kartleggingstype=Kartleggingstype.ordinaer,
        utdanning=Utdanning(niva="bachelor", ar=15),
        sak_komplett=komplett,
    )
    return KartleggingFullfort(**(fields | extra))


def klar(**kw) -> Sak:
    s = sak(**kw)
    s.kartlegging_fullfort(fullfort(s.personar[0].person_id, True))
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


def bosatt(kommune: str = "0301", **kw) -> Sak:
    s = sokt_ut(kommune, **kw)
    s.bosett(kommune, DAG)
    return s


def trukke(**kw) -> Sak:
    s = klar(**kw)
    s.trekk("utreist")
    return s


def vperson(i: int, fodselsar: int = 1985, skjerma: bool = False) -> VedtakPerson:
    return VedtakPerson(person_id=pid(i), fodselsar=fodselsar, kjonn="M", skjerma=skjerma)


def vedtak(personar: list[VedtakPerson], kategori: Kategori = Kategori.barnefamilie, **extra) -> VedtakFattet:
    fields = dict(
        reg_nummer="REG-ABC123",
        kategori=kategori,
        sakstype=Sakstype.asyl,
        vedtakstype="opphald",
        vedtaksdato=VEDTAKSDATO,
        mottak_id="mottak-01",
        personar=personar,
    )
    return VedtakFattet(**(fields | extra))


def korrigert(personar: list[VedtakPerson], kategori: Kategori = Kategori.barnefamilie) -> VedtakKorrigert:
    return VedtakKorrigert(reg_nummer="REG-ABC999", kategori=kategori, personar=personar, grunn="feilregistrering")


# --- opening a sak ---------------------------------------------------------------------


def test_a_new_sak_is_under_kartlegging():
    assert sak().status == Status.under_kartlegging


def test_opne_takes_the_household_from_the_vedtak():
    corr = uuid4()
    v = vedtak([vperson(0), vperson(1, 2015)], privatbuande=True, bustadkommune="1106", mottak_id=None)
    s = Sak.opne("sak-test-000001", v, corr)
    assert s.status == Status.under_kartlegging
    assert (s.reg_nummer, s.kategori, s.sakstype, s.vedtaksdato) == ("REG-ABC123", Kategori.barnefamilie, "asyl", VEDTAKSDATO)
    assert [p.person_id for p in s.personar] == [pid(0), pid(1)]
    assert [p.fodselsar for p in s.personar] == [1985, 2015]
    assert s.privatbuande and s.bustadkommune == "1106" and s.mottak_id is None
    assert s.correlationid == corr
    # a privately living family has 6 months
    assert s.frist == date(2023, 9, 1)


def test_a_household_of_only_protected_persons_skips_kartlegging():
    s = Sak.opne("sak-test-000001", vedtak([vperson(0, skjerma=True), vperson(1, 2015, skjerma=True)]), uuid4())
    assert s.status == Status.fordelingsklar
    assert s.synlege_personar == []
    assert s.tal_personar == 2


def test_a_household_with_one_unprotected_person_is_mapped():
    s = Sak.opne("sak-test-000001", vedtak([vperson(0, skjerma=True), vperson(1)]), uuid4())
    assert s.status == Status.under_kartlegging
    assert s.synlege_personar == [pid(1)]


# --- valid transitions -----------------------------------------------------------------


def test_incomplete_kartlegging_keeps_the_sak_under_kartlegging_but_records_the_mapping():
    s = sak()
    data = fullfort(
        s.personar[0].person_id,
        False,
        arbeid=[Arbeidserfaring(yrke="sjukepleiar", sektor="helse", ar=4), Arbeidserfaring(yrke="lærar", sektor="undervisning", ar=1)],
        saerlege_behov=["saerpleie"],
        nettverk_kommunar=["4601"],
    )
    assert s.kartlegging_fullfort(data) == []
    assert s.status == Status.under_kartlegging
    p = s.personar[0]
    assert p.utdanningsniva == "bachelor"
    assert p.sektorar == ["helse", "undervisning"]
    assert p.saerlege_behov == ["saerpleie"]
    assert p.nettverk == ["4601"]
    assert s.personar[1].utdanningsniva is None


def test_complete_kartlegging_makes_the_sak_fordelingsklar():
    s = sak()
    assert s.kartlegging_fullfort(fullfort(s.personar[1].person_id, True)) == []
    assert s.status == Status.fordelingsklar


@pytest.mark.parametrize("later", [fordelt, sokt_ut, bosatt, trukke], ids=lambda f: f.__name__)
def test_a_late_kartlegging_does_not_move_the_sak(later):
    s = later()
    before = s.status
    assert s.kartlegging_fullfort(fullfort(s.personar[0].person_id, True)) == []
    assert s.status == before


def test_fordel_allocates_and_emits_fordelt_with_every_person():
    s = klar(n=4)
    events = s.fordel("1103")
    assert s.status == Status.fordelt
    assert s.kommunenummer == "1103"
    (e,) = events
    assert isinstance(e, Fordelt)
    assert e.kommunenummer == "1103"
    assert e.reg_nummer == "REG-ABC123"
    assert e.kategori == Kategori.barnefamilie
    assert e.personar == [p.person_id for p in s.personar]
    assert e.tal_personar == 4


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
    events = s.bosett("1103", settled)
    assert s.status == Status.bosatt
    assert s.busetjingsdato == settled
    (e,) = events
    assert isinstance(e, Bosatt)
    assert e.kommunenummer == "1103"
    assert e.busetjingsdato == settled
    assert e.kategori == Kategori.barnefamilie
    assert e.vedtaksdato == VEDTAKSDATO
    assert e.personar == [p.person_id for p in s.personar]
    assert e.tal_personar == 3


def test_mottak_status_tracks_the_mottak_until_the_person_leaves():
    s = sak(mottak_id="mottak-01")
    assert s.mottak_status("mottak-07", "flytta") == []
    assert s.mottak_id == "mottak-07"
    s.mottak_status("mottak-07", "utflytta")
    assert s.mottak_id is None
    assert s.status == Status.under_kartlegging


# --- invalid transitions ---------------------------------------------------------------


@pytest.mark.parametrize("state", [sak, fordelt, sokt_ut, bosatt, trukke], ids=lambda f: f.__name__)
def test_fordel_only_from_fordelingsklar(state):
    s = state()
    before = (s.status, s.kommunenummer)
    with pytest.raises(UgyldigOvergang):
        s.fordel("1103")
    assert (s.status, s.kommunenummer) == before


@pytest.mark.parametrize("state", [sak, klar, bosatt, trukke], ids=lambda f: f.__name__)
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


@pytest.mark.parametrize("state", [sak, klar, sokt_ut, bosatt, trukke], ids=lambda f: f.__name__)
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


@pytest.mark.parametrize("state", [sak, klar, fordelt, trukke], ids=lambda f: f.__name__)
def test_bosett_only_from_sokt_ut(state):
    s = state()
    before = s.status
    with pytest.raises(UgyldigOvergang):
        s.bosett("0301", DAG)
    assert s.status == before


def test_bosett_by_another_kommune_is_refused():
    s = sokt_ut("0301")
    with pytest.raises(UgyldigOvergang):
        s.bosett("1103", DAG)
    assert s.status == Status.sokt_ut


@pytest.mark.parametrize("state", [sak, klar, fordelt, sokt_ut, bosatt], ids=lambda f: f.__name__)
def test_another_kommune_learns_nothing_of_the_sak_status(state):
    s = state()
    for command in (lambda: s.avtal("1103", DAG), lambda: s.avsla("1103", "nei"), lambda: s.bosett("1103", DAG)):
        with pytest.raises(UgyldigOvergang, match="^sak is not allocated to this kommune$"):
            command()
    assert s.status == state().status


def test_ugyldig_overgang_is_a_domain_error():
    assert issubclass(UgyldigOvergang, DomainError)


# --- idempotent repeats ----------------------------------------------------------------


def test_avtal_twice_with_the_same_date_is_a_no_op():
    s = sokt_ut("0301", DAG)
    assert s.avtal("0301", DAG) == []
    assert s.status == Status.sokt_ut
    assert s.busetjingsdato == DAG


def test_bosett_twice_is_a_no_op():
    s = bosatt("0301")
    assert s.bosett("0301", DAG) == []
    assert s.status == Status.bosatt


def test_avsla_repeated_is_a_no_op():
    s = fordelt("0301")
    s.avsla("0301", "nei")
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
    s.bosett("0301", date(2023, 6, 1))
    assert s.avtal("0301", date(2023, 6, 1)) == []
    assert s.status == Status.bosatt


# --- withdrawal (trekk) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "state, kommune",
    [(sak, None), (klar, None), (fordelt, "0301"), (sokt_ut, "0301")],
    ids=["under_kartlegging", "fordelingsklar", "fordelt", "sokt_ut"],
)
def test_trekk_from_every_open_status_releases_the_places(state, kommune):
    s = state()
    events = s.trekk("utreist")
    assert s.status == Status.trukke
    assert events == [Trukke(arsak="utreist", kommunenummer=kommune)]
    assert s.plass() is None


def test_trekk_again_is_a_no_op():
    s = trukke()
    assert s.trekk("anna") == []
    assert s.status == Status.trukke


def test_a_settled_sak_cannot_be_withdrawn():
    s = bosatt()
    with pytest.raises(UgyldigOvergang):
        s.trekk("utreist")
    assert s.status == Status.bosatt
    assert s.plass() == ("0301", Kategori.barnefamilie, 3)


# --- places ----------------------------------------------------------------------------


def test_plass_is_held_while_fordelt_sokt_ut_and_bosatt():
    assert HELD == {Status.fordelt, Status.sokt_ut, Status.bosatt}
    assert FINAL == {Status.bosatt, Status.trukke}
    assert sak().plass() is None
    assert klar().plass() is None
    assert fordelt("4601", n=4).plass() == ("4601", Kategori.barnefamilie, 4)
    assert sokt_ut("4601", n=4).plass() == ("4601", Kategori.barnefamilie, 4)
    assert bosatt("4601", n=4).plass() == ("4601", Kategori.barnefamilie, 4)
    s = fordelt("4601")
    s.avsla("4601", "nei")
    assert s.plass() is None


def test_protected_persons_hold_places_but_never_leave_the_sak():
    s = sak(n=3)
    s.personar[1].skjerma = True
    s.kartlegging_fullfort(fullfort(s.personar[0].person_id, True))
    (e,) = s.fordel("0301")
    assert e.personar == [s.personar[0].person_id, s.personar[2].person_id]
    assert e.tal_personar == 3
    assert s.plass() == ("0301", Kategori.barnefamilie, 3)
    s.avtal("0301", DAG)
    (b,) = s.bosett("0301", DAG)
    assert s.personar[1].person_id not in b.personar
    assert b.tal_personar == 3


# --- correction by UDI (korriger) --------------------------------------------------------


def test_korriger_while_fordelt_cancels_the_allocation_without_marking_a_refusal():
    s = fordelt("0301", n=3)
    events = s.korriger(korrigert([vperson(0), vperson(1), vperson(2, 2015), vperson(3, 2018)]))
    assert events == [FordelingOppheva(kommunenummer="0301", grunn="the household was corrected by UDI")]
    assert s.status == Status.fordelingsklar
    assert s.kommunenummer is None
    assert s.avslatt_av == []
    assert s.plass() is None
    assert s.reg_nummer == "REG-ABC999"
    assert s.tal_personar == 4
    # a late answer from that kommune: "cancelled" (it knew the sak); others learn nothing
    with pytest.raises(UgyldigOvergang) as cancelled:
        s.avtal("0301", DAG)
    assert not isinstance(cancelled.value, IkkjeKommunensSak)
    with pytest.raises(IkkjeKommunensSak):
        s.avtal("1103", DAG)
    s.fordel("0301")  # the same kommune may be proposed again
    assert s.status == Status.fordelt


def test_korriger_while_sokt_ut_keeps_the_agreement_with_the_corrected_places():
    s = sokt_ut("0301", n=1, kategori=Kategori.vaksen)
    assert s.plass() == ("0301", Kategori.vaksen, 1)
    assert s.korriger(korrigert([vperson(0), vperson(1, 2016)], Kategori.barnefamilie)) == []
    assert s.status == Status.sokt_ut
    assert s.kommunenummer == "0301" and s.busetjingsdato == DAG
    assert s.plass() == ("0301", Kategori.barnefamilie, 2)


def test_korriger_keeps_what_the_mapping_told_about_known_persons():
    s = sak(n=2)
    s.kartlegging_fullfort(fullfort(s.personar[0].person_id, False, saerlege_behov=["saerpleie"]))
    s.korriger(korrigert([vperson(0, 1984), vperson(5, 2019)]))
    assert s.personar[0].utdanningsniva == "bachelor"
    assert s.personar[0].saerlege_behov == ["saerpleie"]
    assert s.personar[0].fodselsar == 1984
    assert s.personar[1].person_id == pid(5) and s.personar[1].utdanningsniva is None
    assert s.status == Status.under_kartlegging


def test_a_minor_who_gets_an_accompanying_adult_becomes_a_family_and_the_deadline_follows():
    s = sak(n=1, kategori=Kategori.einsleg_mindrearig)
    s.personar[0].fodselsar = 2007
    assert s.frist == legg_til_manader(VEDTAKSDATO, 3)
    s.korriger(korrigert([vperson(0, 2007), vperson(1, 1980)], Kategori.barnefamilie))
    assert s.kategori == Kategori.barnefamilie
    assert s.frist == frist_for(Kategori.barnefamilie, "asyl", False, VEDTAKSDATO)
    assert s.hushald(DAG).kategori == Kategori.barnefamilie


def test_a_correction_that_makes_an_adult_a_family_shortens_the_deadline():
    s = sak(n=1, kategori=Kategori.vaksen)
    assert s.frist == date(2023, 9, 1)
    s.korriger(korrigert([vperson(0), vperson(1, 2020)], Kategori.barnefamilie))
    assert s.frist == date(2023, 6, 1)


@pytest.mark.parametrize("state", [trukke], ids=lambda f: f.__name__)
def test_korriger_a_withdrawn_sak_changes_nothing(state):
    s = state()
    assert s.korriger(korrigert([vperson(0)], Kategori.vaksen)) == []
    assert s.kategori == Kategori.barnefamilie and s.status == Status.trukke


# --- deadlines -------------------------------------------------------------------------


def test_legg_til_manader_clamps_to_the_end_of_the_month():
    assert legg_til_manader(date(2023, 1, 31), 1) == date(2023, 2, 28)
    assert legg_til_manader(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert legg_til_manader(date(2023, 8, 31), 6) == date(2024, 2, 29)
    assert legg_til_manader(date(2023, 11, 15), 3) == date(2024, 2, 15)
    assert legg_til_manader(date(2023, 3, 1), 0) == date(2023, 3, 1)
    assert legg_til_manader(date(2023, 10, 30), 3) == date(2024, 1, 30)


@pytest.mark.parametrize(
    "kategori, sakstype, privatbuande, manader",
    [
        (Kategori.einsleg_mindrearig, Sakstype.asyl, False, 3),
        (Kategori.barnefamilie, Sakstype.asyl, False, 3),
        (Kategori.barnefamilie, Sakstype.kollektivt_vern, False, 3),
        (Kategori.vaksen, Sakstype.asyl, False, 6),
        (Kategori.vaksen, Sakstype.overforing, False, 6),
        (Kategori.barnefamilie, Sakstype.overforing, False, 6),  # resettlement: from the entry permit
        (Kategori.barnefamilie, Sakstype.asyl, True, 6),  # privately living family
    ],
)
def test_frist_for(kategori, sakstype, privatbuande, manader):
    assert frist_for(kategori, sakstype, privatbuande, date(2023, 8, 31)) == legg_til_manader(date(2023, 8, 31), manader)
    s = sak(kategori=kategori, sakstype=sakstype.value, privatbuande=privatbuande)
    assert s.frist == legg_til_manader(VEDTAKSDATO, manader)


def test_fristvarsel_nearing_once_then_overdue_once():
    s = klar(n=2, kategori=Kategori.vaksen)  # frist 2023-09-01
    assert s.frist == date(2023, 9, 1)
    assert s.fristvarsel(date(2023, 8, 1), 30) == []  # 31 days before
    (e,) = s.fristvarsel(date(2023, 8, 2), 30)
    assert e == FristNaermar(frist=date(2023, 9, 1), kategori=Kategori.vaksen, status="fordelingsklar")
    assert s.frist_naermar_sendt and not s.frist_overskriden_sendt
    assert s.fristvarsel(date(2023, 8, 20), 30) == []
    assert s.fristvarsel(date(2023, 9, 1), 30) == []  # the deadline day itself is not overdue
    (o,) = s.fristvarsel(date(2023, 9, 2), 30)
    assert o == FristOverskriden(frist=date(2023, 9, 1), kategori=Kategori.vaksen, status="fordelingsklar")
    assert s.frist_overskriden_sendt
    assert s.fristvarsel(date(2024, 9, 2), 30) == []


def test_a_sak_first_seen_after_its_deadline_gets_only_overdue():
    s = fordelt("0301", n=1, kategori=Kategori.einsleg_mindrearig)
    (o,) = s.fristvarsel(date(2023, 12, 1), 30)
    assert isinstance(o, FristOverskriden) and o.status == "fordelt"
    assert s.fristvarsel(date(2023, 12, 2), 30) == []
    assert s.frist_naermar_sendt and s.frist_overskriden_sendt


@pytest.mark.parametrize("state", [bosatt, trukke], ids=lambda f: f.__name__)
def test_settled_and_withdrawn_saker_get_no_deadline_events(state):
    s = state()
    assert s.fristvarsel(date(2023, 5, 20), 30) == []
    assert s.fristvarsel(date(2024, 5, 20), 30) == []
    assert not s.frist_naermar_sendt and not s.frist_overskriden_sendt


# --- the household as the optimiser sees it -------------------------------------------


def test_hushald_carries_members_waiting_time_deadline_refusals_and_network():
    s = fordelt("0301", n=3)
    s.avsla("0301", "nei")
    s.personar[0].saerlege_behov = ["saerpleie"]
    s.personar[0].nettverk = ["4601"]
    s.personar[0].sektorar = ["helse"]
    s.personar[0].utdanningsniva = "master"
    h = s.hushald(date(2023, 4, 1))
    assert h.sak_id == s.sak_id and h.kategori == Kategori.barnefamilie
    assert h.personar == 3
    assert [m.alder for m in h.medlemmer] == [38, 38, 8]
    assert h.medlemmer[0].saerlege_behov and not h.medlemmer[1].saerlege_behov
    assert h.medlemmer[0].utdanningsniva == "master"
    assert h.medlemmer[0].sektorar == frozenset({"helse"})
    assert h.ventedagar == 31
    assert h.dagar_til_frist == (s.frist - date(2023, 4, 1)).days == 61
    assert h.avslatt_av == frozenset({"0301"})
    assert h.nettverk == frozenset({"4601"})
    assert h.bustadkommune is None


def test_hushald_names_the_bustadkommune_only_for_a_privately_living_household():
    assert klar(privatbuande=True, bustadkommune="1106").hushald(DAG).bustadkommune == "1106"
    assert klar(privatbuande=False, bustadkommune="1106").hushald(DAG).bustadkommune is None


# --- mapping versions and the mottak's flags --------------------------------------------


def test_a_corrected_mapping_replaces_the_mapped_profile_but_not_the_mottaks_flags():
    s = sak(n=2)
    first = s.personar[0].person_id
    s.kartlegging_fullfort(fullfort(first, True, saerlege_behov=["saerpleie"], fullstendigheit=0.5))
    s.saerlege_behov_flagga(first, ["tilrettelagt_bustad"])
    assert s.personar[0].behov == ["saerpleie", "tilrettelagt_bustad"]
    assert s.personar[0].fullstendigheit == 0.5

    korrigert = KartleggingKorrigert(
        person_id=first, kartleggingstype=Kartleggingstype.ordinaer, utdanning=Utdanning(niva="master", ar=17),
        versjon=2, grunn="documentation arrived", fullstendigheit=1.0,
    )
    assert s.kartlagt(korrigert) == []
    p = s.personar[0]
    assert (p.utdanningsniva, p.fullstendigheit, p.saerlege_behov) == ("master", 1.0, [])
    assert p.behov == ["tilrettelagt_bustad"]  # the mottak's flag survives the correction
    assert s.hushald(DAG).medlemmer[0].saerlege_behov is True
    assert s.status == Status.fordelingsklar  # a correction never moves the case
