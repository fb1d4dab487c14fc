"""Batch allocation (fordeling) of fordelingsklar households to kommunar, with no I/O.

One sak is one household (one REG-nummer). A batch proposes one kommune per household, or
defers (utset) it to the next batch, maximising a match score under hard constraints:

- capacity per (kommune, group) counted in persons: a household uses `personar` places of
  its kategori's group at one kommune (households are never split);
- unaccompanied minors (einslege mindreårige) only to kommunar that decided places for
  minors, have a free one and run a service for minors (`mindrearig_teneste`);
- never a kommune that refused the household (`avslatt_av`), never one that reported it
  cannot take new allocations (`tek_imot=False`).

With person-level capacity this is a generalised assignment problem. `optimer`:

1. prunes to the top `kandidatar` feasible kommunar per household by score (plus its
   bustadkommune and network kommunar, and the greedy rule's choice);
2. solves the LP relaxation with HiGHS (`linprog`) by column generation: pairs outside the
   candidates whose reduced value is positive are priced in, so the LP value and the
   capacity shadow prices are the full, unpruned LP's;
3. solves the MILP with HiGHS (`milp`) on a core of each household's best pairs by reduced
   cost, widening the core while the proven gap is above `KJERNE_GAP`;
4. proves an upper bound on the FULL problem's optimum: the Lagrangian bound
   (`_lagrange_grense`), tightened by the core MILP's own bound where the reduced costs
   allow (`_milp_kjerne`). The reported gap is against that bound, never the pruned one.

`gradig` is IMDi's greedy rule (`domain.velg_kommune`) under the same score and the same
Lagrangian bound, so the two gaps compare. `optimer(..., prognose=...)` also takes the
households expected in the coming weeks: they compete for places but are never proposed.

Words: vedtaksplassar (`plassar`) = places a kommune decided to settle this year per group;
`ledige` = free places now (decided - used - reserved); `arsdel` = the share of the
allocation year that has passed; `ledd` = the named terms of a score; `skuggepris` = shadow
price (LP dual) of a capacity constraint, the score one more place there would add.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from shared.catalogue import Kategori

GRUPPER: tuple[Kategori, ...] = tuple(Kategori)
_GI = {g: i for i, g in enumerate(GRUPPER)}
_MINDREARIG = _GI[Kategori.einsleg_mindrearig]

SEKTORAR = (
    "helse", "undervisning", "bygg", "transport", "reiseliv", "industri",
    "varehandel", "landbruk", "havbruk", "olje_energi", "it", "offentleg",
)
UTDANNINGSNIVA = ("ingen", "grunnskule", "vidaregaande", "fagskule", "bachelor", "master", "doktorgrad")
# Higher education pays off in larger or IT-heavy labour markets; vocational education in
# kommunar with the trades. Values per member, before the weight.
_HOGARE = {"bachelor": 0.8, "master": 1.0, "doktorgrad": 1.0}
_FAG = {"vidaregaande": 0.5, "fagskule": 1.0}
_FAGSEKTORAR = frozenset({"industri", "bygg", "olje_energi", "havbruk", "helse", "transport"})
SKULEALDER = (16, 19)  # upper-secondary age, inclusive
ARBEIDSALDER = (18, 66)  # competence terms count members of working age only

LEDD = (
    "basis", "vidaregaande", "sjukehus", "nettverk", "bustad", "sektor", "utdanning",
    "venting", "frist", "jamn_bruk",
)
# The terms that say how well a household fits a kommune: they do not change with time or
# with the kommune's fill level, so they compare allocations made at different times.
MATCH_LEDD = ("vidaregaande", "sjukehus", "nettverk", "bustad", "sektor", "utdanning")


# --- inputs and outputs ----------------------------------------------------------------


@dataclass(frozen=True)
class Medlem:
    """One person of the household."""

    alder: int
    kjonn: str  # "K" | "M" | "X"
    saerlege_behov: bool = False  # particular needs (care, adapted housing): prefer a hospital
    utdanningsniva: str | None = None  # from the competence mapping; None = not mapped
    sektorar: frozenset[str] = frozenset()  # sectors of work experience (SEKTORAR)


@dataclass(frozen=True)
class Hushald:
    """One sak: a household allocated as a whole."""

    sak_id: str
    kategori: Kategori
    medlemmer: tuple[Medlem, ...]
    ventedagar: int  # days since the vedtak (entry permit for resettlement refugees)
    dagar_til_frist: int  # days left to the deadline target (3 or 6 months); negative when passed
    avslatt_av: frozenset[str] = frozenset()  # kommunar that refused this household: never again
    bustadkommune: str | None = None  # lives privately here: by default proposed to this kommune
    nettverk: frozenset[str] = frozenset()  # kommunar with close relatives / network

    def __post_init__(self) -> None:
        if not self.medlemmer:
            raise ValueError(f"{self.sak_id}: a household has at least one member")

    @property
    def personar(self) -> int:
        return len(self.medlemmer)


@dataclass(frozen=True)
class KommuneTilstand:
    """A kommune's state at the time of the batch."""

    kommunenummer: str
    fylke: str
    ledige: Mapping[Kategori, int]  # free decided places now, persons; 0 or missing = none
    plassar: Mapping[Kategori, int]  # decided places (vedtaksplassar) for the year per group
    vidaregaande: bool
    sjukehus: bool
    mindrearig_teneste: bool
    sektorar: frozenset[str]
    tek_imot: bool = True  # False: the kommune reported "cannot take new allocations"
    innbyggjarar: int = 0  # population; sizes the labour market for higher education (0 = unknown: small)


