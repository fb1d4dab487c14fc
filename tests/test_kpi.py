"""IMDi's KPIs from folded events (services/bosetting/kpi.py): hand-computed expectations
on small fixed event sets. Every expected number is worked out in a comment beside it."""

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.bosetting import kpi
from services.bosetting.kpi import KapasitetInndata, KommuneKapasitet, KpiSak, apply
from shared.catalogue import (
    AvtaleInngatt,
    Avslatt,
    Bosatt,
    FordelingOppheva,
    Fordelt,
    KartleggingStartet,
    Kartleggingstype,
    Kategori,
    MottakStatusEndret,
    Sakstype,
    Trukke,
    VedtakKorrigert,
    VedtakPerson,
    parse_data,
)
from shared.publish import envelope_for
from tests.events import KARTLEGGING, UDI, fullfort, new_person_id, new_sak_id, vedtak

OSLO = ZoneInfo("Europe/Oslo")
BOSETTING = "urn:chain:bosetting"
MINOR, FAMILY, ADULT = Kategori.einsleg_mindrearig, Kategori.barnefamilie, Kategori.vaksen


def at(d: date, hour: int = 12) -> datetime:
    return datetime(d.year, d.month, d.day, hour, tzinfo=OSLO)


class Hist:
    """One case's events in the order a consumer receives them, numbered per source."""

    def __init__(self):
        self.sak_id = new_sak_id()
        self.seq: dict[str, int] = defaultdict(int)
        self.envelopes = []
        self.v = None

    def add(self, data, source: str, when: date | datetime | None = None):
        self.seq[source] += 1
        e = envelope_for(data, self.sak_id, source, self.seq[source])
        if when is not None:
            e = e.model_copy(update={"time": when if isinstance(when, datetime) else at(when)})
        self.envelopes.append(e)
        return e

    # builders for the usual steps
    def vedtak(self, kategori=FAMILY, vedtaksdato=date(2023, 3, 1), n=1, children=0, sakstype=Sakstype.asyl, mottak=True, **extra):
        self.v = vedtak(
            n_adults=n,
            n_children=children,
            kategori=kategori,
            sakstype=sakstype,
            vedtakstype="innreiseloyve" if sakstype == Sakstype.overforing else "opphald",
            vedtaksdato=vedtaksdato,
            mottak_id="mottak-01" if mottak else None,
            privatbuande=not mottak,
            **extra,
        )
        return self.add(self.v, UDI, vedtaksdato)

    @property
    def ids(self) -> list[str]:
        return [p.person_id for p in self.v.personar]

    def startet(self, personar, when):
        return self.add(KartleggingStartet(kartleggingstype=Kartleggingstype.ordinaer, personar=personar), KARTLEGGING, when)

    def fullfort(self, person_id, komplett, when):
        return self.add(fullfort(person_id, komplett), KARTLEGGING, when)

    def fordelt(self, kommune, when):
        v = self.v
        return self.add(
            Fordelt(reg_nummer=v.reg_nummer, kommunenummer=kommune, kategori=v.kategori, personar=self.ids, tal_personar=len(self.ids)),
            BOSETTING,
            when,
        )

    def avtale(self, kommune, busetjingsdato, when):
        return self.add(AvtaleInngatt(kommunenummer=kommune, busetjingsdato=busetjingsdato), BOSETTING, when)

    def bosatt(self, kommune, busetjingsdato):
        v = self.v
        return self.add(
            Bosatt(
                kommunenummer=kommune,
                busetjingsdato=busetjingsdato,
                kategori=v.kategori,
                personar=self.ids,
                vedtaksdato=v.vedtaksdato,
                tal_personar=len(self.ids),
            ),
            BOSETTING,
            busetjingsdato,
        )

    def trukke(self, when, kommune=None):
        return self.add(Trukke(arsak="utreist", kommunenummer=kommune), BOSETTING, when)


