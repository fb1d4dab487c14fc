"""The simulator's workload, against IMDi's 2023 figures (DOMAIN.md): the mix of
categories, the seasons, and the places the kommunar decide and are asked for later."""

from collections import Counter
from datetime import date

import pytest

from sim.demo import kommunar
from shared.catalogue import Kategori
from sim.workload import DECIDED_PER_SETTLED, SESONG, apportion, capacity, households, tilleggsplassar, vedtaksdato_i_aret

KOMMUNAR = kommunar()


@pytest.fixture(scope="module")
def year():
    return households(1800, 7, [k for k, _, _ in KOMMUNAR], idag=date(2023, 1, 1), vedtaksdato=vedtaksdato_i_aret(2023))


def test_apportion_sums_exactly_and_follows_the_weights():
    small = apportion(10, {"a": 1, "b": 1, "c": 2})
    assert small["c"] == 5 and sorted((small["a"], small["b"])) == [2, 3]
    shares = apportion(1000, {k: pop for k, pop, _ in KOMMUNAR})
    assert sum(shares.values()) == 1000
    oslo, utsira = shares["0301"], shares.get("1151", 0)
    assert oslo > 100 and utsira == 0


def test_decided_places_are_2023s_ratio_above_the_persons_to_settle(year):
    places = capacity(KOMMUNAR, year)
    need = Counter()
    for h in year:
        need[h.vedtak.kategori.value] += h.persons
    for g, n in need.items():
        decided = sum(p[g] for p in places.values())
        # 36,082 places for 33,701 settled; at most one place of rounding, plus the floor
        # that lets the largest household fit in the most populous kommune.
        assert n * DECIDED_PER_SETTLED <= decided <= n * DECIDED_PER_SETTLED + 12, g
    total = sum(sum(p.values()) for p in places.values())
    assert 1.06 < total / sum(need.values()) < 1.08


def test_only_kommunar_with_services_for_minors_decide_places_for_them(year):
    places = capacity(KOMMUNAR, year)
    minors = {k for k, _, m in KOMMUNAR if m}
    assert all(p[Kategori.einsleg_mindrearig.value] == 0 for k, p in places.items() if k not in minors)
    assert sum(p[Kategori.einsleg_mindrearig.value] for p in places.values()) > 0


def test_every_household_fits_somewhere_at_the_start(year):
    places = capacity(KOMMUNAR, year)
    for h in year:
        assert max(p[h.vedtak.kategori.value] for p in places.values()) >= h.persons


def test_decisions_follow_the_seasons(year):
    per_month = Counter(h.vedtak.vedtaksdato.month for h in year)
    assert per_month[7] < per_month[6] and per_month[7] < per_month[8]  # the July dip
    assert per_month[10] > per_month[1]  # the autumn surge
    assert abs(per_month[10] / len(year) - SESONG[9]) < 0.02


def _kommune(knr: str, pop: int, **kapasitet: tuple[int, int]) -> dict:
    return {
        "kommunenummer": knr,
        "innbyggjarar": pop,
        "tek_imot": True,
        "mindrearig_teneste": knr == "0301",
        "kapasitet": {g: {"plassar": p, "brukt": b} for g, (p, b) in kapasitet.items()},
    }


def test_no_extra_places_while_every_waiting_household_fits():
    kommunar_ = [_kommune("0301", 700_000, barnefamilie=(20, 10)), _kommune("4601", 290_000, barnefamilie=(8, 2))]
    assert tilleggsplassar([("barnefamilie", 6, []), ("barnefamilie", 5, []), ("barnefamilie", 4, [])], kommunar_) == {}


def test_a_household_that_fits_nowhere_gets_places_at_the_largest_kommune():
    kommunar_ = [_kommune("0301", 700_000, barnefamilie=(20, 17), vaksen=(5, 5)), _kommune("4601", 290_000, barnefamilie=(8, 4))]
    # 6 persons: Oslo has 3 free, Bergen 4; Oslo is asked for the 3 missing.
    assert tilleggsplassar([("barnefamilie", 6, [])], kommunar_) == {"0301": {"barnefamilie": 23, "vaksen": 5}}


def test_places_taken_by_earlier_waiting_households_count():
    kommunar_ = [_kommune("0301", 700_000, vaksen=(10, 8)), _kommune("4601", 290_000, vaksen=(3, 0))]
    # The first two take Bergen's 3 and Oslo's 2; the third fits nowhere.
    assert tilleggsplassar([("vaksen", 3, []), ("vaksen", 2, []), ("vaksen", 1, [])], kommunar_) == {"0301": {"vaksen": 11}}


def test_minors_go_only_to_kommunar_with_services_for_them_and_stopped_kommunar_are_not_asked():
    stopped = _kommune("4601", 900_000, einsleg_mindrearig=(0, 0)) | {"tek_imot": False}
    kommunar_ = [_kommune("0301", 700_000, einsleg_mindrearig=(1, 1)), _kommune("5001", 800_000), stopped]
    assert tilleggsplassar([("einsleg_mindrearig", 1, [])], kommunar_) == {"0301": {"einsleg_mindrearig": 2}}


def test_kommunar_that_refused_the_household_do_not_count():
    kommunar_ = [_kommune("0301", 700_000, vaksen=(10, 0)), _kommune("4601", 290_000, vaksen=(3, 0))]
    # Oslo refused it and Bergen is too small: the most populous kommune that did not refuse is asked.
    assert tilleggsplassar([("vaksen", 4, ["0301"])], kommunar_) == {"4601": {"vaksen": 4}}
