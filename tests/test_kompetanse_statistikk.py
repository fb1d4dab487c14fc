"""The pure suppression ("prikking") of kompetanse's aggregate statistics: hand-computed
small tables for each rule, then a property check over many random tables."""

import random

import pytest

from services.kompetanse.statistikk import NIVA, TERSKEL, oppsummering, tabell


def rader(utdanning: dict[str, int], fylke="03", kategori="overforing", manad="2024-05", med_arbeid=0, norsk=0):
    """Input rows for one group; med_arbeid/norsk are spread over the rows, each row's
    share at most its personar (the module sums them per group)."""
    out = []
    for niva, n in utdanning.items():
        a, b = min(med_arbeid, n), min(norsk, n)
        med_arbeid, norsk = med_arbeid - a, norsk - b
        out.append(
            {"fylke": fylke, "kategori": kategori, "manad": manad, "niva": niva, "personar": n, "med_arbeid": a, "norsk": b}
        )
    assert med_arbeid == norsk == 0, "more than the group's persons"
    return out


def ein(utdanning: dict[str, int], **kw) -> dict:
    (rad,) = tabell(rader(utdanning, **kw))
    return rad


def full(**celler: int) -> dict:
    return {n: celler.get(n, 0) for n in NIVA}


def test_small_group_is_suppressed_whole():
    rad = ein({"grunnskule": 2, "master": 1}, med_arbeid=3, norsk=0)
    assert rad == {
        "fylke": "03",
        "kategori": "overforing",
        "manad": "2024-05",
        "personar": None,
        "utdanning": dict.fromkeys(NIVA),
        "med_arbeid": None,
        "norsk_b1": None,
        "prikka": True,
    }


def test_group_without_small_cells_is_published_as_is_and_missing_niva_is_zero():
    rad = ein({"bachelor": 7, "grunnskule": 5}, med_arbeid=12, norsk=0)
    assert rad["personar"] == 12
    assert rad["utdanning"] == full(grunnskule=5, bachelor=7)
    assert (rad["med_arbeid"], rad["norsk_b1"], rad["prikka"]) == (12, 0, False)


def test_one_small_cell_forces_secondary_suppression_of_the_smallest_nonzero_cell():
    rad = ein({"grunnskule": 3, "vidaregaande": 12, "bachelor": 6, "master": 8}, med_arbeid=10, norsk=20)
    assert rad["personar"] == 29
    # grunnskule primary; bachelor (6) is the smallest non-zero left; zeros stay 0.
    assert rad["utdanning"] == {**full(vidaregaande=12, master=8), "grunnskule": None, "bachelor": None}
    assert (rad["med_arbeid"], rad["norsk_b1"], rad["prikka"]) == (10, 20, True)


def test_tie_for_secondary_goes_to_the_first_in_niva_order_not_input_order():
    rad = ein({"master": 9, "fagskule": 7, "ingen": 2, "grunnskule": 7})
    assert rad["utdanning"] == {**full(fagskule=7, master=9), "ingen": None, "grunnskule": None}
    assert rad["personar"] == 25


def test_two_small_cells_need_no_secondary_when_their_sum_is_safe():
    rad = ein({"ingen": 2, "fagskule": 4, "master": 6})
    assert rad["utdanning"] == {**full(master=6), "ingen": None, "fagskule": None}
    assert rad["personar"] == 12


def test_small_suppressed_sum_forces_more_suppression():
    # 1 + 1 would be derivable as 22 - 20 = 2, i.e. both exactly 1: hide master too.
    rad = ein({"ingen": 1, "grunnskule": 1, "master": 20})
    assert rad["utdanning"] == {**full(), "ingen": None, "grunnskule": None, "master": None}
    assert rad["personar"] == 22