def settled(kategori, vedtaksdato, busetjingsdato, n=1, children=0, sakstype=Sakstype.asyl, mottak=True, kommune="0301") -> Hist:
    """A case that went the straight way: decided, allocated the next day, agreement the
    day before moving in, settled."""
    h = Hist()
    h.vedtak(kategori, vedtaksdato, n, children, sakstype, mottak)
    h.fordelt(kommune, vedtaksdato + timedelta(days=1))
    h.avtale(kommune, busetjingsdato, busetjingsdato - timedelta(days=1))
    h.bosatt(kommune, busetjingsdato)
    return h


def fold(*hists: Hist) -> list[KpiSak]:
    saker: dict[str, KpiSak] = {}
    for h in hists:
        for e in h.envelopes:
            saker[e.subject] = apply(saker.get(e.subject), e, parse_data(e))
    return list(saker.values())


def rows_by(rows, key="gruppe"):
    return {r[key]: r for r in rows}


# --- innan_frist --------------------------------------------------------------------------


def test_minors_exactly_three_months_is_within_target():
    # Decided 15 July; target 15 October. Settled 14, 15 and 16 October (one person each):
    # 14 and 15 Oct are within (15 Oct is exactly 3 months), 16 Oct is not -> 2 of 3 = 0.667.
    saker = fold(*(settled(MINOR, date(2023, 7, 15), date(2023, 10, d)) for d in (14, 15, 16)))
    minors = rows_by(kpi.innan_frist(saker, "2023-10"))["einsleg_mindrearig"]
    assert minors == {"gruppe": "einsleg_mindrearig", "mal_manader": 3, "bosette": 3, "innan_frist": 2, "andel": pytest.approx(2 / 3)}


def test_month_end_clamps_to_last_day_of_target_month():
    # Decided 30 Nov 2023: + 3 months = 29 Feb 2024 (leap year, clamped). Settled 29 Feb:
    # within; a second minor decided the same day settled 1 Mar: not within -> 1 of 2.
    saker = fold(settled(MINOR, date(2023, 11, 30), date(2024, 2, 29)), settled(MINOR, date(2023, 11, 30), date(2024, 3, 1)))
    assert rows_by(kpi.innan_frist(saker, "2024-02"))["einsleg_mindrearig"]["innan_frist"] == 1
    assert rows_by(kpi.innan_frist(saker, "2024-03"))["einsleg_mindrearig"]["innan_frist"] == 0
    assert rows_by(kpi.innan_frist(saker, "2024"))["einsleg_mindrearig"]["andel"] == pytest.approx(0.5)


def test_families_counted_in_persons_privately_living_excluded():
    # From mottak: family of 4 decided 20 Jun, settled 10 Oct (target 20 Sep): late.
    #              family of 3 decided 31 Jul, settled 31 Oct (target 31 Oct): within.
    # -> persons 7, within 3, share 3/7 = 0.4286 (counting cases would give 1/2).
    # Privately living family of 5, settled fast (1 Oct, decided 1 Sep), a privately
    # living adult, and a privately living adult still registered at a mottak: in no group.
    private_with_mottak = Hist()
    private_with_mottak.v = vedtak(n_adults=1, n_children=0, kategori=ADULT, vedtaksdato=date(2023, 9, 1), mottak_id="mottak-01", privatbuande=True)
    private_with_mottak.add(private_with_mottak.v, UDI, date(2023, 9, 1))
    private_with_mottak.fordelt("0301", date(2023, 9, 2))
    private_with_mottak.avtale("0301", date(2023, 10, 1), date(2023, 9, 3))
    private_with_mottak.bosatt("0301", date(2023, 10, 1))
    saker = fold(
        private_with_mottak,
        settled(FAMILY, date(2023, 6, 20), date(2023, 10, 10), n=2, children=2),
        settled(FAMILY, date(2023, 7, 31), date(2023, 10, 31), n=1, children=2),
        settled(FAMILY, date(2023, 9, 1), date(2023, 10, 1), n=2, children=3, mottak=False),
        settled(ADULT, date(2023, 9, 1), date(2023, 10, 1), mottak=False),
    )
    rows = rows_by(kpi.innan_frist(saker, "2023-10"))
    assert rows["barnefamilie_mottak"] == {
        "gruppe": "barnefamilie_mottak", "mal_manader": 3, "bosette": 7, "innan_frist": 3, "andel": pytest.approx(3 / 7)
    }
    assert sum(r["bosette"] for r in rows.values()) == 7  # the 6 privately living persons are nowhere
    assert rows["vaksen_mottak"]["andel"] is None  # nobody settled: no share