@dataclass(frozen=True)
class Vekter:
    """Weights of the soft terms. One point is roughly "settling one person at all".

    Person-level terms are summed over ALL members (a household with one very employable
    member scores one member's worth of competence, not the household size times it).
    """

    # Per person settled. Must exceed `jamn_bruk` (the only negative term, per person) so
    # that every feasible assignment scores > 0 and assigning beats deferring.
    basis: float = 1.0
    # Per member aged 16-19 in a kommune with upper-secondary school: 90% were placed with
    # one in 2023, so it is worth as much as settling a person.
    vidaregaande: float = 1.0
    # Per member with særlege behov in a kommune with a hospital: the strongest person-level
    # term, since the needs are demanding (care, adapted ward) and hard to meet elsewhere.
    sjukehus: float = 1.5
    # Per household, kommune with close relatives / network: family ties often weigh more
    # than competence in allocation, so it beats the competence terms of a whole family.
    nettverk: float = 3.0
    # Kommune where a privately living household already lives: 4 + 3 per person. Larger
    # than any other kommune's possible advantage (at most ~3.3 per person from school,
    # hospital, competence and even use, plus 3 for network in a typical household), so the
    # household is proposed there by default whenever the kommune has room.
    bustad: float = 4.0
    bustad_per_person: float = 3.0
    # Per working-age member: the share of the member's experience sectors that the
    # kommune's labour market has. Modest: sector is a weak predictor of getting a job.
    sektor: float = 0.6
    # Per working-age member: higher education x labour-market size (log population, or an
    # IT sector), vocational education x trades present. Modest, below sector.
    utdanning: float = 0.3
    # Urgency, per person and the same at every kommune: it only decides WHO gets scarce
    # places, not where. 0.25 per 30 days waited (capped at `venting_tak` days) ...
    venting: float = 0.25
    venting_tak: int = 180
    # ... plus `frist` x nearness to the deadline: 0 with `frist_horisont` days or more left,
    # 1 at the deadline, 2 when `frist_horisont` days overdue (cap). At the deadline a
    # person is worth 2x a fresh one, so near-deadline households take capacity first.
    frist: float = 1.0
    frist_horisont: int = 30
    # Even use over the year, per person: jamn_bruk x (arsdel*plassar - used) / plassar,
    # clipped to [-1, 1]: a bonus for kommunar behind their pro-rata use (late in the year
    # those with most unused places), a penalty for those ahead of it.
    jamn_bruk: float = 0.5

    def __post_init__(self) -> None:
        negative = [name for name, v in vars(self).items() if v < 0]
        if negative:
            raise ValueError(f"weights must be >= 0: {negative}")
        if self.basis <= self.jamn_bruk:
            raise ValueError("basis must exceed jamn_bruk so every feasible assignment scores > 0")


VEKTER = Vekter()


@dataclass(frozen=True)
class Alternativ:
    kommunenummer: str
    score: float
    ledd: dict[str, float]


@dataclass(frozen=True)
class Forslag:
    """A proposal: this household to this kommune."""

    sak_id: str
    kommunenummer: str
    score: float
    ledd: dict[str, float]
    alternativ: tuple[Alternativ, ...]  # top three other feasible kommunar
    bindande: tuple[str, ...]  # binding constraints, human-readable


@dataclass(frozen=True)
class Resultat:
    algoritme: str  # "milp" or "gradig"
    forslag: dict[str, Forslag]
    utsett: dict[str, str]  # deferred sak_id -> reason
    objektiv: float  # total score of the proposals
    ovre_grense: float  # proven upper bound on the optimum of the FULL (unpruned) problem
    gap: float  # (ovre_grense - objektiv) / max(|ovre_grense|, 1e-9)
    sekund: float  # wall time of the call, bound included
    skuggeprisar: dict[tuple[str, Kategori], float]  # LP capacity duals (0 when slack)
    kandidatar: int  # candidate (household, kommune) pairs after pruning and pricing
    # Where the time went and how the bound was reached: lp/milp seconds, pricing rounds,
    # the solver's status, the pruned LP value. Informative only.
    diagnostikk: dict[str, object] = field(default_factory=dict)


# --- the score, vectorised ---------------------------------------------------------------


