"""Allocation quality and speed: the batch optimiser (MILP with HiGHS) against IMDi's greedy
rule, on a synthetic workload calibrated to 2023 (`python -m bench.allocation [--quick]
[--seed N] [--scale S]`).

Reported in one run:
- a weekly batch at 2023 volume (~700 persons, mid-year state);
- the 31.12.2023 backlog (~7,000 persons ready) in one batch, against the next year's decided
  places (the backlog is allocated in January; 2024's places assumed equal to 2023's);
- a year of seasonal weekly arrivals (scaled by --scale: a systematic sample of the kommunar
  with their full places, see `lag_verd`), allocated week by week by the optimiser, by the
  optimiser with a forecast (the last 4 weeks' arrivals replayed as `prognose`) and by the
  greedy rule, each compared with the hindsight optimum (one MILP over the whole year's
  households and the year's places, knowing every arrival);
- fairness: match score per person, attainment and waiting days by gender and nationality.

"Match quality" (Q) is the sum of the terms that say how well a household fits a kommune
and do not change with time or fill level (`allokering.MATCH_LEDD`: upper-secondary school,
hospital, network, bustadkommune, sector, education). Urgency and even use steer WHEN and
WHO; they are not part of Q. The hindsight solve maximises basis (1 per person settled) + Q.

Calibration (shared/DOMAIN.md, Figures): 33,701 settled in 2023, of whom 647 minors, 20,159
in 6,515 families (3.1 per family) and 12,894 other adults; 36,082 decided places, 93% used;
7,064 ready at 31.12.2023; 3.3% with særlege behov; under two thirds mapped before
settlement; arrivals peak in spring and autumn, dip in July and surge from week 36.
Assumptions not in the sources are marked ASSUMPTION below.

Writes bench/results/allocation.json and allocation.md (`--quick`: allocation-quick.*).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from uuid import uuid4

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.bosetting import allokering as al
from services.bosetting.referansedata import default_kommunar, default_tilbod
from shared.catalogue import Kategori

RESULTS = Path(__file__).resolve().parent / "results"
G = Kategori

# --- calibration ------------------------------------------------------------------------

SETTLED_2023 = 33_701
DECIDED_2023 = 36_082
USED_SHARE_2023 = 0.93
BACKLOG_2023 = 7_064
# Persons settled per group in 2023 and households: minors one each, 6,515 families,
# other adults in households of 1.23 on average (ASSUMPTION: 80% alone, 17% two, 3% three).
PERSONAR_2023 = {G.einsleg_mindrearig: 647, G.barnefamilie: 20_159, G.vaksen: 12_894}
VAKSEN_STORLEIK = ((1, 0.80), (2, 0.17), (3, 0.03))
_VAKSEN_SNITT = sum(n * p for n, p in VAKSEN_STORLEIK)
HUSHALD_2023 = {G.einsleg_mindrearig: 647, G.barnefamilie: 6_515, G.vaksen: round(12_894 / _VAKSEN_SNITT)}
# Decided places per group: the 2023 persons per group over the 93% use, scaled to 36,082.
_BEHOV = {g: n / USED_SHARE_2023 for g, n in PERSONAR_2023.items()}
PLASSAR_GRUPPE = {g: round(v * DECIDED_2023 / sum(_BEHOV.values())) for g, v in _BEHOV.items()}
# ASSUMPTION: nationality mix per group, approximating 2023 (Ukraine by far the largest,
# then Syria, Afghanistan, Eritrea; minors more often from Afghanistan and Syria).
NASJONALITET = {
    G.einsleg_mindrearig: {"UKR": 0.45, "AFG": 0.25, "SYR": 0.20, "ERI": 0.05, "annan": 0.05},
    G.barnefamilie: {"UKR": 0.82, "SYR": 0.09, "AFG": 0.03, "ERI": 0.02, "annan": 0.04},
    G.vaksen: {"UKR": 0.74, "SYR": 0.08, "AFG": 0.06, "ERI": 0.05, "annan": 0.07},
}
# ASSUMPTION: share of women among adults (many Ukrainian men of conscription age stayed).
KVINNEDEL_VAKSNE = {"UKR": 0.62, "SYR": 0.40, "AFG": 0.35, "ERI": 0.40, "annan": 0.42}
KVINNEDEL_MINDREARIGE = {"UKR": 0.45, "SYR": 0.15, "AFG": 0.08, "ERI": 0.30, "annan": 0.25}
DEL_X = 0.002  # ASSUMPTION: registered gender X
SAERLEGE_BEHOV = 0.033
KARTLAGT = 0.62  # under two thirds mapped before settlement (2023)
UTDANNING = {  # ASSUMPTION: education of mapped adults
    "UKR": (0.01, 0.05, 0.25, 0.15, 0.30, 0.22, 0.02),
    "other": (0.15, 0.30, 0.25, 0.07, 0.15, 0.07, 0.01),
}
SEKTOR_VEKT = {  # ASSUMPTION: sectors of work experience
    "helse": 12, "undervisning": 10, "bygg": 12, "transport": 10, "reiseliv": 8, "industri": 12,
    "varehandel": 12, "landbruk": 5, "havbruk": 2, "olje_energi": 3, "it": 6, "offentleg": 8,
}
NETTVERK = {"UKR": 0.35, "other": 0.25}  # ASSUMPTION: households with a close-relative kommune
PRIVATBUANDE = {"UKR": 0.15, "other": 0.03}  # ASSUMPTION: households living privately
PROGNOSE_VEKER = 4  # the forecast variant replays the last 4 weeks' arrivals
TEK_IKKJE_IMOT = 0.02  # ASSUMPTION: kommunar reporting "cannot take new allocations" at a time
UTAN_PLASSAR = 6  # 356 asked, 350 settled someone: 6 without decided places


def sesong(veke: int) -> float:
    """Relative arrivals in week 1..52: peaks in spring and autumn, a dip in July, a surge
    from week 36 (DOMAIN.md; the shape is an ASSUMPTION, the total is 2023's)."""
    vaar = 0.35 * math.exp(-(((veke - 16) / 5) ** 2))
    juli = -0.45 * math.exp(-(((veke - 29) / 2.5) ** 2))
    haust = 0.40 / (1 + math.exp(-(veke - 36.5) * 1.5))
    return 1.0 + vaar + juli + haust


# --- the world: kommunar and their decided places -----------------------------------------


@dataclass
class Verd:
    kommunar: list  # referansedata.Kommune
    tilbod: dict  # knr -> referansedata.Tilbod
    plassar: dict[str, dict[Kategori, int]]  # year's decided places
    pop_vekt: list[float]  # for network and bustadkommune draws

    def tilstand(self, brukt: dict[str, dict[Kategori, int]], tek_ikkje: set[str]) -> list[al.KommuneTilstand]:
        ut = []
        for k in self.kommunar:
            t = self.tilbod[k.kommunenummer]
            pl = self.plassar[k.kommunenummer]
            ut.append(al.KommuneTilstand(
                kommunenummer=k.kommunenummer,
                fylke=k.fylke,
                ledige={g: pl[g] - brukt.get(k.kommunenummer, {}).get(g, 0) for g in G},
                plassar=dict(pl),
                vidaregaande=t.vidaregaande,
                sjukehus=t.sjukehus,
                mindrearig_teneste=t.mindrearig_teneste,
                sektorar=t.sektorar,
                tek_imot=k.kommunenummer not in tek_ikkje,
                innbyggjarar=k.innbyggjarar,
            ))
        return ut


def _fordel(total: int, vekt: list[float]) -> list[int]:
    """Integers summing to `total`, proportional to `vekt` (largest remainder)."""
    s = sum(vekt)
    raw = [total * v / s for v in vekt]
    heil = [int(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - heil[i], reverse=True)[: total - sum(heil)]:
        heil[i] += 1
    return heil


def lag_verd(rng: random.Random, skala: float = 1.0) -> Verd:
    """The 356 kommunar with 2023's decided places. A scaled world (skala < 1) keeps a
    systematic sample of the kommunar by population (every 1/skala-th, from a random
    start) with their FULL places, rather than shrinking every kommune's places: shrunk
    places (a kommune with 2 places for families) would make households of 3-6 hard to pack
    and punish any online method for fragmentation that the real problem does not have."""
    kommunar = default_kommunar()
    tilbod = default_tilbod()
    assert len(kommunar) == 356, len(kommunar)  # the 2023 kommunar
    # ASSUMPTION: places spread by population^0.85 (smaller kommunar take relatively more:
    # "styrt og spreidd"), with lognormal noise; minors only where there is a service.
    utan = set(rng.sample([k.kommunenummer for k in kommunar], UTAN_PLASSAR))
    vekt = [0.0 if k.kommunenummer in utan else k.innbyggjarar**0.85 * rng.lognormvariate(0, 0.3) for k in kommunar]
    plassar = {k.kommunenummer: {} for k in kommunar}
    for g, total in PLASSAR_GRUPPE.items():
        if g == G.einsleg_mindrearig:
            v = [x if tilbod[k.kommunenummer].mindrearig_teneste else 0.0 for x, k in zip(vekt, kommunar)]
        else:
            v = vekt
        for k, n in zip(kommunar, _fordel(total, v)):
            plassar[k.kommunenummer][g] = n
    if skala < 1.0:
        steg = 1.0 / skala
        etter_storleik = sorted(kommunar, key=lambda k: -k.innbyggjarar)
        start = rng.uniform(0, steg)
        val = {etter_storleik[int(start + i * steg)].kommunenummer for i in range(int((len(kommunar) - start) / steg) + 1)
               if int(start + i * steg) < len(kommunar)}
        kommunar = [k for k in kommunar if k.kommunenummer in val]
        plassar = {knr: pl for knr, pl in plassar.items() if knr in val}
    return Verd(kommunar, tilbod, plassar, [k.innbyggjarar for k in kommunar])


# --- households ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sak:
    hushald: al.Hushald
    nasjonalitet: str
    veke: int  # week it became fordelingsklar (year simulation)


def _medlem(rng: random.Random, alder: int, kjonn: str, nasj: str) -> al.Medlem:
    behov = rng.random() < (0.028 + 0.10 * (alder >= 67))  # 3.3% in all
    utd, sektorar = None, frozenset()
    if alder >= 18 and rng.random() < KARTLAGT:
        utd = rng.choices(al.UTDANNINGSNIVA, UTDANNING["UKR" if nasj == "UKR" else "other"])[0]
        if alder <= 66:
            tal = rng.choices((0, 1, 2), (0.3, 0.5, 0.2))[0]
            sektorar = frozenset(rng.choices(list(SEKTOR_VEKT), list(SEKTOR_VEKT.values()), k=tal))
    return al.Medlem(alder, kjonn, behov, utd, sektorar)


def _kjonn(rng: random.Random, kvinnedel: float) -> str:
    if rng.random() < DEL_X:
        return "X"
    return "K" if rng.random() < kvinnedel else "M"


def lag_sak(rng: random.Random, verd: Verd, sak_id: str, ventedagar: int, veke: int = 0, avslag: float = 0.0) -> Sak:
    g = rng.choices(list(HUSHALD_2023), list(HUSHALD_2023.values()))[0]
    nasj = rng.choices(list(NASJONALITET[g]), list(NASJONALITET[g].values()))[0]
    kd = KVINNEDEL_VAKSNE[nasj]
    if g == G.einsleg_mindrearig:  # IMDi settles minors aged 15-17
        medlemmer = [_medlem(rng, rng.randint(15, 17), _kjonn(rng, KVINNEDEL_MINDREARIGE[nasj]), nasj)]
    elif g == G.barnefamilie:  # ~1.6 adults + ~1.5 children = 3.1 on average
        vaksne = 1 if rng.random() < (0.45 if nasj == "UKR" else 0.2) else 2
        einsleg_kjonn = "K" if rng.random() < 0.85 else "M"
        medlemmer = [
            _medlem(rng, rng.randint(22, 52), einsleg_kjonn if vaksne == 1 else ("K" if i == 0 else "M"), nasj)
            for i in range(vaksne)
        ]
        born = 1 + np.random.default_rng(rng.getrandbits(32)).poisson(0.4 if vaksne == 2 else 0.6)
        medlemmer += [_medlem(rng, rng.randint(0, 17), _kjonn(rng, 0.5), nasj) for _ in range(born)]
    else:
        n = rng.choices([n for n, _ in VAKSEN_STORLEIK], [p for _, p in VAKSEN_STORLEIK])[0]
        medlemmer = []
        for _ in range(n):
            band = rng.choices(((18, 29), (30, 49), (50, 66), (67, 85)), (30, 40, 20, 10))[0]
            alder = rng.randint(*band)
            medlemmer.append(_medlem(rng, alder, _kjonn(rng, kd), nasj))
    knr = [k.kommunenummer for k in verd.kommunar]
    grp = "UKR" if nasj == "UKR" else "other"
    nettverk = frozenset(rng.choices(knr, verd.pop_vekt, k=1)) if rng.random() < NETTVERK[grp] else frozenset()
    bustad = rng.choices(knr, verd.pop_vekt)[0] if rng.random() < PRIVATBUANDE[grp] else None
    avslatt = frozenset(rng.sample(knr, 1)) if rng.random() < avslag else frozenset()
    frist = 180 if g == G.vaksen else 90
    return Sak(
        al.Hushald(sak_id, g, tuple(medlemmer), ventedagar, frist - ventedagar, avslatt - {bustad}, bustad, nettverk),
        nasj,
        veke,
    )


def lag_saker(rng, verd, personar: int, prefix: str, ventedagar, veke: int = 0, avslag: float = 0.0) -> list[Sak]:
    ut, n = [], 0
    while n < personar:
        s = lag_sak(rng, verd, f"{prefix}-{len(ut):06d}", ventedagar(), veke, avslag)
        ut.append(s)
        n += s.hushald.personar
    return ut


def kalibrering(saker: list[Sak]) -> dict:
    """What the generator produced, to compare with the 2023 figures it is calibrated to."""
    personar = [m for s in saker for m in s.hushald.medlemmer]
    n = len(personar)
    fam = [s.hushald.personar for s in saker if s.hushald.kategori == G.barnefamilie]
    per_gruppe = {g.value: sum(s.hushald.personar for s in saker if s.hushald.kategori == g) / n for g in G}
    nasj = {}
    for s in saker:
        nasj[s.nasjonalitet] = nasj.get(s.nasjonalitet, 0) + s.hushald.personar / n
    return {
        "personar": n,
        "hushald": len(saker),
        "del_per_gruppe": {k: round(v, 3) for k, v in per_gruppe.items()},
        "del_per_gruppe_2023": {g.value: round(v / SETTLED_2023, 3) for g, v in PERSONAR_2023.items()},
        "familiestorleik": round(sum(fam) / len(fam), 2) if fam else None,
        "familiestorleik_2023": round(PERSONAR_2023[G.barnefamilie] / HUSHALD_2023[G.barnefamilie], 2),
        "saerlege_behov": round(sum(m.saerlege_behov for m in personar) / n, 4),
        "saerlege_behov_2023": SAERLEGE_BEHOV,
        "kvinner": round(sum(m.kjonn == "K" for m in personar) / n, 3),
        "kartlagde_vaksne": round(sum(m.utdanningsniva is not None for m in personar if m.alder >= 18)
                                  / max(1, sum(m.alder >= 18 for m in personar)), 3),
        "nasjonalitet": {k: round(v, 3) for k, v in sorted(nasj.items())},
        "privatbuande_hushald": round(sum(s.hushald.bustadkommune is not None for s in saker) / len(saker), 3),
        "nettverk_hushald": round(sum(bool(s.hushald.nettverk) for s in saker) / len(saker), 3),
    }


def _brukt_midt(rng, verd: Verd, arsdel: float) -> dict[str, dict[Kategori, int]]:
    """Places used by mid-year: pro-rata at 2023's 93% use, with kommune-level noise."""
    return {
        knr: {g: min(pl[g], round(pl[g] * arsdel * USED_SHARE_2023 * rng.uniform(0.6, 1.4))) for g in G}
        for knr, pl in verd.plassar.items()
    }


# --- measuring ----------------------------------------------------------------------------


def q_av(forslag: al.Forslag) -> float:
    return sum(forslag.ledd[t] for t in al.MATCH_LEDD)


def samanlikn(saker: list[Sak], kommunar, arsdel: float, tidsgrense: float) -> dict:
    hushald = [s.hushald for s in saker]
    opt = al.optimer(hushald, kommunar, arsdel=arsdel, tidsgrense=tidsgrense)
    gr = al.gradig(hushald, kommunar, arsdel=arsdel)
    personar = sum(h.personar for h in hushald)
    # Both report the same Lagrangian bound; the optimiser may tighten it with its MILP's
    # bound. Both gaps are against the best proven bound, so they compare.
    grense = min(opt.ovre_grense, gr.ovre_grense)

    def fig(r: al.Resultat) -> dict:
        return {
            "sekund": round(r.sekund, 2),
            "objektiv": round(r.objektiv, 2),
            "ovre_grense": round(grense, 2),
            "gap": (grense - r.objektiv) / max(abs(grense), 1e-9),
            "kandidatar": r.kandidatar,
            "tildelte_personar": sum(h.personar for h in hushald if h.sak_id in r.forslag),
            "utsette_hushald": len(r.utsett),
            "q": round(sum(q_av(f) for f in r.forslag.values()), 2),
            "diagnostikk": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.diagnostikk.items()},
        }

    o, g = fig(opt), fig(gr)
    return {
        "hushald": len(hushald),
        "personar": personar,
        "optimer": o,
        "gradig": g | {"sekund_regel": round(gr.diagnostikk.get("gradig_sekund", 0.0), 3)},
        "score_ratio": opt.objektiv / gr.objektiv if gr.objektiv else None,
        "q_ratio": o["q"] / g["q"] if g["q"] else None,
    }


def veke_batch(rng, verd: Verd, tidsgrense: float) -> dict:
    arsdel = 0.5  # week 26
    brukt = _brukt_midt(rng, verd, arsdel)
    tek_ikkje = set(rng.sample(list(verd.plassar), round(TEK_IKKJE_IMOT * len(verd.plassar))))
    personar = round(SETTLED_2023 / 52)
    saker = lag_saker(rng, verd, personar, "veke", lambda: rng.randint(20, 75), avslag=0.03)
    return samanlikn(saker, verd.tilstand(brukt, tek_ikkje), arsdel, tidsgrense)


def etterslep_batch(rng, verd: Verd, tidsgrense: float) -> dict:
    # Waiting since the vedtak: mapping takes 3+ weeks, then a long tail (ASSUMPTION).
    saker = lag_saker(rng, verd, BACKLOG_2023, "etterslep", lambda: 20 + int(rng.expovariate(1 / 60)), avslag=0.05)
    tek_ikkje = set(rng.sample(list(verd.plassar), round(TEK_IKKJE_IMOT * len(verd.plassar))))
    return samanlikn(saker, verd.tilstand({}, tek_ikkje), 0.0, tidsgrense)


# --- a year of weekly batches -------------------------------------------------------------


@dataclass
class Tildeling:
    sak: Sak
    kommunenummer: str
    veke: int
    ventedagar: int
    forslag: al.Forslag


def aar(rng, verd: Verd, skala: float, tidsgrense: float, progress: Progress, vekter: al.Vekter = al.VEKTER,
        fasit_tid: float = 60.0) -> dict:
    vekt = [sesong(v) for v in range(1, 53)]
    # the year's arrivals: 2023's persons per decided place, on the (sampled) kommunar's places
    plassar = sum(sum(p.values()) for p in verd.plassar.values())
    per_veke = _fordel(round(plassar * SETTLED_2023 / DECIDED_2023), vekt)
    ankomst: list[list[Sak]] = []
    for v, n in enumerate(per_veke, start=1):
        ankomst.append(lag_saker(rng, verd, n, f"aar-v{v:02d}", lambda: rng.randint(20, 60), veke=v) if n else [])
    # No weekly "cannot take new allocations" here (the single batches have it): the
    # hindsight solve has no weeks, so random closures would only penalise the online methods.
    tek_ikkje: list[set[str]] = [set() for _ in range(52)]
    alle = [s for veke in ankomst for s in veke]

    def simuler(algoritme: str, task) -> dict:
        brukt: dict[str, dict[Kategori, int]] = {}
        ventar: list[Sak] = []
        tildelt: list[Tildeling] = []
        sekund, gap = [], []
        for v in range(1, 53):
            # one week passes for those still waiting
            ventar = [replace(s, hushald=replace(s.hushald, ventedagar=s.hushald.ventedagar + 7,
                                                 dagar_til_frist=s.hushald.dagar_til_frist - 7)) for s in ventar]
            ventar += ankomst[v - 1]
            ventar.sort(key=lambda s: (-s.hushald.ventedagar, s.hushald.sak_id))  # the queue: oldest first
            kommunar = verd.tilstand(brukt, tek_ikkje[v - 1])
            hushald = [s.hushald for s in ventar]
            arsdel = (v - 0.5) / 52
            if algoritme == "milp":
                r = al.optimer(hushald, kommunar, arsdel=arsdel, vekter=vekter, tidsgrense=tidsgrense)
            elif algoritme == "prognose":
                r = al.optimer(hushald, kommunar, arsdel=arsdel, vekter=vekter, tidsgrense=tidsgrense,
                               prognose=prognose(v))
            else:
                r = al.gradig(hushald, kommunar, arsdel=arsdel, vekter=vekter)
            sekund.append(r.diagnostikk.get("gradig_sekund", r.sekund))
            gap.append(r.gap)
            att = []
            for s in ventar:
                f = r.forslag.get(s.hushald.sak_id)
                if f is None:
                    att.append(s)
                    continue
                d = brukt.setdefault(f.kommunenummer, {})
                d[s.hushald.kategori] = d.get(s.hushald.kategori, 0) + s.hushald.personar
                tildelt.append(Tildeling(s, f.kommunenummer, v, s.hushald.ventedagar, f))
            ventar = att
            progress.advance(task)
        return {"tildelt": tildelt, "ventar": ventar, "sekund": sekund, "gap": gap, "brukt": brukt}

    def prognose(v: int) -> list[al.Hushald]:
        """The forecast a service can make from its own history: the arrivals of the last
        PROGNOSE_VEKER weeks (this one included) replayed as next weeks' demand, for at most
        the weeks left of the year."""
        ut = []
        for i in range(min(PROGNOSE_VEKER, 52 - v)):
            for s in ankomst[max(v - 1 - i, 0)]:
                h = s.hushald
                frist = h.ventedagar + h.dagar_til_frist
                ut.append(replace(h, sak_id=f"prognose-{i}-{h.sak_id}", ventedagar=30, dagar_til_frist=frist - 30))
        return ut

    sims = {}
    for namn, algoritme, label in (("optimer", "milp", "optimiser"),
                                   ("prognose", "prognose", f"optimiser + {PROGNOSE_VEKER}-week forecast"),
                                   ("gradig", "gradig", "greedy")):
        sims[namn] = simuler(algoritme, progress.add_task(f"year: {label}, weekly", total=52))

    t_h = progress.add_task("year: hindsight MILP", total=1)
    hushald = [replace(s.hushald, ventedagar=0, dagar_til_frist=10**6) for s in alle]
    etterpaa = replace(vekter, venting=0.0, frist=0.0, jamn_bruk=0.0)
    kommunar = verd.tilstand({}, set())
    fasit = al.optimer(hushald, kommunar, arsdel=0.0, vekter=etterpaa, tidsgrense=fasit_tid)
    progress.advance(t_h)
    q_fasit = sum(q_av(f) for f in fasit.forslag.values())
    beste = dict(zip((h.sak_id for h in hushald), al.beste_match(hushald, kommunar)))
    personar = sum(h.personar for h in hushald)

    def oppsummer(sim: dict) -> dict:
        q = sum(q_av(t.forslag) for t in sim["tildelt"])
        settled = sum(t.sak.hushald.personar for t in sim["tildelt"])
        veker_i_ko = sum((t.veke - t.sak.veke) * t.sak.hushald.personar for t in sim["tildelt"]) / max(settled, 1)
        return {
            "q": round(q, 2),
            "q_ledd": {n: round(sum(t.forslag.ledd[n] for t in sim["tildelt"]), 2) for n in al.MATCH_LEDD},
            "q_del_av_fasit": q / q_fasit if q_fasit else None,
            "basis_pluss_q_del_av_fasit": (settled + q) / fasit.objektiv if fasit.objektiv else None,
            "tildelte_personar": settled,
            "ventande_personar_ved_aarsslutt": sum(s.hushald.personar for s in sim["ventar"]),
            "veker_i_ko_snitt": round(veker_i_ko, 3),  # weeks from fordelingsklar to proposal, per person
            "sekund_per_veke_snitt": round(float(np.mean(sim["sekund"])), 3),
            "sekund_per_veke_maks": round(float(np.max(sim["sekund"])), 3),
            "gap_per_veke_maks": float(np.max(sim["gap"])),
            "kapasitetsbruk": settled / sum(sum(p.values()) for p in verd.plassar.values()),
        }

    fasit_fig = {
        "q": round(q_fasit, 2),
        "q_ledd": {n: round(sum(f.ledd[n] for f in fasit.forslag.values()), 2) for n in al.MATCH_LEDD},
        "objektiv": round(fasit.objektiv, 2),
        "ovre_grense": round(fasit.ovre_grense, 2),
        "gap": fasit.gap,
        "tildelte_personar": sum(h.personar for h in hushald if h.sak_id in fasit.forslag),
        "sekund": round(fasit.sekund, 2),
        "kandidatar": fasit.kandidatar,
        "diagnostikk": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in fasit.diagnostikk.items()},
    }
    return {
        "skala": skala,
        "kommunar": len(verd.kommunar),
        "kalibrering": kalibrering(alle),
        "personar": personar,
        "hushald": len(hushald),
        "plassar": sum(sum(p.values()) for p in verd.plassar.values()),
        "ankomst_per_veke": per_veke,
        "fasit": fasit_fig,
        "prognose_veker": PROGNOSE_VEKER,
        **{m: oppsummer(sim) for m, sim in sims.items()},
        "rettferd": {m: rettferd(sim, kommunar, beste) for m, sim in sims.items()},
    }