def test_resettlement_counted_from_entry_permit_six_months():
    # Resettlement family of 4 (entry permit 10 Apr, settled 10 Oct: exactly 6 months) within;
    # resettlement adult (permit 9 Apr, settled 10 Oct: 6 months and a day) late -> 4 of 5 = 0.8.
    # A resettlement family is in the overforing group (6 months), not the family group (3).
    # Adults from mottak: 2 persons decided 10 Apr settled 10 Oct: within 6 -> 2 of 2.
    saker = fold(
        settled(FAMILY, date(2023, 4, 10), date(2023, 10, 10), n=2, children=2, sakstype=Sakstype.overforing, mottak=False),
        settled(ADULT, date(2023, 4, 9), date(2023, 10, 10), sakstype=Sakstype.overforing, mottak=False),
        settled(ADULT, date(2023, 4, 10), date(2023, 10, 10), n=2),
    )
    rows = rows_by(kpi.innan_frist(saker, "2023-10"))
    assert (rows["overforing"]["bosette"], rows["overforing"]["innan_frist"], rows["overforing"]["andel"]) == (5, 4, pytest.approx(0.8))
    assert rows["overforing"]["mal_manader"] == 6
    assert rows["einsleg_mindrearig"]["bosette"] == 0
    assert rows["barnefamilie_mottak"]["bosette"] == 0
    assert (rows["vaksen_mottak"]["bosette"], rows["vaksen_mottak"]["innan_frist"]) == (2, 2)


def test_minor_groups_follow_imdi_from_mottak_and_resettlement():
    # SP13.3 counts minors settled from mottak (or care centre): a privately living minor
    # is in no group; a resettled minor is in the overforing group (6 months from the
    # permit), so settled 4 months after the permit is within there.
    saker = fold(
        settled(MINOR, date(2023, 6, 1), date(2023, 10, 1), mottak=False),
        settled(MINOR, date(2023, 6, 1), date(2023, 10, 1), sakstype=Sakstype.overforing, mottak=False),
    )
    rows = rows_by(kpi.innan_frist(saker, "2023-10"))
    assert rows["einsleg_mindrearig"]["bosette"] == 0
    assert (rows["overforing"]["bosette"], rows["overforing"]["innan_frist"]) == (1, 1)


def test_correction_moves_case_to_new_group_with_new_size():
    # A minor (1 person) gets an accompanying adult: corrected to a family of 2 from mottak.
    # Decided 1 Aug, settled 2 Oct (within 3 months) -> family group 2 of 2, minors 0.
    h = Hist()
    h.vedtak(MINOR, date(2023, 8, 1))
    extra = VedtakPerson(person_id=new_person_id(), fodselsar=1980, kjonn="M")
    h.add(VedtakKorrigert(reg_nummer=h.v.reg_nummer, kategori=FAMILY, personar=[*h.v.personar, extra], grunn="følgjeperson"), UDI, date(2023, 8, 5))
    h.fordelt("0301", date(2023, 8, 10))
    h.add(FordelingOppheva(kommunenummer="0301", grunn="korrigert"), BOSETTING, date(2023, 8, 10))
    h.v = h.v.model_copy(update={"kategori": FAMILY, "personar": [*h.v.personar, extra]})
    h.fordelt("4601", date(2023, 8, 20))
    h.avtale("4601", date(2023, 10, 2), date(2023, 9, 1))
    h.bosatt("4601", date(2023, 10, 2))
    (sak,) = fold(h)
    assert (sak.kategori, sak.personar, sak.kommunenummer) == ("barnefamilie", 2, "4601")
    rows = rows_by(kpi.innan_frist([sak], "2023-10"))
    assert rows["barnefamilie_mottak"]["innan_frist"] == 2 and rows["einsleg_mindrearig"]["bosette"] == 0


# --- ventetid ---------------------------------------------------------------------------