def test_total_is_suppressed_when_only_zeros_are_left_to_hide():
    # Five cells of 1: their sum (5) is derivable from the total and pins each to 1, and
    # every other cell is 0, so nothing more can be hidden but the total.
    rad = ein({"ingen": 1, "grunnskule": 1, "vidaregaande": 1, "fagskule": 1, "bachelor": 1}, med_arbeid=0, norsk=5)
    assert rad["personar"] is None
    assert rad["utdanning"] == {**dict.fromkeys(NIVA[:5]), "master": 0, "doktorgrad": 0}
    assert (rad["med_arbeid"], rad["norsk_b1"], rad["prikka"]) == (0, 5, True)


def test_suppressed_cells_above_their_count_keep_the_total():
    rad = ein({"ingen": 1, "grunnskule": 1, "vidaregaande": 1, "fagskule": 1, "bachelor": 2})
    assert rad["personar"] == 6
    assert rad["utdanning"] == {**dict.fromkeys(NIVA[:5]), "master": 0, "doktorgrad": 0}


@pytest.mark.parametrize(
    ("med_arbeid", "forventa"),
    [(0, 0), (3, None), (5, 5), (8, None), (9, None), (10, 10)],
)
def test_med_arbeid_is_suppressed_when_it_or_its_complement_is_small(med_arbeid, forventa):
    rad = ein({"vidaregaande": 10}, med_arbeid=med_arbeid, norsk=10 - med_arbeid)
    assert rad["med_arbeid"] == forventa
    assert rad["norsk_b1"] == (None if forventa is None else 10 - med_arbeid)  # same rule, mirrored
    assert rad["prikka"] is (forventa is None)
    assert rad["personar"] == 10


def test_counts_are_summed_over_the_rows_of_a_group():
    rad = ein({"ingen": 6, "master": 6})
    assert rad["med_arbeid"] == 0
    rs = rader({"ingen": 6, "master": 6})
    rs[0]["med_arbeid"], rs[1]["med_arbeid"] = 3, 4
    rs[0]["norsk"], rs[1]["norsk"] = 6, 5
    (rad,) = tabell(rs)
    assert (rad["med_arbeid"], rad["norsk_b1"]) == (7, None)  # 12 - 11 = 1 without B1


def test_groups_are_sorted_by_manad_fylke_kategori():
    rs = (
        rader({"master": 6}, fylke="ukjend", kategori="a", manad="2024-01")
        + rader({"master": 6}, fylke="46", kategori="b", manad="2024-02")
        + rader({"master": 6}, fylke="03", kategori="b", manad="2024-01")
        + rader({"master": 6}, fylke="03", kategori="a", manad="2024-01")
        + rader({"master": 6}, fylke="03", kategori="a", manad="2023-12")
    )
    random.Random(1).shuffle(rs)
    assert [(r["manad"], r["fylke"], r["kategori"]) for r in tabell(rs)] == [
        ("2023-12", "03", "a"),
        ("2024-01", "03", "a"),
        ("2024-01", "03", "b"),
        ("2024-01", "ukjend", "a"),
        ("2024-02", "46", "b"),
    ]


def test_empty_input_and_bad_rows():
    assert tabell([]) == []
    with pytest.raises(ValueError, match="niva"):
        tabell(rader({"phd": 6}))
    with pytest.raises(ValueError, match="inconsistent"):
        tabell([{**rader({"master": 6})[0], "med_arbeid": 7}])


def test_oppsummering_counts_none_values():
    t = tabell(
        rader({"master": 3}, fylke="01")  # whole row: 1 + 7 + 2 = 10
        + rader({"ingen": 2, "grunnskule": 7, "master": 9}, fylke="02", med_arbeid=1)  # 2 cells + med_arbeid = 3
        + rader({"master": 6}, fylke="03")  # nothing
    )
    assert oppsummering(t) == {"grupper": 3, "prikka_celler": 13, "terskel": TERSKEL}
    assert oppsummering([]) == {"grupper": 0, "prikka_celler": 0, "terskel": TERSKEL}