def _fordeling(x: list[float]) -> dict:
    if not x:
        return {"n": 0}
    a = np.asarray(x, dtype=float)
    return {
        "n": len(a),
        "snitt": round(float(a.mean()), 3),
        "p10": round(float(np.percentile(a, 10)), 3),
        "median": round(float(np.median(a)), 3),
        "p90": round(float(np.percentile(a, 90)), 3),
    }


SMAA_GRUPPER = 30  # groups with fewer settled persons are marked, their means are noise


def rettferd(sim: dict, kommunar: list[al.KommuneTilstand], beste: dict[str, float]) -> dict:
    """Per settled person: Q attributed to the member (person-level terms to the member,
    household-level ones shared), the household's attainment (its Q over the best Q any
    kommune with places for its group could give it: how well it was matched given who it
    is), and waiting days; by gender and nationality group. Persons still waiting at the
    year's end count with the days waited so far."""
    by_knr = {k.kommunenummer: k for k in kommunar}
    skaar: dict[tuple[str, str], list[float]] = {}
    oppnaadd: dict[tuple[str, str], list[float]] = {}
    vent: dict[tuple[str, str], list[float]] = {}

    def grupper(m: al.Medlem, nasj: str):
        return (("alle", "alle"), ("kjonn", m.kjonn), ("nasjonalitet", nasj))

    for t in sim["tildelt"]:
        per = al.ledd_per_person(t.sak.hushald, by_knr[t.kommunenummer], arsdel=0.0)
        best = beste[t.sak.hushald.sak_id]
        ratio = q_av(t.forslag) / best if best > 1e-9 else 1.0
        for m, ledd in zip(t.sak.hushald.medlemmer, per):
            q = sum(ledd[n] for n in al.MATCH_LEDD)
            for key in grupper(m, t.sak.nasjonalitet):
                skaar.setdefault(key, []).append(q)
                oppnaadd.setdefault(key, []).append(ratio)
                vent.setdefault(key, []).append(t.ventedagar)
    for s in sim["ventar"]:
        for m in s.hushald.medlemmer:
            for key in grupper(m, s.nasjonalitet):
                vent.setdefault(key, []).append(s.hushald.ventedagar)
    alle = ("alle", "alle")
    snitt = float(np.mean(skaar[alle])) if skaar.get(alle) else 0.0
    snitt_oppn = float(np.mean(oppnaadd[alle])) if oppnaadd.get(alle) else 0.0
    ut = []
    for key in sorted(vent, key=lambda k: (k[0] != "alle", k)):
        sk = _fordeling(skaar.get(key, []))
        op = _fordeling(oppnaadd.get(key, []))
        ut.append({
            "dimensjon": key[0],
            "gruppe": key[1],
            "score": sk,
            "oppnaadd": op,
            "ventedagar": _fordeling(vent[key]),
            "flagg": bool(sk.get("n", 0) and sk["snitt"] < 0.9 * snitt),
            "flagg_oppnaadd": bool(op.get("n", 0) and op["snitt"] < 0.9 * snitt_oppn),
            "lita_gruppe": sk.get("n", 0) < SMAA_GRUPPER,
        })
    return {"snitt_alle": round(snitt, 3), "snitt_oppnaadd": round(snitt_oppn, 3), "grupper": ut}