def test_waiting_time_mean_and_median_per_person():
    # A: family of 4, asyl, 1 Aug -> 1 Oct = 61 days; B: adult, asyl, 1 Jun -> 1 Oct = 122 days;
    # C: 2 adults, overforing, 1 Apr -> 1 Oct = 183 days. Month = 30.4375 days.
    # kategori barnefamilie: 4 persons, 61/30.4375 = 2.0041 (mean = median)
    # kategori vaksen: 3 persons [122, 183, 183]: mean 162.667/30.4375 = 5.3443, median 183/30.4375 = 6.0123
    # sakstype asyl: 5 persons [61 x4, 122]: mean 73.2/30.4375 = 2.4049, median 61/30.4375 = 2.0041
    # sakstype overforing: 2 persons, 183/30.4375 = 6.0123
    # D (settled in September) is outside October but inside 2023.
    saker = fold(
        settled(FAMILY, date(2023, 8, 1), date(2023, 10, 1), n=2, children=2),
        settled(ADULT, date(2023, 6, 1), date(2023, 10, 1)),
        settled(ADULT, date(2023, 4, 1), date(2023, 10, 1), n=2, sakstype=Sakstype.overforing, mottak=False),
        settled(ADULT, date(2023, 1, 1), date(2023, 9, 1), n=10),
    )
    rows = {(r["dimensjon"], r["verdi"]): r for r in kpi.ventetid(saker, "2023-10")}
    assert set(rows) == {("kategori", "barnefamilie"), ("kategori", "vaksen"), ("sakstype", "asyl"), ("sakstype", "overforing")}
    assert rows[("kategori", "barnefamilie")]["personar"] == 4
    assert rows[("kategori", "barnefamilie")]["snitt_manader"] == pytest.approx(2.0041, abs=1e-4)
    assert rows[("kategori", "vaksen")]["personar"] == 3
    assert rows[("kategori", "vaksen")]["snitt_manader"] == pytest.approx(5.3443, abs=1e-4)
    assert rows[("kategori", "vaksen")]["median_manader"] == pytest.approx(6.0123, abs=1e-4)
    assert rows[("sakstype", "asyl")]["snitt_manader"] == pytest.approx(2.4049, abs=1e-4)
    assert rows[("sakstype", "asyl")]["median_manader"] == pytest.approx(2.0041, abs=1e-4)
    assert rows[("sakstype", "overforing")]["median_manader"] == pytest.approx(6.0123, abs=1e-4)
    # The whole year takes D in: vaksen 13 persons.
    year = {(r["dimensjon"], r["verdi"]): r for r in kpi.ventetid(saker, 2023)}
    assert year[("kategori", "vaksen")]["personar"] == 13


# --- timeline and waiting counts --------------------------------------------------------


def test_timeline_refusal_then_reallocation():
    h = Hist()
    h.vedtak(FAMILY, date(2023, 9, 1), n=2, children=1)
    adults = h.ids[:2]
    h.startet(adults, date(2023, 9, 2))
    h.fullfort(adults[0], False, date(2023, 9, 5))
    h.fullfort(adults[1], True, date(2023, 9, 10))
    h.fordelt("0301", date(2023, 9, 12))
    h.add(Avslatt(kommunenummer="0301", grunn="ingen bustad"), BOSETTING, date(2023, 9, 20))
    h.fordelt("4601", date(2023, 9, 25))
    h.avtale("4601", date(2023, 10, 20), date(2023, 10, 2))  # agreed on 2 Oct to move in 20 Oct
    h.bosatt("4601", date(2023, 10, 20))
    (sak,) = fold(h)
    assert sak.statusar == [
        ("under_kartlegging", date(2023, 9, 1)),
        ("fordelingsklar", date(2023, 9, 10)),
        ("fordelt", date(2023, 9, 12)),
        ("fordelingsklar", date(2023, 9, 20)),
        ("fordelt", date(2023, 9, 25)),
        ("sokt_ut", date(2023, 10, 2)),  # from the agreement, not from the moving-in date
        ("bosatt", date(2023, 10, 20)),
    ]
    assert (sak.kommunenummer, sak.busetjingsdato, sak.personar) == ("4601", date(2023, 10, 20), 3)
    assert kpi.ventande([sak], date(2023, 9, 21))["fordelingsklar"] == 3
    assert kpi.ventande([sak], date(2023, 10, 19))["sokt_ut"] == 3