def tilfeldig_tabell(rng: random.Random) -> list[dict]:
    """Random input rows, skewed towards small cells so suppression happens often. Keys
    repeat, so rows of one group also come from several draws."""
    rs = []
    for _ in range(rng.randint(1, 6)):
        key = {
            "fylke": rng.choice(["03", "46", "ukjend"]),
            "kategori": rng.choice("ab"),
            "manad": rng.choice(["2024-01", "2024-02"]),
        }
        kun_ein = rng.random() < 0.1  # groups of ones: the rare case where the total must be hidden
        for niva in rng.sample(NIVA, rng.randint(1, len(NIVA))):
            n = 1 if kun_ein else rng.choice([rng.randint(1, 4), rng.randint(1, 4), rng.randint(5, 30)])
            norsk = rng.choice([0, n, rng.randint(0, n)])
            rs.append({**key, "niva": niva, "personar": n, "med_arbeid": rng.randint(0, n), "norsk": norsk})
    rng.shuffle(rs)
    return rs


def sannheit(rs: list[dict]) -> dict:
    """The true counts per group, computed independently of the module."""
    out: dict = {}
    for r in rs:
        g = out.setdefault(
            (r["fylke"], r["kategori"], r["manad"]), {"utdanning": dict.fromkeys(NIVA, 0), "a": 0, "n": 0}
        )
        g["utdanning"][r["niva"]] += r["personar"]
        g["a"] += r["med_arbeid"]
        g["n"] += r["norsk"]
    return out


def test_property_nothing_small_is_published_or_recomputable():
    sett = {"heil_rad": 0, "sekundaer": 0, "total_skjult": 0, "tal_skjult": 0}
    for seed in range(3000):
        rng = random.Random(seed)
        rs = tilfeldig_tabell(rng)
        fasit = sannheit(rs)
        t = tabell(rs)
        assert len(t) == len(fasit)
        assert [(r["manad"], r["fylke"], r["kategori"]) for r in t] == sorted((m, f, k) for f, k, m in fasit)
        for rad in t:
            sann = fasit[(rad["fylke"], rad["kategori"], rad["manad"])]
            total = sum(sann["utdanning"].values())
            tal = [rad["personar"], rad["med_arbeid"], rad["norsk_b1"], *rad["utdanning"].values()]
            # Nothing published is small, and everything published is true.
            assert not any(v is not None and 0 < v < TERSKEL for v in tal), (seed, rad)
            assert rad["personar"] in (None, total)
            for niva, v in rad["utdanning"].items():
                assert v in (None, sann["utdanning"][niva])
                if 0 < sann["utdanning"][niva] < TERSKEL:
                    assert v is None
            assert rad["med_arbeid"] in (None, sann["a"])
            assert rad["norsk_b1"] in (None, sann["n"])
            assert rad["prikka"] is (None in tal)
            if total < TERSKEL:
                assert all(v is None for v in tal)
                sett["heil_rad"] += 1
                continue
            for v, sann_tal in ((rad["med_arbeid"], sann["a"]), (rad["norsk_b1"], sann["n"])):
                if v is not None:
                    assert not 0 < total - v < TERSKEL  # the complement is not small
                else:
                    sett["tal_skjult"] += 1
            publisert = [v for v in rad["utdanning"].values() if v is not None]
            skjulte = [n for n, v in rad["utdanning"].items() if v is None]
            assert all(v <= total for v in publisert)
            assert sum(publisert) + sum(sann["utdanning"][n] for n in skjulte) == total
            assert all(sann["utdanning"][n] > 0 for n in skjulte)  # zeros are never hidden
            if rad["personar"] is None:
                sett["total_skjult"] += 1
                assert skjulte  # the total is only hidden to protect cells
                continue
            if skjulte:
                # An attacker knows the suppressed cells sum to rest and are each >= 1, so
                # each lies in 1..rest-(k-1): no cell is pinned and the rest is not small.
                rest, k = total - sum(publisert), len(skjulte)
                assert k >= 2 and rest >= TERSKEL
                assert rest - (k - 1) > 1, (seed, rad)
                if any(sann["utdanning"][n] >= TERSKEL for n in skjulte):
                    sett["sekundaer"] += 1
    # The random tables must actually exercise every rule, or the checks above prove little.
    assert all(n > 20 for n in sett.values()), sett