# --- report -------------------------------------------------------------------------------


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def markdown(r: dict) -> str:
    out = [
        "# Allocation benchmark: batch optimiser (MILP, HiGHS) vs IMDi's greedy rule",
        "",
        f"Run {r['run_id']} on {r['machine']}, seed {r['seed']}, {'quick' if r['quick'] else 'full'} mode, "
        f"{r['sekund_totalt']:.0f} s in all. Synthetic workload calibrated to 2023 (see bench/allocation.py).",
        "",
        "Score: basis 1 per person + match terms + urgency + even use (services/bosetting/allokering.py, Vekter). "
        "Q (match quality) = upper-secondary school + hospital + network + bustadkommune + sector + education terms. "
        "Gap = (proven upper bound on the FULL unpruned problem - objective) / bound.",
        "",
        "## Single batches",
        "",
        "| batch | households | persons | method | seconds | proven gap | candidate pairs | assigned persons | "
        "deferred households | score | Q |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for navn, b in (("weekly (2023 volume, mid-year)", r["veke"]), ("backlog 31.12.2023 (one batch)", r["etterslep"])):
        for m, label in (("optimer", "optimiser"), ("gradig", "greedy")):
            f = b[m]
            sek = f"{f['sekund']:.2f}" + (f" (rule {b['gradig']['sekund_regel']:.2f})" if m == "gradig" else "")
            out.append(
                f"| {navn} | {b['hushald']} | {b['personar']} | {label} | {sek} | {100 * f['gap']:.3f}% | {f['kandidatar']} | "
                f"{f['tildelte_personar']} | {f['utsette_hushald']} | {f['objektiv']:.1f} | {f['q']:.1f} |"
            )
        out.append(f"| {navn} | | | optimiser / greedy | | | | | | {b['score_ratio']:.3f} | {b['q_ratio']:.3f} |")
    y = r["aar"]
    out += [
        "",
        f"Greedy's seconds include proving the same bound (an LP); the rule alone is in brackets.",
        "",
        f"## A year of weekly batches (scale {y['skala']}: {y['kommunar']} of the 356 kommunar with their full places, "
        f"{y['plassar']} decided places, {y['personar']} persons in {y['hushald']} households)",
        "",
        "Hindsight optimum: one MILP over all the year's households and the year's places, knowing every arrival, "
        "maximising basis + Q (no urgency, no even-use term). Share = method's Q / hindsight's Q.",
        "",
        "| method | Q | share of hindsight Q | share of hindsight (basis + Q) | persons settled | persons waiting at year end | "
        "weeks in queue (mean) | capacity use | s/week mean | s/week max | max weekly gap |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    f = y["fasit"]
    out.append(
        f"| hindsight (proven gap {100 * f['gap']:.3f}%, {f['sekund']:.1f} s, {f['kandidatar']} pairs) | "
        f"{f['q']:.1f} | 100% | 100% | "
        f"{f['tildelte_personar']} | | | | | | |"
    )
    for m, label in (("optimer", "optimiser, weekly"), ("prognose", f"optimiser + {y['prognose_veker']}-week forecast, weekly"),
                     ("gradig", "greedy, weekly")):
        o = y[m]
        out.append(
            f"| {label} | {o['q']:.1f} | {_pct(o['q_del_av_fasit'])} | {_pct(o['basis_pluss_q_del_av_fasit'])} | "
            f"{o['tildelte_personar']} | {o['ventande_personar_ved_aarsslutt']} | {o['veker_i_ko_snitt']:.2f} | "
            f"{_pct(o['kapasitetsbruk'])} | "
            f"{o['sekund_per_veke_snitt']:.2f} | {o['sekund_per_veke_maks']:.2f} | {100 * o['gap_per_veke_maks']:.3f}% |"
        )
    out += [
        "",
        "Q by term (where the methods lose against hindsight):",
        "",
        "| method | " + " | ".join(al.MATCH_LEDD) + " |",
        "|---|" + "---|" * len(al.MATCH_LEDD),
    ]
    metodar = (("fasit", "hindsight"), ("optimer", "optimiser"), ("prognose", "optimiser + forecast"), ("gradig", "greedy"))
    for m, label in metodar:
        out.append(f"| {label} | " + " | ".join(f"{y[m]['q_ledd'][t]:.0f}" for t in al.MATCH_LEDD) + " |")
    out += [
        "",
        f"The forecast variant passes the last {y['prognose_veker']} weeks' arrivals, replayed, as `prognose` to `optimer`: "
        "they compete for places but are never proposed. The year simulation has no weekly \"cannot take new "
        "allocations\" and no refusals (the hindsight solve has no weeks); the single batches have both.",
        "",
        "## Calibration (the year's households as generated vs 2023)",
        "",
        "```",
        json.dumps(y["kalibrering"], indent=1),
        "```",
        "",
        "## Fairness (year simulation): Q per settled person, attainment and waiting days per person",
        "",
        "Q per person: the member's own person-level terms plus an equal share of the household-level ones. "
        "Attainment: the household's Q over the best Q any kommune with places for its group could give it "
        "(so it does not reward groups for having more network or privately living households). "
        "Waiting days: from the vedtak to the allocation; persons still waiting at the year's end count with the days so far "
        "(with places to spare most are proposed in the week they become ready, so waiting is mostly the synthetic 20-60 days "
        "before that; see weeks in queue above). "
        "Flag Q: group mean Q more than 10% below the overall mean; flag att.: the same for attainment. "
        f"Groups under {SMAA_GRUPPER} settled persons are marked (small).",
        "",
    ]
    for m, label in (("optimer", "Optimiser"), ("prognose", "Optimiser + forecast"), ("gradig", "Greedy")):
        rf = y["rettferd"][m]
        out += [
            f"### {label} (overall mean Q per person {rf['snitt_alle']:.3f}, mean attainment {rf['snitt_oppnaadd']:.3f})",
            "",
            "| dimension | group | persons settled | Q mean | Q p10 | Q median | Q p90 | attainment mean | att. p10 | "
            "wait mean | wait p10 | wait median | wait p90 | flag Q | flag att. |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for gr in rf["grupper"]:
            s, a, v = gr["score"], gr["oppnaadd"], gr["ventedagar"]
            sc = (f"{s['n']}{' (small)' if gr['lita_gruppe'] else ''} | {s['snitt']:.3f} | {s['p10']:.3f} | {s['median']:.3f} | "
                  f"{s['p90']:.3f} | {a['snitt']:.3f} | {a['p10']:.3f}" if s.get("n") else "0 | | | | | |")
            out.append(
                f"| {gr['dimensjon']} | {gr['gruppe']} | {sc} | "
                f"{v['snitt']:.1f} | {v['p10']:.0f} | {v['median']:.0f} | {v['p90']:.0f} | "
                f"{'**below**' if gr['flagg'] else ''} | {'**below**' if gr['flagg_oppnaadd'] else ''} |"
            )
        out.append("")
    return "\n".join(out) + "\n"


def skriv_tabell(console: Console, r: dict) -> None:
    t = Table(title="Allocation: optimiser vs greedy")
    for c in ("figure", "optimiser", "greedy", "ratio / note"):
        t.add_column(c)
    for navn, b in (("weekly batch", r["veke"]), ("backlog batch", r["etterslep"])):
        o, g = b["optimer"], b["gradig"]
        t.add_row(f"{navn}: {b['personar']} persons, seconds", f"{o['sekund']:.2f}",
                  f"{g['sekund']:.2f} (rule {g['sekund_regel']:.2f})", "")
        t.add_row(f"{navn}: proven gap", f"{100 * o['gap']:.3f}%", f"{100 * g['gap']:.3f}%", f"{o['kandidatar']} candidate pairs")
        t.add_row(f"{navn}: score", f"{o['objektiv']:.1f}", f"{g['objektiv']:.1f}", f"{b['score_ratio']:.3f}")
    y = r["aar"]
    t.add_row(
        f"year (scale {y['skala']}): share of hindsight Q",
        _pct(y["optimer"]["q_del_av_fasit"]), _pct(y["gradig"]["q_del_av_fasit"]),
        f"with forecast {_pct(y['prognose']['q_del_av_fasit'])}; hindsight gap {100 * y['fasit']['gap']:.3f}%",
    )
    for m, label in (("optimer", "optimiser"), ("prognose", "optimiser + forecast"), ("gradig", "greedy")):
        grupper = y["rettferd"][m]["grupper"]
        q_flagg = [f"{g['gruppe']}{'*' if g['lita_gruppe'] else ''}" for g in grupper if g["flagg"]]
        a_flagg = [f"{g['gruppe']}{'*' if g['lita_gruppe'] else ''}" for g in grupper if g["flagg_oppnaadd"]]
        t.add_row(f"fairness flags ({label})", "Q: " + (", ".join(q_flagg) or "none"),
                  "attainment: " + (", ".join(a_flagg) or "none"), "* = under 30 persons")
    console.print(t)


@contextmanager
def stille_stdout():
    """HiGHS's MIP solver sometimes prints debug lines straight to file descriptor 1; keep
    them out of the report (progress goes to stderr meanwhile)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


def main(seed: int, quick: bool, skala: float | None) -> dict:
    started = time.perf_counter()
    console = Console()
    rng = random.Random(seed)
    skala = skala if skala is not None else (0.1 if quick else 0.25)
    tidsgrense = 20.0 if quick else 60.0
    verd_full = lag_verd(random.Random(seed))
    result = {"run_id": str(uuid4()), "seed": seed, "quick": quick,
              "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores)"}
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True))
    with stille_stdout(), progress:
        t = progress.add_task("single batches", total=2)
        result["veke"] = veke_batch(rng, verd_full, tidsgrense)
        progress.advance(t)
        result["etterslep"] = etterslep_batch(rng, verd_full, tidsgrense)
        progress.advance(t)
        result["aar"] = aar(rng, lag_verd(random.Random(seed), skala), skala, tidsgrense, progress)
    result["sekund_totalt"] = time.perf_counter() - started
    RESULTS.mkdir(exist_ok=True)
    # A quick (CI-size) run never replaces the figures of a full run.
    name = "allocation-quick" if quick else "allocation"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(result))
    skriv_tabell(console, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--quick", action="store_true", help="CI size (year at scale 0.1): under ~30 s")
    parser.add_argument("--scale", type=float, default=None, help="year simulation volume vs 2023 (default 0.25, quick 0.1)")
    args = parser.parse_args()
    if args.scale is not None and not 0 < args.scale <= 1:
        parser.error("--scale must be in (0, 1]")
    main(args.seed, args.quick, args.scale)