def test_allocation_before_complete_mapping_implies_fordelingsklar():
    h = Hist()
    h.vedtak(ADULT, date(2023, 9, 1))
    h.fordelt("0301", date(2023, 9, 8))
    (sak,) = fold(h)
    assert sak.statusar == [("under_kartlegging", date(2023, 9, 1)), ("fordelingsklar", date(2023, 9, 8)), ("fordelt", date(2023, 9, 8))]


def test_household_of_protected_identities_is_ready_at_once_and_counted():
    h = Hist()
    h.vedtak(FAMILY, date(2023, 9, 1), n=1, children=1)
    h.v = h.v.model_copy(update={"personar": [p.model_copy(update={"skjerma": True}) for p in h.v.personar]})
    h.envelopes = []
    h.add(h.v, UDI, date(2023, 9, 1))
    (sak,) = fold(h)
    assert sak.statusar == [("fordelingsklar", date(2023, 9, 1))] and sak.personar == 2


def test_waiting_per_status_at_month_end():
    # At the end of 31 Oct 2023 (Oslo):
    # A 3 persons under kartlegging                                 -> under_kartlegging 3
    # B 2 persons mapped 20 Oct, allocated 31 Oct 23:30 UTC = 1 Nov 00:30 in Oslo -> fordelingsklar 2
    # C 4 persons agreement 25 Oct (moving 10 Nov)                  -> sokt_ut 4
    # D 1 person settled 31 Oct                                     -> not waiting
    # E 2 persons allocated 5 Oct, withdrawn 15 Oct                 -> not waiting
    # F 5 persons decided 2 Nov                                     -> not yet a case
    a = Hist(); a.vedtak(ADULT, date(2023, 10, 1), n=3)
    b = Hist(); b.vedtak(ADULT, date(2023, 10, 1), n=2); b.fullfort(b.ids[0], True, date(2023, 10, 20))
    b.fordelt("0301", datetime(2023, 10, 31, 23, 30, tzinfo=UTC))
    c = Hist(); c.vedtak(ADULT, date(2023, 9, 1), n=4); c.fordelt("0301", date(2023, 10, 1)); c.avtale("0301", date(2023, 11, 10), date(2023, 10, 25))
    d = settled(ADULT, date(2023, 9, 1), date(2023, 10, 31))
    e = Hist(); e.vedtak(ADULT, date(2023, 9, 1), n=2); e.fullfort(e.ids[0], True, date(2023, 9, 20)); e.fordelt("0301", date(2023, 10, 5))
    e.trukke(date(2023, 10, 15), "0301")
    f = Hist(); f.vedtak(ADULT, date(2023, 11, 2), n=5)
    saker = fold(a, b, c, d, e, f)
    assert kpi.ventande(saker, date(2023, 10, 31)) == {"under_kartlegging": 3, "fordelingsklar": 2, "fordelt": 0, "sokt_ut": 4}
    # 10 Oct: A 3 + B 2 under kartlegging; C fordelt 4, E fordelt 2; D fordelt 1 (allocated 2 Sep)
    assert kpi.ventande(saker, date(2023, 10, 10)) == {"under_kartlegging": 5, "fordelingsklar": 0, "fordelt": 7, "sokt_ut": 0}
    # 1 Nov: B is fordelt now
    assert kpi.ventande(saker, date(2023, 11, 1))["fordelt"] == 2


