"""Anonymised aggregate statistics of refugees' competence, open to any authenticated
consumer. Pure: the caller fetches the grouped rows and serves the result.

What is published: one row per group (fylke, kategori, manad) — county number or
"ukjend" for persons not yet allocated, person category, and the month the competence
mapping was completed — with the number of persons, how many have each education level
(NIVA), how many have work experience and how many have Norwegian at B1 or above.

Suppression ("prikking", as Statistics Norway does it): no published number may reveal
a group of 1..TERSKEL-1 persons, and no suppressed number may be recomputable from the
published ones.

1. A group with fewer than TERSKEL persons is suppressed whole: every number None.
2. Within a published group, an education cell of 1..TERSKEL-1 persons is suppressed.
   A true 0 is published as 0 (accepted practice, though it does say nobody in the
   group has that level). So a suppressed cell is known to be at least 1.
3. Secondary suppression: the group total is published and the education cells add up
   to it, so total minus the published cells gives the sum of the suppressed ones. One
   suppressed cell would thus be recomputed exactly. We keep suppressing the smallest
   remaining non-zero cell (ties: first in NIVA order) until the suppressed cells are at
   least two, together hold at least TERSKEL persons (so the recoverable sum does not
   itself reveal a small group), and hold more persons than there are suppressed cells
   (otherwise, each being at least 1, every one of them is exactly 1). If no non-zero
   cell is left to suppress, the group total is suppressed instead.
4. `med_arbeid` and `norsk_b1` are single counts within the group: each is suppressed
   when it is 1..TERSKEL-1, and also when the persons without it (personar minus the
   count) are 1..TERSKEL-1, since that complement is derivable from the total.
5. No marginal totals across groups (per county, per month, overall) are published:
   column sums would let a suppressed cell be recovered from its neighbours.

`prikka` is True when anything in the row is None.
"""

from collections.abc import Iterable, Mapping

TERSKEL = 5  # cells with fewer persons are suppressed
NIVA = ("ingen", "grunnskule", "vidaregaande", "fagskule", "bachelor", "master", "doktorgrad")  # in this order


def tabell(rader: Iterable[Mapping]) -> list[dict]:
    """The published table: one dict per (fylke, kategori, manad), sorted by (manad, fylke, kategori)."""
    grupper: dict[tuple[str, str, str], dict] = {}
    for r in rader:
        # A misspelt level or an impossible count would silently skew the numbers the
        # suppression rules are computed from; refuse it instead.
        if r["niva"] not in NIVA:
            raise ValueError(f"unknown niva {r['niva']!r}")
        if not (r["personar"] > 0 and 0 <= r["med_arbeid"] <= r["personar"] and 0 <= r["norsk"] <= r["personar"]):
            raise ValueError(f"inconsistent counts in {dict(r)!r}")
        g = grupper.setdefault(
            (r["manad"], r["fylke"], r["kategori"]),
            {"utdanning": dict.fromkeys(NIVA, 0), "med_arbeid": 0, "norsk": 0},
        )
        g["utdanning"][r["niva"]] += r["personar"]
        g["med_arbeid"] += r["med_arbeid"]
        g["norsk"] += r["norsk"]
    return [_rad(fylke, kategori, manad, g) for (manad, fylke, kategori), g in sorted(grupper.items())]


def oppsummering(tabell: list[dict]) -> dict:
    """How many groups and how many suppressed numbers the table has."""
    prikka = sum(
        [rad["personar"], rad["med_arbeid"], rad["norsk_b1"], *rad["utdanning"].values()].count(None)
        for rad in tabell
    )
    return {"grupper": len(tabell), "prikka_celler": prikka, "terskel": TERSKEL}


def _liten(n: int) -> bool:
    return 0 < n < TERSKEL


def _rad(fylke: str, kategori: str, manad: str, g: dict) -> dict:
    personar = sum(g["utdanning"].values())
    if personar < TERSKEL:  # rule 1
        rad = {"personar": None, "utdanning": dict.fromkeys(NIVA), "med_arbeid": None, "norsk_b1": None}
    else:
        utdanning, skjul_total = _prikk_utdanning(g["utdanning"])
        rad = {
            "personar": None if skjul_total else personar,
            "utdanning": utdanning,
            # The complement rule uses the true total even when it is suppressed: cheap
            # caution, and the row stays safe if the total is ever published elsewhere.
            "med_arbeid": _prikk_tal(g["med_arbeid"], personar),
            "norsk_b1": _prikk_tal(g["norsk"], personar),
        }
    prikka = None in (rad["personar"], rad["med_arbeid"], rad["norsk_b1"], *rad["utdanning"].values())
    return {"fylke": fylke, "kategori": kategori, "manad": manad, **rad, "prikka": prikka}


def _prikk_utdanning(celler: dict[str, int]) -> tuple[dict[str, int | None], bool]:
    """Rules 2 and 3: the published education cells, and whether the total must be suppressed."""
    skjult = [n for n in NIVA if _liten(celler[n])]

    def trygg() -> bool:
        sum_skjult = sum(celler[n] for n in skjult)
        # (len >= 2 already follows from the sum, every primary cell being below TERSKEL;
        # it is spelt out because it is the rule that matters.)
        return not skjult or (len(skjult) >= 2 and sum_skjult >= TERSKEL and sum_skjult > len(skjult))

    skjul_total = False
    while not trygg():
        kandidatar = [n for n in NIVA if n not in skjult and celler[n] > 0]
        if not kandidatar:
            skjul_total = True  # without the total, the suppressed sum is no longer derivable
            break
        skjult.append(min(kandidatar, key=celler.__getitem__))  # min keeps the first of equals: NIVA order
    return {n: None if n in skjult else celler[n] for n in NIVA}, skjul_total


def _prikk_tal(tal: int, personar: int) -> int | None:
    """Rule 4: a count within the group, suppressed when it or its complement is small."""
    return None if _liten(tal) or _liten(personar - tal) else tal