class _Problem:
    """Households and kommunar as arrays; scores and feasibility for any index pairs.

    `ledd(hi, ki)` and `mogleg(hi, ki)` take broadcastable index arrays: scalars for one
    pair, a column and a row for a matrix. The scalar API (`score_ledd`, `hindring`) goes
    through the same code, so the explanations and the optimiser cannot disagree.
    """

    def __init__(self, hushald: Sequence[Hushald], kommunar: Sequence[KommuneTilstand], arsdel: float, vekter: Vekter):
        if not 0.0 <= arsdel <= 1.0:
            raise ValueError(f"arsdel must be in [0, 1], got {arsdel}")
        self.hushald = list(hushald)
        self.kommunar = list(kommunar)
        self.w = vekter
        self.knr = [k.kommunenummer for k in self.kommunar]
        self.kidx = {knr: i for i, knr in enumerate(self.knr)}
        if len(self.kidx) != len(self.knr):
            raise ValueError("duplicate kommunenummer")
        if len({h.sak_id for h in self.hushald}) != len(self.hushald):
            raise ValueError("duplicate sak_id")
        H, K = len(self.hushald), len(self.kommunar)
        self.H, self.K = H, K
        sektorar = {s: i for i, s in enumerate(SEKTORAR)}
        for s in sorted({s for k in self.kommunar for s in k.sektorar} - set(sektorar)):
            sektorar[s] = len(sektorar)
        S = len(sektorar)

        self.n = np.array([h.personar for h in self.hushald], dtype=np.int64)
        self.g = np.array([_GI[h.kategori] for h in self.hushald], dtype=np.int64)
        self.skule = np.zeros(H)
        self.behov = np.zeros(H)
        self.hogare = np.zeros(H)
        self.fag = np.zeros(H)
        secw = np.zeros((H, S))
        for i, h in enumerate(self.hushald):
            for m in h.medlemmer:
                self.skule[i] += SKULEALDER[0] <= m.alder <= SKULEALDER[1]
                self.behov[i] += m.saerlege_behov
                if ARBEIDSALDER[0] <= m.alder <= ARBEIDSALDER[1]:
                    self.hogare[i] += _HOGARE.get(m.utdanningsniva or "", 0.0)
                    self.fag[i] += _FAG.get(m.utdanningsniva or "", 0.0)
                    known = [sektorar[s] for s in m.sektorar if s in sektorar]
                    for s in known:  # a share per sector: the member's whole experience sums to 1
                        secw[i, s] += 1.0 / len(known)
        w = vekter
        vent = np.array([min(max(h.ventedagar, 0), w.venting_tak) / 30.0 for h in self.hushald])
        frist = np.array([
            min(max((w.frist_horisont - h.dagar_til_frist) / max(w.frist_horisont, 1), 0.0), 2.0) for h in self.hushald
        ])
        self.vent, self.frist = vent.reshape(H), frist.reshape(H)

        self.ledige = np.zeros((K, len(GRUPPER)), dtype=np.int64)
        self.plassar = np.zeros((K, len(GRUPPER)), dtype=np.int64)
        sec = np.zeros((K, S))
        self.vgs = np.zeros(K, dtype=bool)
        self.sjh = np.zeros(K, dtype=bool)
        self.mtj = np.zeros(K, dtype=bool)
        self.tek = np.zeros(K, dtype=bool)
        f_hog = np.zeros(K)
        f_fag = np.zeros(K)
        for j, k in enumerate(self.kommunar):
            for g, i in _GI.items():
                self.ledige[j, i] = int(k.ledige.get(g, 0) or 0)
                self.plassar[j, i] = int(k.plassar.get(g, 0) or 0)
            for s in k.sektorar:
                sec[j, sektorar[s]] = 1.0
            self.vgs[j], self.sjh[j], self.mtj[j], self.tek[j] = k.vidaregaande, k.sjukehus, k.mindrearig_teneste, k.tek_imot
            # 5,000 inhabitants -> 0, 50,000 -> 0.5, 500,000 -> 1 (log scale).
            size = min(max(math.log10(max(k.innbyggjarar, 1) / 5_000) / 2, 0.0), 1.0)
            f_hog[j] = max(size, 0.5 if "it" in k.sektorar else 0.0)
            f_fag[j] = 0.5 if k.sektorar & _FAGSEKTORAR else 0.0
        brukt = self.plassar - self.ledige
        with np.errstate(divide="ignore", invalid="ignore"):
            jamn = np.where(self.plassar > 0, (arsdel * self.plassar - brukt) / self.plassar, 0.0)
        self.jamn = np.clip(jamn, -1.0, 1.0)
        self.f_hog, self.f_fag = f_hog, f_fag
        self.sektor = secw @ sec.T  # (H, K): share of each household's experience present there

        self.bustad = np.array([self.kidx.get(h.bustadkommune, -1) if h.bustadkommune else -1 for h in self.hushald])
        self.nett = np.zeros((H, K), dtype=bool)
        self.avsl = np.zeros((H, K), dtype=bool)
        for i, h in enumerate(self.hushald):
            self.nett[i, [self.kidx[x] for x in h.nettverk if x in self.kidx]] = True
            self.avsl[i, [self.kidx[x] for x in h.avslatt_av if x in self.kidx]] = True

    def ledd(self, hi, ki) -> dict[str, np.ndarray]:
        hi, ki = np.broadcast_arrays(np.asarray(hi), np.asarray(ki))
        w, n, g = self.w, self.n[hi], self.g[hi]
        return {
            "basis": w.basis * n,
            "vidaregaande": w.vidaregaande * self.skule[hi] * self.vgs[ki],
            "sjukehus": w.sjukehus * self.behov[hi] * self.sjh[ki],
            "nettverk": w.nettverk * self.nett[hi, ki],
            "bustad": (w.bustad + w.bustad_per_person * n) * (self.bustad[hi] == ki),
            "sektor": w.sektor * self.sektor[hi, ki],
            "utdanning": w.utdanning * (self.hogare[hi] * self.f_hog[ki] + self.fag[hi] * self.f_fag[ki]),
            "venting": w.venting * n * self.vent[hi],
            "frist": w.frist * n * self.frist[hi],
            "jamn_bruk": w.jamn_bruk * n * self.jamn[ki, g],
        }

    def mogleg(self, hi, ki) -> np.ndarray:
        hi, ki = np.broadcast_arrays(np.asarray(hi), np.asarray(ki))
        g, n = self.g[hi], self.n[hi]
        ok = ~self.avsl[hi, ki] & self.tek[ki] & (self.plassar[ki, g] > 0) & (self.ledige[ki, g] >= n)
        return ok & ((g != _MINDREARIG) | self.mtj[ki])

    def matriser(self, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Score and feasibility of every (household, kommune) pair, in row chunks."""
        S = np.empty((self.H, self.K))
        F = np.empty((self.H, self.K), dtype=bool)
        ki = np.arange(self.K)[None, :]
        for start in range(0, self.H, chunk):
            hi = np.arange(start, min(start + chunk, self.H))[:, None]
            S[hi[:, 0]] = sum(self.ledd(hi, ki).values())
            F[hi[:, 0]] = self.mogleg(hi, ki)
        return S, F


def hindring(h: Hushald, k: KommuneTilstand) -> str | None:
    """The hard constraint this pair breaks (with the kommune's state before the batch), or None."""
    knr, g, n = k.kommunenummer, h.kategori, h.personar
    if knr in h.avslatt_av:
        return f"{knr} refused this household"
    if not k.tek_imot:
        return f"{knr} reported it cannot take new allocations"
    if k.plassar.get(g, 0) <= 0:
        if g == Kategori.einsleg_mindrearig:
            return f"{knr} has no decided places for unaccompanied minors"
        return f"{knr} has no decided places for {g.value}"
    if g == Kategori.einsleg_mindrearig and not k.mindrearig_teneste:
        return f"{knr} has no service for unaccompanied minors"
    free = k.ledige.get(g, 0)
    if free < n:
        return f"{knr} has not enough free places for {g.value} (needs {n}, has {max(free, 0)})"
    return None


def score_ledd(h: Hushald, k: KommuneTilstand, *, arsdel: float, vekter: Vekter = VEKTER) -> dict[str, float]:
    """The score terms of placing household `h` in kommune `k` (whether feasible or not)."""
    p = _Problem([h], [k], arsdel, vekter)
    return {name: float(v) for name, v in p.ledd(0, 0).items()}


def ledd_per_person(h: Hushald, k: KommuneTilstand, *, arsdel: float, vekter: Vekter = VEKTER) -> list[dict[str, float]]:
    """The household's terms at `k` attributed to each member: person-level terms to the
    member they come from, household-level ones (basis, network, bustad, urgency, even use)
    shared equally. The members' terms sum to `score_ledd(h, k)`: for fairness reports."""
    heile = score_ledd(h, k, arsdel=arsdel, vekter=vekter)
    n = h.personar
    delt = {name: heile[name] / n for name in ("basis", "nettverk", "bustad", "venting", "frist", "jamn_bruk")}
    ut = []
    for m in h.medlemmer:
        eigen = score_ledd(Hushald(h.sak_id, h.kategori, (m,), 0, 10**6), k, arsdel=arsdel, vekter=vekter)
        ut.append({name: delt.get(name, eigen[name]) for name in LEDD})
    return ut


def beste_match(hushald: Sequence[Hushald], kommunar: Sequence[KommuneTilstand], *, vekter: Vekter = VEKTER) -> list[float]:
    """Per household the best match quality (the sum of MATCH_LEDD) any kommune could give
    it if it had room: over the kommunar with decided places for its group (and a service,
    for minors), whatever their free places, refusals or reports. The yardstick for "how
    well was this household matched, given who it is" in fairness reports."""
    if not hushald or not kommunar:
        return [0.0] * len(hushald)
    p = _Problem(hushald, kommunar, 0.0, vekter)
    hi, ki = np.arange(p.H)[:, None], np.arange(p.K)[None, :]
    ledd = p.ledd(hi, ki)
    q = sum(ledd[t] for t in MATCH_LEDD)
    g = p.g[:, None]
    aktuell = (p.plassar[ki, g] > 0) & ((g != _MINDREARIG) | p.mtj[ki])
    return np.where(aktuell, q, -np.inf).max(axis=1, initial=0.0).tolist()


# --- solving -------------------------------------------------------------------------------


def _gradig_val(p: _Problem, F: np.ndarray, H: int) -> tuple[np.ndarray, np.ndarray]:
    """IMDi's greedy rule (domain.velg_kommune), the first H households in the given order:
    the bustadkommune if feasible, else the feasible kommune with the most free places of
    the group (ties: the highest kommunenummer), reserving places as it goes."""
    rem = p.ledige.copy()
    rank = np.argsort(np.argsort(p.knr))  # kommunenummer order, for the tie-break
    rows, cols = [], []
    for h in range(H):
        g, n = p.g[h], p.n[h]
        ok = F[h] & (rem[:, g] >= n)  # F holds the static constraints; rem the places left now
        if not ok.any():
            continue
        b = p.bustad[h]
        if b >= 0 and ok[b]:
            k = b
        else:
            key = np.where(ok, rem[:, g] * (p.K + 1) + rank, -1)
            k = int(np.argmax(key))
        rem[k, g] -= n
        rows.append(h)
        cols.append(k)
    return np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)


def _kandidatar(p: _Problem, S: np.ndarray, F: np.ndarray, m: int, extra: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Candidate pairs as a boolean (H, K) mask: per household the top `m` feasible kommunar
    by score, plus the bustadkommune and network kommunar when feasible, plus `extra`."""
    mask = np.zeros_like(F)
    if p.H == 0 or p.K == 0:
        return mask
    if m >= p.K:
        mask[:] = F
    elif m > 0:
        top = np.argpartition(np.where(F, -S, np.inf), m - 1, axis=1)[:, :m]
        mask[np.arange(p.H)[:, None], top] = True
        mask &= F
    mask |= F & p.nett
    has = p.bustad >= 0
    hb = np.flatnonzero(has)
    mask[hb, p.bustad[hb]] |= F[hb, p.bustad[hb]]
    mask[extra[0], extra[1]] = True
    return mask


def _modell(p: _Problem, S: np.ndarray, rows: np.ndarray, cols: np.ndarray):
    """Household rows (sum x <= 1: the slack is the defer option) and capacity rows (persons
    per (kommune, group) <= free places), as a sparse matrix."""
    P = len(rows)
    cap_code = cols * len(GRUPPER) + p.g[rows]
    caps, cap_row = np.unique(cap_code, return_inverse=True)
    data = np.concatenate([np.ones(P), p.n[rows].astype(float)])
    r = np.concatenate([rows, p.H + cap_row])
    c = np.concatenate([np.arange(P), np.arange(P)])
    A = sparse.csr_array((data, (r, c)), shape=(p.H + len(caps), P))
    b = np.concatenate([np.ones(p.H), np.maximum(p.ledige.ravel()[caps], 0).astype(float)])
    return A, b, caps, -S[rows, cols]


@dataclass
class _LP:
    lam: np.ndarray  # (K, groups) capacity duals
    u: np.ndarray  # household duals
    stotte: np.ndarray  # (H, K) bool: pairs with x > 0 in the LP solution
    verdi: float


LP_START = 10  # kommunar per household in the LP's first round
# Widen the MILP's core only while the proven gap to the FULL problem's bound exceeds this:
# the last ~0.1% is mostly the LP's integrality gap, and proving it away on all candidates
# can take minutes (the 2023-sized hindsight solve) for no better solution.
KJERNE_GAP = 1e-3


def _lp_med_prising(p: _Problem, S: np.ndarray, F: np.ndarray, mask: np.ndarray, rundar: int = 30, per_runde: int = 10):
    """LP relaxation by column generation: solve on `mask`, add feasible pairs with positive
    reduced value (up to `per_runde` per household and round) until none is left; then the
    LP's value is the full, unpruned LP's. Returns the final pairs, duals and support."""
    info = {"prisingsrundar": 0, "lagt_til": 0, "lp_sekund": 0.0}
    lam = np.zeros((p.K, len(GRUPPER)))
    u = np.zeros(p.H)
    stotte = np.zeros_like(mask)
    lp_value = 0.0
    for runde in range(rundar + 1):
        rows, cols = np.nonzero(mask)
        if len(rows) == 0:
            break
        A, b, caps, c = _modell(p, S, rows, cols)
        t = time.perf_counter()
        # Interior point (with crossover, so the solution is a vertex) is ~3x faster than
        # dual simplex on the large, degenerate assignment LPs; simplex for small ones.
        metode = "highs-ipm" if len(c) > 20_000 else "highs-ds"
        res = linprog(c, A_ub=A, b_ub=b, bounds=(0, None), method=metode)
        info["lp_sekund"] += time.perf_counter() - t
        if res.status != 0:
            info["lp_status"] = res.message
            break
        duals = -np.asarray(res.ineqlin.marginals)
        u = np.maximum(duals[: p.H], 0.0)
        lam = np.zeros((p.K, len(GRUPPER)))
        lam.ravel()[caps] = np.maximum(duals[p.H:], 0.0)
        lp_value = -res.fun
        stotte = np.zeros_like(mask)
        stotte[rows, cols] = res.x > 1e-9
        redusert = S - lam[:, p.g].T * p.n[:, None] - u[:, None]
        brot = F & ~mask & (redusert > 1e-7 * np.maximum(1.0, np.abs(S)))
        if runde == rundar or not brot.any():
            break
        info["prisingsrundar"] += 1
        verdi = np.where(brot, redusert, -np.inf)
        take = min(per_runde, p.K)
        top = np.argpartition(-verdi, take - 1, axis=1)[:, :take]
        add = np.zeros_like(mask)
        add[np.arange(p.H)[:, None], top] = True
        add &= brot
        info["lagt_til"] += int(add.sum())
        mask = mask | add
    info["lp_verdi"] = lp_value
    info["lp_par"] = int(mask.sum())
    return mask, _LP(lam, u, stotte, lp_value), info


def _lagrange_grense(p: _Problem, S: np.ndarray, F: np.ndarray, lam: np.ndarray, H: int) -> float:
    """An upper bound on the FULL problem's optimum over the first H households, valid for
    any lam >= 0: relax the capacity rows into the objective; each household then
    independently takes its best feasible kommune at score minus lam * persons, or defers (0)."""
    if H == 0:
        return 0.0
    verdi = np.where(F[:H], S[:H] - lam[:, p.g[:H]].T * p.n[:H, None], -np.inf)
    beste = np.maximum(verdi.max(axis=1, initial=-np.inf), 0.0) if p.K else np.zeros(H)
    return float(beste.sum() + (lam * np.maximum(p.ledige, 0)).sum())


def _milp_kjerne(p: _Problem, S, F, mask, lp: _LP, grense: float, start: tuple[np.ndarray, np.ndarray], tidsgrense: float):
    """The MILP on the candidates, core first. HiGHS on ~150k binaries spends most of its
    time in presolve even when the LP is almost integral, so solve first on each household's
    best pairs by LP reduced cost (plus the LP's support and the greedy solution: the core
    contains both, so its optimum is >= greedy's and its LP value is the pruned LP's), then on
    wider cores, up to all candidates, until the gap to the full-problem bound is within
    KJERNE_GAP or time runs out (each core MILP itself stops at mip_rel_gap 1e-4). Returns
    the best solution and the (possibly tighter)
    full-problem bound."""
    t0 = time.perf_counter()
    rows, cols = np.nonzero(mask)
    info: dict[str, object] = {"milp_sekund": 0.0, "milp_kjernar": []}
    best_r, best_c = start
    best = float(S[best_r, best_c].sum())
    if len(rows) == 0:
        return best_r, best_c, grense, info | {"milp_status": "no candidates"}
    # Reduced costs of every pair under the LP duals (u, lam). Any solution of the FULL
    # problem is worth at most D + the sum of its pairs' reduced costs, D = the duals'
    # objective (= the LP value). So one that uses a pair outside a core is worth at most
    # D + the best reduced cost outside the core + E, E = the households' positive reduced
    # costs (zero once pricing is complete, up to tolerance); one inside the core at most
    # the core MILP's dual bound. The larger of the two bounds the full problem.
    R = np.where(F, S - lp.lam[:, p.g].T * p.n[:, None] - lp.u[:, None], -np.inf)
    D = float(lp.u.sum() + (lp.lam * np.maximum(p.ledige, 0)).sum())
    E = float(np.maximum(R.max(axis=1, initial=-np.inf), 0.0).sum()) if p.K else 0.0
    rc = R[rows, cols]
    order = np.lexsort((-rc, rows))
    first = np.r_[0, np.flatnonzero(np.diff(rows[order])) + 1]
    rank = np.empty(len(rows), dtype=np.int64)
    rank[order] = np.arange(len(rows)) - np.repeat(first, np.diff(np.r_[first, len(rows)]))
    i_start = np.isin(rows * p.K + cols, best_r * p.K + best_c)
    base = lp.stotte[rows, cols] | i_start
    prev = -1
    for m2 in (5, 15, None):
        keep = base | (rank < m2) if m2 is not None else np.ones(len(rows), dtype=bool)
        if int(keep.sum()) == prev:
            continue
        prev = int(keep.sum())
        rest = tidsgrense - (time.perf_counter() - t0)
        if rest <= 0:
            break
        A, b, caps, c = _modell(p, S, rows[keep], cols[keep])
        t = time.perf_counter()
        res = milp(
            c,
            integrality=np.ones(len(c)),
            bounds=Bounds(0, 1),
            constraints=LinearConstraint(A, -np.inf, b),
            options={"time_limit": rest, "mip_rel_gap": 1e-4},
        )
        info["milp_sekund"] += time.perf_counter() - t
        info["milp_status"] = res.message
        info["milp_kjernar"].append({"par": prev, "status": int(res.status), "sekund": round(time.perf_counter() - t, 3)})
        if res.x is not None:
            valt = res.x > 0.5
            verdi = float(S[rows[keep][valt], cols[keep][valt]].sum())
            if verdi > best:
                best, best_r, best_c = verdi, rows[keep][valt], cols[keep][valt]
        dual = getattr(res, "mip_dual_bound", None)
        if dual is not None and np.isfinite(dual):
            utanfor = F.copy()
            utanfor[rows[keep], cols[keep]] = False
            rc_ut = float(R[utanfor].max()) if utanfor.any() else -np.inf
            kjerne_grense = max(-float(dual), D + rc_ut + E)
            if kjerne_grense < grense:
                grense = kjerne_grense
                info["grense_fraa_kjerne"] = True
        if (grense - best) <= KJERNE_GAP * max(abs(grense), 1e-9):
            break
    return best_r, best_c, grense, info


def _los(hushald, kommunar, arsdel, vekter, kandidatar, tidsgrense, algoritme, prognose=(), prognose_vekt=1.0) -> Resultat:
    t0 = time.perf_counter()
    H = len(hushald)  # the real households come first; forecast ones (if any) after them
    p = _Problem(list(hushald) + list(prognose), kommunar, arsdel, vekter)
    S, F = p.matriser()
    S[H:] *= prognose_vekt
    g_rows, g_cols = _gradig_val(p, F, H)
    t_gradig = time.perf_counter() - t0
    mask = _kandidatar(p, S, F, kandidatar, (g_rows, g_cols))
    # The LP starts from a narrower set and prices in what it needs: it reaches the same
    # (full) LP optimum, several times faster than solving on all candidates at once.
    lp_start = _kandidatar(p, S, F, min(kandidatar, LP_START), (g_rows, g_cols))
    lp_mask, lp, info = _lp_med_prising(p, S, F, lp_start)
    mask |= lp_mask
    lam = lp.lam
    grense = _lagrange_grense(p, S, F, lam, H)
    if H < p.H:
        # The forecast inflates the prices; the bound for the real households alone is
        # tighter with their own LP's prices (any prices give a valid bound: take the min).
        F_ekte = F.copy()
        F_ekte[H:] = False
        _, lp_ekte, info_ekte = _lp_med_prising(p, S, F_ekte, lp_start & F_ekte)
        grense = min(grense, _lagrange_grense(p, S, F, lp_ekte.lam, H))
        info["lp_sekund"] += info_ekte["lp_sekund"]
        info["lp_verdi_utan_prognose"] = lp_ekte.verdi
        info["prognose_hushald"] = p.H - H
    if algoritme == "milp":
        saman = _lagrange_grense(p, S, F, lam, p.H)  # with the forecast households
        rows, cols, saman, milp_info = _milp_kjerne(p, S, F, mask, lp, saman, (g_rows, g_cols), tidsgrense)
        if H == p.H:
            grense = min(grense, saman)
        info |= milp_info
        ekte = rows < H
        rows, cols = rows[ekte], cols[ekte]
    else:
        rows, cols = g_rows, g_cols
        info["gradig_sekund"] = t_gradig
    objektiv = float(S[rows, cols].sum())
    grense = max(grense, objektiv)  # a valid bound is >= any feasible value; only rounding can break it
    rem = p.ledige.copy()
    np.subtract.at(rem, (cols, p.g[rows]), p.n[rows])
    if (rem < np.minimum(p.ledige, 0)).any():
        raise RuntimeError("capacity exceeded: a bug in the model")
    forslag = {f.sak_id: f for f in _bygg_forslag(p, S, F, rows, cols, lam, rem)}
    valde = set(rows.tolist())
    utsett = {p.hushald[h].sak_id: _utsett_grunn(p, S, F, h, lam, rem, algoritme) for h in range(H) if h not in valde}
    skugge = {}
    m_rows, m_cols = np.nonzero(mask)
    for code in np.unique(m_cols * len(GRUPPER) + p.g[m_rows]).tolist():  # every capacity row of the LP
        k, g = divmod(code, len(GRUPPER))
        skugge[(p.knr[k], GRUPPER[g])] = float(lam[k, g])
    return Resultat(
        algoritme=algoritme,
        forslag=forslag,
        utsett=utsett,
        objektiv=objektiv,
        ovre_grense=grense,
        gap=(grense - objektiv) / max(abs(grense), 1e-9),
        sekund=time.perf_counter() - t0,
        skuggeprisar=skugge,
        kandidatar=int(mask.sum()),
        diagnostikk=info,
    )


def optimer(
    hushald: Sequence[Hushald],
    kommunar: Sequence[KommuneTilstand],
    *,
    arsdel: float,
    vekter: Vekter = VEKTER,
    kandidatar: int = 40,
    tidsgrense: float = 60.0,
    prognose: Sequence[Hushald] = (),
    prognose_vekt: float = 0.95,
) -> Resultat:
    """Propose a kommune per household (or defer it) maximising the total score: MILP with
    HiGHS on the top `kandidatar` kommunar per household (plus pairs the LP prices in), with
    a proven bound for the full problem.

    Without `prognose` it never returns less than the greedy rule would. `prognose` are
    households expected before the next batches (for example the last weeks' arrivals
    replayed, with their own sak_ids): they compete for places in the solve, so a contested
    place is kept for a better use that is likely to come, but they are never proposed nor
    reported. Their scores are weighted by `prognose_vekt` (< 1: a real household wins a
    tie, and a forecast is uncertain). The objective and the bound are then for the real
    households, and the shadow prices include the expected demand.
    """
    return _los(hushald, kommunar, arsdel, vekter, kandidatar, tidsgrense, "milp", prognose, prognose_vekt)


def gradig(
    hushald: Sequence[Hushald],
    kommunar: Sequence[KommuneTilstand],
    *,
    arsdel: float,
    vekter: Vekter = VEKTER,
) -> Resultat:
    """The greedy baseline (same rule as domain.velg_kommune, with all hard constraints),
    scored and bounded like `optimer`. `sekund` includes the bound; the rule alone is
    `diagnostikk["gradig_sekund"]`."""
    return _los(hushald, kommunar, arsdel, vekter, 40, 0.0, "gradig")


# --- explanations ----------------------------------------------------------------------


def _ledd_dicts(p: _Problem, hi: np.ndarray, ki: np.ndarray) -> list[dict[str, float]]:
    """Score terms of many pairs at once, as one dict per pair."""
    if len(hi) == 0:
        return []
    ledd = {name: np.round(v.astype(float), 6).tolist() for name, v in p.ledd(hi, ki).items()}
    return [dict(zip(LEDD, vals)) for vals in zip(*(ledd[name] for name in LEDD))]


def _topp(verdi: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row the column indices of the `m` largest finite values, best first, and a mask of
    which are real (finite)."""
    m = min(m, verdi.shape[1])
    if m == 0:
        return np.zeros((verdi.shape[0], 0), dtype=np.int64), np.zeros((verdi.shape[0], 0), dtype=bool)
    idx = np.argpartition(-verdi, m - 1, axis=1)[:, :m]
    v = np.take_along_axis(verdi, idx, axis=1)
    order = np.argsort(-v, axis=1, kind="stable")
    idx, v = np.take_along_axis(idx, order, axis=1), np.take_along_axis(v, order, axis=1)
    return idx, np.isfinite(v)


def _bygg_forslag(p, S, F, rows, cols, lam, rem) -> list[Forslag]:
    P = len(rows)
    if P == 0:
        return []
    s_valt = S[rows, cols]
    andre = np.where(F[rows], S[rows], -np.inf)
    andre[np.arange(P), cols] = -np.inf
    alt_idx, alt_ok = _topp(andre, 3)  # the three best other feasible kommunar
    betre = np.where(S[rows] > s_valt[:, None] + 1e-9, S[rows], -np.inf)
    betre_idx, betre_ok = _topp(betre, 3)  # what stopped a better kommune (feasible or not)
    valt_ledd = _ledd_dicts(p, rows, cols)
    a_r, a_c = np.nonzero(alt_ok)
    alt_ledd = _ledd_dicts(p, rows[a_r], alt_idx[a_r, a_c])
    alt_per: list[list[Alternativ]] = [[] for _ in range(P)]
    for i, c, ledd in zip(a_r.tolist(), alt_idx[a_r, a_c].tolist(), alt_ledd):
        alt_per[i].append(Alternativ(p.knr[c], float(S[rows[i], c]), ledd))
    ut = []
    for i, (h, k) in enumerate(zip(rows.tolist(), cols.tolist())):
        hh, g = p.hushald[h], p.g[h]
        gruppe, n = GRUPPER[g].value, int(p.n[h])
        bindande = []
        if lam[k, g] > 1e-9 or rem[k, g] < n:
            bindande.append(f"{p.knr[k]} {gruppe}: {rem[k, g]} free places after this batch (shadow price {lam[k, g]:.2f})")
        for j in betre_idx[i][betre_ok[i]].tolist():
            if not F[h, j]:
                bindande.append(hindring(hh, p.kommunar[j]))
            else:
                bindande.append(
                    f"{p.knr[j]} {gruppe}: {rem[j, g]} free places after this batch (shadow price {lam[j, g]:.2f}; "
                    f"{n} places there worth {lam[j, g] * n:.2f} to others vs a gain of {S[h, j] - S[h, k]:.2f} here)"
                )
        for knr in sorted(hh.avslatt_av):
            tekst = f"{knr} refused this household"
            if tekst not in bindande:
                bindande.append(tekst)
        ut.append(Forslag(hh.sak_id, p.knr[k], float(S[h, k]), valt_ledd[i], tuple(alt_per[i]), tuple(bindande)))
    return ut


def _utsett_grunn(p, S, F, h, lam, rem, algoritme) -> str:
    g, n = p.g[h], int(p.n[h])
    gruppe = GRUPPER[g].value
    if not F[h].any():
        med_plass = (p.ledige[:, g] >= n) & (p.plassar[:, g] > 0)
        if not med_plass.any():
            return f"no kommune with free places for {n} persons in {gruppe}"
        if g == _MINDREARIG and not (med_plass & p.mtj).any():
            return "no kommune with decided places, a free place and a service for unaccompanied minors"
        return (
            f"all {int(med_plass.sum())} kommunar with free places for {n} persons in {gruppe} "
            "refused this household or cannot take new allocations"
        )
    j = int(np.argmax(np.where(F[h], S[h], -np.inf)))
    if algoritme == "gradig":
        return f"free places for {n} persons in {gruppe} were taken by households earlier in the queue (best was {p.knr[j]})"
    return (
        f"free places for {gruppe} went to households worth more: the best option {p.knr[j]} "
        f"(score {S[h, j]:.2f}) has {rem[j, g]} free places left and shadow price {lam[j, g]:.2f} per place "
        f"({lam[j, g] * n:.2f} for {n} persons)"
    )


def kvifor_ikkje(
    h: Hushald,
    kommunenummer: str,
    kommunar: Sequence[KommuneTilstand],
    resultat: Resultat,
    *,
    arsdel: float,
    vekter: Vekter = VEKTER,
) -> dict:
    """Why household `h` was not proposed to `kommunenummer` in `resultat`."""
    valt = resultat.forslag.get(h.sak_id)
    svar: dict = {
        "kommunenummer": kommunenummer,
        "valt": valt.kommunenummer if valt else None,
        "valt_score": valt.score if valt else None,
    }
    k = next((x for x in kommunar if x.kommunenummer == kommunenummer), None)
    if k is None:
        return svar | {"mogleg": False, "hindring": "unknown kommune", "score": None, "ledd": {}, "skilnad": None,
                       "skuggepris": 0.0, "forklaring": f"{kommunenummer} is not among the kommunar of this batch."}
    hin = hindring(h, k)
    ledd = score_ledd(h, k, arsdel=arsdel, vekter=vekter)
    score = sum(ledd.values())
    lam = resultat.skuggeprisar.get((kommunenummer, h.kategori), 0.0)
    skilnad = valt.score - score if valt else None
    svar |= {"mogleg": hin is None, "hindring": hin, "score": score, "ledd": ledd, "skilnad": skilnad, "skuggepris": lam}
    if hin is not None:
        forklaring = f"Not possible: {hin}."
    elif valt and valt.kommunenummer == kommunenummer:
        forklaring = f"{kommunenummer} was chosen (score {score:.2f})."
    elif valt and skilnad > 1e-9:
        diff = sorted(((valt.ledd[t] - ledd[t], t) for t in LEDD), reverse=True)
        storst = ", ".join(f"{t} {-d:+.2f}" for d, t in diff[:2] if d > 1e-9)
        forklaring = (
            f"Lower score by {skilnad:.2f} than {valt.kommunenummer} ({score:.2f} vs {valt.score:.2f}); "
            f"terms that differ most: {storst}."
        )
    elif resultat.algoritme == "gradig":
        grunn = "its bustadkommune" if valt and valt.kommunenummer == h.bustadkommune else "the kommune with most free places"
        if valt:
            forklaring = (
                f"The greedy rule does not compare scores: it chose {grunn} ({valt.kommunenummer}); "
                f"{kommunenummer} scores {-skilnad:.2f} higher."
            )
        else:
            forklaring = f"The greedy rule deferred the household: {resultat.utsett.get(h.sak_id) or 'no free places left'}."
    else:
        n = h.personar
        if valt:
            start = f"Scores {-skilnad:.2f} higher than {valt.kommunenummer}, but"
        else:
            start = f"The household was deferred; {kommunenummer} would score {score:.2f}, but"
        if lam > 1e-9:
            forklaring = (
                f"{start} its places for {h.kategori.value} are worth more to other households in this batch "
                f"(or expected ones, when the solve had a forecast): shadow price {lam:.2f} per place, "
                f"{lam * n:.2f} for {n} persons."
            )
        else:
            forklaring = (
                f"{start} its places went to other households of equal value (shadow price 0), "
                f"or the difference is within the solver's proven gap ({resultat.gap:.2%})."
            )
    svar["forklaring"] = forklaring
    return svar