def test_withdrawn_case_is_final_and_never_settled():
    h = Hist()
    h.vedtak(MINOR, date(2023, 8, 1))
    h.fullfort(h.ids[0], True, date(2023, 8, 10))
    h.fordelt("0301", date(2023, 8, 20))
    h.trukke(date(2023, 9, 1), "0301")
    h.add(Avslatt(kommunenummer="0301", grunn="late answer"), BOSETTING, date(2023, 9, 2))  # ignored
    (sak,) = fold(h)
    assert sak.status == "trukke" and sak.statusar[-1] == ("trukke", date(2023, 9, 1))
    assert sum(kpi.ventande([sak], date(2023, 9, 30)).values()) == 0
    assert kpi.ventande([sak], date(2023, 8, 31))["fordelt"] == 1
    assert all(r["bosette"] == 0 for r in kpi.innan_frist([sak], "2023"))


# --- mapping coverage ------------------------------------------------------------------


def test_mapping_coverage_before_settlement():
    # Settled in October:
    # 1: 4 persons, 2 to be mapped, both mapped before settlement                 -> 2 before
    # 2: 3 persons, 2 to be mapped, 1 before, 1 after settlement (§ 10)          -> 1 before, 1 after
    # 3: 1 person to be mapped, mapped 5 Oct, settled 10 Oct, but the mapping event
    #    reaches the projection after the bosatt event (late delivery)            -> 1 before
    # 4: settled in September (2 to be mapped, none mapped)                       -> not counted
    # -> persons 8, to be mapped 5, mapped before 4, coverage 0.8; 1 after: 5/5 by now.
    h1 = Hist(); h1.vedtak(FAMILY, date(2023, 8, 1), n=2, children=2); h1.startet(h1.ids[:2], date(2023, 8, 2))
    h1.fullfort(h1.ids[0], False, date(2023, 8, 10)); h1.fullfort(h1.ids[1], True, date(2023, 8, 12))
    h1.fordelt("0301", date(2023, 8, 20)); h1.avtale("0301", date(2023, 10, 3), date(2023, 9, 1)); h1.bosatt("0301", date(2023, 10, 3))

    h2 = Hist(); h2.vedtak(FAMILY, date(2023, 8, 1), n=2, children=1); h2.startet(h2.ids[:2], date(2023, 8, 2))
    h2.fullfort(h2.ids[0], False, date(2023, 8, 10)); h2.fordelt("0301", date(2023, 8, 20))
    h2.avtale("0301", date(2023, 10, 4), date(2023, 9, 1)); h2.bosatt("0301", date(2023, 10, 4))
    h2.fullfort(h2.ids[1], True, date(2023, 11, 1))

    h3 = Hist(); h3.vedtak(ADULT, date(2023, 8, 1)); h3.startet(h3.ids, date(2023, 8, 2))
    h3.fordelt("0301", date(2023, 8, 20)); h3.avtale("0301", date(2023, 10, 10), date(2023, 9, 1)); h3.bosatt("0301", date(2023, 10, 10))
    h3.fullfort(h3.ids[0], True, date(2023, 10, 5))

    h4 = Hist(); h4.vedtak(ADULT, date(2023, 6, 1), n=2); h4.startet(h4.ids, date(2023, 6, 2))
    h4.fordelt("0301", date(2023, 6, 20)); h4.avtale("0301", date(2023, 9, 10), date(2023, 7, 1)); h4.bosatt("0301", date(2023, 9, 10))

    saker = fold(h1, h2, h3, h4)
    assert kpi.kartleggingsdekning(saker, "2023-10") == {
        "bosette_personar": 8,
        "skal_kartleggast": 5,
        "kartlagde_for_busetjing": 4,
        "dekning": pytest.approx(0.8),
        "kartlagde_etter_busetjing": 1,
        "dekning_etter_busetjing": pytest.approx(1.0),
    }
    assert kpi.kartleggingsdekning(saker, "2023-09")["dekning"] == 0.0


# --- idempotency -------------------------------------------------------------------------


def test_repeated_event_is_applied_once():
    h = Hist()
    h.vedtak(ADULT, date(2023, 9, 1), n=2)
    h.startet(h.ids, date(2023, 9, 2))
    first = h.fullfort(h.ids[0], False, date(2023, 9, 5))
    h.envelopes.append(first)  # the same envelope delivered twice
    h.fullfort(h.ids[0], False, date(2023, 9, 6))  # the same mapping re-published with a new id
    allocated = h.fordelt("0301", date(2023, 9, 7))
    h.envelopes.append(allocated)
    refused = h.add(Avslatt(kommunenummer="0301", grunn="ingen bustad"), BOSETTING, date(2023, 9, 9))
    h.fordelt("4601", date(2023, 9, 10))
    h.envelopes.append(refused)  # a late redelivery of the refusal must not undo the new allocation
    h.add(MottakStatusEndret(mottak_id="mottak-01", status="flytta", dato=date(2023, 9, 8)), "urn:no:mottak:1")  # not a KPI event
    (sak,) = fold(h)
    assert (sak.kartlagde, sak.skal_kartleggast) == (1, 2)
    assert sak.kartlagde_personar[h.ids[0]] == date(2023, 9, 5)  # the first mapping date counts
    assert [s for s, _ in sak.statusar] == ["under_kartlegging", "fordelingsklar", "fordelt", "fordelingsklar", "fordelt"]
    assert (sak.status, sak.kommunenummer) == ("fordelt", "4601")
    # and applying the whole history a second time changes nothing
    again = sak
    for e in h.envelopes:
        again = apply(again, e, parse_data(e))
    assert again.statusar == sak.statusar and again.kartlagde == 1


def test_events_for_no_case_are_ignored():
    e = envelope_for(MottakStatusEndret(mottak_id="mottak-01", status="flytta", dato=date(2023, 9, 8)), new_sak_id(), "urn:no:mottak:1", 1)
    assert apply(None, e, parse_data(e)) is None


# --- capacity ----------------------------------------------------------------------------


def test_capacity_per_kommune_and_county():
    # 0301 (county 03): settled 90, decided 100, requested 120 -> use 0.9, decided/requested 0.8333
    # 4601 (46): 30 / 20 / 25 -> 1.5, 0.8;  4602 (46): 0 / 10 / 0 -> 0.0, None (nothing requested)
    # 1103 not in fylke_av: county from its number, 11: 5 / 0 / 0 -> None, None
    # county 46: 30 / 30 / 25 -> 1.0, 1.2
    per_kommune, per_fylke = kpi.kapasitetsbruk(
        {"0301": 90, "4601": 30, "1103": 5},
        {"0301": 100, "4601": 20, "4602": 10},
        {"0301": 120, "4601": 25},
        {"0301": "03", "4601": "46", "4602": "46"},
    )
    k = rows_by(per_kommune, "kommunenummer")
    assert k["0301"] == {"kommunenummer": "0301", "fylkesnummer": "03", "oppmoda": 120, "vedtaksplassar": 100, "bosette": 90, "bruk": pytest.approx(0.9), "vedtak_mot_oppmoding": pytest.approx(100 / 120)}
    assert (k["4601"]["bruk"], k["4601"]["vedtak_mot_oppmoding"]) == (pytest.approx(1.5), pytest.approx(0.8))
    assert (k["4602"]["bruk"], k["4602"]["vedtak_mot_oppmoding"]) == (0.0, None)
    assert (k["1103"]["fylkesnummer"], k["1103"]["bruk"]) == ("11", None)
    f = rows_by(per_fylke, "fylkesnummer")
    assert set(f) == {"03", "11", "46"}
    assert f["46"] == {"fylkesnummer": "46", "oppmoda": 25, "vedtaksplassar": 30, "bosette": 30, "bruk": pytest.approx(1.0), "vedtak_mot_oppmoding": pytest.approx(1.2)}


# --- the report --------------------------------------------------------------------------


def test_report_shape_and_figures():
    # Settled (persons, kommune, date): 2 in 0301 Dec 2022 (not this year), 3 in 0301 Mar 2023,
    # 4 in 4601 Oct 2023, 1 in 0301 Oct 2023, 6 in 0301 Nov 2023 (after the month).
    # Year to the end of October: 0301 = 3 + 1 = 4 of 8 places (0.5); 4601 = 4 of 5 (0.8).
    # October per county: 03 -> 1, 46 -> 4. Trend: 12 months Nov 2022 .. Oct 2023;
    # March 3 persons (adults from mottak, 2 months: within 6), October 5.
    saker = fold(
        settled(ADULT, date(2022, 10, 1), date(2022, 12, 1), n=2),
        settled(ADULT, date(2023, 1, 10), date(2023, 3, 10), n=3),
        settled(FAMILY, date(2023, 8, 1), date(2023, 10, 5), n=2, children=2, kommune="4601"),  # within 3
        settled(MINOR, date(2023, 6, 1), date(2023, 10, 20)),  # late
        settled(ADULT, date(2023, 9, 1), date(2023, 11, 2), n=6),
    )
    inndata = KapasitetInndata(
        {
            "0301": KommuneKapasitet("Oslo", "03", "Oslo", oppmoda=10, vedtaksplassar=8),
            "4601": KommuneKapasitet("Bergen", "46", "Vestland", oppmoda=4, vedtaksplassar=5),
        }
    )
    r = kpi.rapport(saker, "2023-10", inndata)
    assert list(r) == ["manad", "innan_frist", "ventetid", "ventande", "bosette_per_fylke", "kapasitet", "kapasitet_fylke", "kartlegging", "trend"]
    assert r["manad"] == "2023-10"
    assert set(r["innan_frist"][0]) == {"gruppe", "mal_manader", "bosette", "innan_frist", "andel"}
    assert set(r["ventetid"][0]) == {"dimensjon", "verdi", "personar", "snitt_manader", "median_manader"}
    # At 31 Oct the case of 6 (allocated 2 Sep, agreement 1 Nov) is still fordelt.
    assert r["ventande"] == {"under_kartlegging": 0, "fordelingsklar": 0, "fordelt": 6, "sokt_ut": 0}
    assert r["bosette_per_fylke"] == [
        {"fylkesnummer": "03", "fylke": "Oslo", "personar": 1},
        {"fylkesnummer": "46", "fylke": "Vestland", "personar": 4},
    ]
    kap = rows_by(r["kapasitet"], "kommunenummer")
    assert kap["0301"] == {"kommunenummer": "0301", "namn": "Oslo", "fylke": "Oslo", "oppmoda": 10, "vedtaksplassar": 8, "bosette": 4, "bruk": 0.5, "vedtak_mot_oppmoding": 0.8}
    assert kap["4601"]["bosette"] == 4 and kap["4601"]["bruk"] == pytest.approx(0.8)
    assert rows_by(r["kapasitet_fylke"], "fylkesnummer")["46"] == {
        "fylkesnummer": "46", "fylke": "Vestland", "oppmoda": 4, "vedtaksplassar": 5, "bosette": 4, "bruk": pytest.approx(0.8), "vedtak_mot_oppmoding": pytest.approx(1.25)
    }
    assert r["kartlegging"] == {"bosette_personar": 5, "skal_kartleggast": 0, "kartlagde_for_busetjing": 0, "dekning": None}
    trend = r["trend"]
    assert [t["manad"] for t in trend][0] == "2022-11" and trend[-1]["manad"] == "2023-10" and len(trend) == 12
    t = rows_by(trend, "manad")
    assert t["2022-12"] == {"manad": "2022-12", "bosette": 2, "andel_innan_frist": 1.0}
    assert t["2023-03"] == {"manad": "2023-03", "bosette": 3, "andel_innan_frist": 1.0}
    assert t["2023-10"] == {"manad": "2023-10", "bosette": 5, "andel_innan_frist": pytest.approx(4 / 5)}  # family 4 within, minor 1 late
    assert t["2023-05"] == {"manad": "2023-05", "bosette": 0, "andel_innan_frist": None}


def test_status_never_starts_before_the_one_it_follows():
    # UDI back-dates the decision to 10 Sep although IMDi's allocation is stamped 9 Sep:
    # the timeline stays ordered (fordelingsklar and fordelt from 10 Sep).
    h = Hist()
    h.vedtak(ADULT, date(2023, 9, 10))
    h.fordelt("0301", date(2023, 9, 9))
    (sak,) = fold(h)
    assert sak.statusar == [("under_kartlegging", date(2023, 9, 10)), ("fordelingsklar", date(2023, 9, 10)), ("fordelt", date(2023, 9, 10))]
