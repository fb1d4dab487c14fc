"""IMDi's KPIs (styringsparametrar) for settlement: the projection's pure core, no I/O.

A `KpiSak` is one case (one household) folded from the events on the bus by `apply`; the
KPI functions compute IMDi's figures from a list of them. Every figure counts persons,
not cases. The definitions are written out once in `docs/kpi.md`; each function's
docstring states the one it implements.

Dates: an event's business date is its own date field where it has one (`vedtaksdato`
of a vedtak, `busetjingsdato` of bosatt), else the envelope's `time` as a date in
Europe/Oslo. The agreement (avtale inngått) is the one exception: its `busetjingsdato` is
the agreed *future* moving-in date, so the status søkt ut starts at the envelope's date
(else a case would never be counted as søkt ut while it waits to move).
"""

from __future__ import annotations

import calendar
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from zoneinfo import ZoneInfo

from services.bosetting.domain import legg_til_manader
from shared.catalogue import (
    AvtaleInngatt,
    Avslatt,
    Bosatt,
    EventData,
    FordelingOppheva,
    Fordelt,
    KartleggingFullfort,
    KartleggingStartet,
    Trukke,
    VedtakFattet,
    VedtakKorrigert,
)
from shared.envelope import Envelope

OSLO = ZoneInfo("Europe/Oslo")
DAGAR_PER_MANAD = 30.4375  # 365.25 / 12

UNDER_KARTLEGGING = "under_kartlegging"
FORDELINGSKLAR = "fordelingsklar"
FORDELT = "fordelt"
SOKT_UT = "sokt_ut"
BOSATT = "bosatt"
TRUKKE = "trukke"
FINAL = {BOSATT, TRUKKE}
VENTANDE = (UNDER_KARTLEGGING, FORDELINGSKLAR, FORDELT, SOKT_UT)

# The four deadline groups of IMDi's KPIs, with their target in calendar months.
GRUPPER: dict[str, int] = {
    "einsleg_mindrearig": 3,
    "barnefamilie_mottak": 3,
    "vaksen_mottak": 6,
    "overforing": 6,
}


@dataclass
class KpiSak:
    sak_id: str
    kategori: str | None = None
    sakstype: str | None = None
    fra_mottak: bool = False  # mottak_id set and not privatbuande
    personar: int = 0  # all persons, protected ones included
    vedtaksdato: date | None = None  # the clock start (entry permit for resettlement)
    skal_kartleggast: int = 0  # persons to be mapped (kartlegging.startet)
    kartlagde: int = 0  # mapped so far (of any person of the case)
    kartlagde_ved_busetjing: int | None = None  # persons to be mapped who were mapped by the settlement date
    kommunenummer: str | None = None  # where settled (or allocated)
    busetjingsdato: date | None = None
    statusar: list[tuple[str, date]] = field(default_factory=list)  # (status, from business date), in order
    # Book-keeping for idempotency and order independence:
    skal_kartleggast_personar: set[str] = field(default_factory=set)
    kartlagde_personar: dict[str, date] = field(default_factory=dict)  # person -> date first mapped
    sette: set[str] = field(default_factory=set)  # envelope ids already applied

    @property
    def status(self) -> str | None:
        return self.statusar[-1][0] if self.statusar else None

    def status_ved(self, dato: date) -> str | None:
        """The status in force at the end of `dato` (None: the case did not exist yet)."""
        gjeldande = None
        for status, fra in self.statusar:
            if fra > dato:
                break
            gjeldande = status
        return gjeldande

    @property
    def gruppe(self) -> str | None:
        """The KPI deadline group (IMDi's SP13.1-13.4), or None. Every resettlement refugee
        is in `overforing`, whatever the category; the other groups hold persons settled
        from mottak only, so privately living households are in none of them."""
        if self.sakstype == "overforing":
            return "overforing"
        if not self.fra_mottak:
            return None
        return {"einsleg_mindrearig": "einsleg_mindrearig", "barnefamilie": "barnefamilie_mottak", "vaksen": "vaksen_mottak"}.get(
            self.kategori or ""
        )

    def innan_frist(self) -> bool | None:
        """Settled within its group's target (None: not settled, no group or no clock)."""
        gruppe = self.gruppe
        if gruppe is None or self.busetjingsdato is None or self.vedtaksdato is None:
            return None
        return self.busetjingsdato <= legg_til_manader(self.vedtaksdato, GRUPPER[gruppe])

    # --- folding ---------------------------------------------------------------------

    def _set_status(self, status: str, fra: date) -> None:
        if self.status in FINAL or self.status == status:
            return
        # A status never starts before the one it follows (clock skew between producers).
        if self.statusar and fra < self.statusar[-1][1]:
            fra = self.statusar[-1][1]
        self.statusar.append((status, fra))

    def _rekn_kartlegging(self) -> None:
        self.kartlagde = len(self.kartlagde_personar)
        self.skal_kartleggast = len(self.skal_kartleggast_personar)
        if self.busetjingsdato is not None and self.status == BOSATT:
            self.kartlagde_ved_busetjing = sum(
                1
                for p, d in self.kartlagde_personar.items()
                if d <= self.busetjingsdato and p in self.skal_kartleggast_personar
            )


def til_json(sak: KpiSak) -> dict:
    """The record as JSON for the projection table (dates as ISO strings, sets as lists)."""
    return {
        **{k: getattr(sak, k) for k in ("sak_id", "kategori", "sakstype", "fra_mottak", "personar", "skal_kartleggast",
                                        "kartlagde", "kartlagde_ved_busetjing", "kommunenummer")},
        "vedtaksdato": _iso(sak.vedtaksdato),
        "busetjingsdato": _iso(sak.busetjingsdato),
        "statusar": [[st, d.isoformat()] for st, d in sak.statusar],
        "skal_kartleggast_personar": sorted(sak.skal_kartleggast_personar),
        "kartlagde_personar": {p: d.isoformat() for p, d in sak.kartlagde_personar.items()},
        "sette": sorted(sak.sette),
    }


def fra_json(d: dict) -> KpiSak:
    return KpiSak(
        **{k: d[k] for k in ("sak_id", "kategori", "sakstype", "fra_mottak", "personar", "skal_kartleggast", "kartlagde",
                             "kartlagde_ved_busetjing", "kommunenummer")},
        vedtaksdato=_dato(d["vedtaksdato"]),
        busetjingsdato=_dato(d["busetjingsdato"]),
        statusar=[(st, date.fromisoformat(x)) for st, x in d["statusar"]],
        skal_kartleggast_personar=set(d["skal_kartleggast_personar"]),
        kartlagde_personar={p: date.fromisoformat(x) for p, x in d["kartlagde_personar"].items()},
        sette=set(d["sette"]),
    )


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d else None


def _dato(x: str | None) -> date | None:
    return date.fromisoformat(x) if x else None


def forretningsdato(envelope: Envelope) -> date:
    """The envelope's time as a date in Europe/Oslo."""
    return envelope.time.astimezone(OSLO).date()


_RELEVANT = (
    VedtakFattet,
    VedtakKorrigert,
    KartleggingStartet,
    KartleggingFullfort,
    Fordelt,
    Avslatt,
    FordelingOppheva,
    AvtaleInngatt,
    Bosatt,
    Trukke,
)


def apply(sak: KpiSak | None, envelope: Envelope, data: EventData) -> KpiSak | None:
    """Fold one event into the case's KPI record. Events the KPIs do not use leave it as it
    is; an envelope applied before (same id) changes nothing. Mutates and returns `sak`
    (a new record when it is None and the event concerns a case)."""
    if not isinstance(data, _RELEVANT) or not envelope.subject.startswith("sak-"):
        return sak
    if sak is None:
        sak = KpiSak(sak_id=envelope.subject)
    eid = str(envelope.id)
    if eid in sak.sette:
        return sak
    sak.sette.add(eid)
    dato = forretningsdato(envelope)

    match data:
        case VedtakFattet():
            sak.kategori = data.kategori.value
            sak.sakstype = data.sakstype.value
            sak.fra_mottak = bool(data.mottak_id) and not data.privatbuande
            sak.personar = len(data.personar)
            sak.vedtaksdato = data.vedtaksdato
            # As in the case state machine: a household of protected identities only is
            # mapped in the protected store and ready for allocation at once.
            start = FORDELINGSKLAR if all(p.skjerma for p in data.personar) else UNDER_KARTLEGGING
            if not sak.statusar:
                sak.statusar.append((start, data.vedtaksdato))
            elif sak.statusar[0][0] != start:  # the vedtak arrived after later events
                sak.statusar.insert(0, (start, min(data.vedtaksdato, sak.statusar[0][1])))
        case VedtakKorrigert():
            if sak.status != TRUKKE:
                sak.kategori = data.kategori.value
                sak.personar = len(data.personar)
        case KartleggingStartet():
            sak.skal_kartleggast_personar |= set(data.personar)
        case KartleggingFullfort():
            tidlegare = sak.kartlagde_personar.get(data.person_id)
            if tidlegare is None or dato < tidlegare:
                sak.kartlagde_personar[data.person_id] = dato
            if data.sak_komplett and sak.status == UNDER_KARTLEGGING:
                sak._set_status(FORDELINGSKLAR, dato)
        case Fordelt():
            if sak.status == UNDER_KARTLEGGING:  # fordelingsklar is implied
                sak._set_status(FORDELINGSKLAR, dato)
            if sak.status not in FINAL:
                sak.kommunenummer = data.kommunenummer
                sak.kategori = sak.kategori or data.kategori.value
                if data.tal_personar:
                    sak.personar = data.tal_personar
            sak._set_status(FORDELT, dato)
        case Avslatt() | FordelingOppheva():
            if sak.status not in FINAL:
                sak.kommunenummer = None
            sak._set_status(FORDELINGSKLAR, dato)
        case AvtaleInngatt():
            if sak.status not in FINAL:
                sak.kommunenummer = data.kommunenummer
            sak._set_status(SOKT_UT, dato)
        case Bosatt():
            if sak.status != TRUKKE:
                sak.kommunenummer = data.kommunenummer
                sak.busetjingsdato = data.busetjingsdato
                sak.vedtaksdato = sak.vedtaksdato or data.vedtaksdato
                sak.kategori = data.kategori.value
                if data.tal_personar:
                    sak.personar = data.tal_personar
                sak._set_status(BOSATT, data.busetjingsdato)
        case Trukke():
            sak._set_status(TRUKKE, dato)
    sak._rekn_kartlegging()
    return sak


# --- periods ------------------------------------------------------------------------------


def _periode(periode: str | int | None) -> tuple[date, date] | None:
    """'2023-10' -> that month, '2023' or 2023 -> that year, None -> no limit."""
    if periode is None:
        return None
    s = str(periode)
    if len(s) == 4:
        return date(int(s), 1, 1), date(int(s), 12, 31)
    ar, manad = int(s[:4]), int(s[5:7])
    return date(ar, manad, 1), date(ar, manad, calendar.monthrange(ar, manad)[1])


def manadsslutt(manad: str) -> date:
    return _periode(manad)[1]  # type: ignore[index]


def _bosette_i(saker: Iterable[KpiSak], periode: str | int | None) -> list[KpiSak]:
    grenser = _periode(periode)
    return [
        s
        for s in saker
        if s.status == BOSATT
        and s.busetjingsdato is not None
        and (grenser is None or grenser[0] <= s.busetjingsdato <= grenser[1])
    ]


def _andel(teljar: int, nemnar: int) -> float | None:
    return teljar / nemnar if nemnar else None


# --- KPIs ---------------------------------------------------------------------------------


def innan_frist(saker: Iterable[KpiSak], manad: str) -> list[dict]:
    """Share of persons settled within the deadline target, for the persons settled in
    `manad` (busetjingsdato in that month; the period may also be a year, '2023').

    IMDi (styringsparametrar SP13.1-13.4):
    - overforing: share of resettlement refugees settled within 6 months after the entry
      permit (vedtak om innreisetillatelse) was given;
    - vaksen_mottak: share of adults settled from mottak within 6 months after the decision
      that forms the basis for settlement;
    - einsleg_mindrearig: share of unaccompanied minors settled from mottak (or care
      centre) within 3 months after that decision;
    - barnefamilie_mottak: share of families with children under 18 settled from mottak
      within 3 months after that decision.
    'Within N months' is busetjingsdato <= vedtaksdato + N calendar months (same day
    number, clamped to the month's last day). Counted in persons. Privately living
    households are in none of the groups; a resettlement refugee is in `overforing` only.

    Rows: gruppe, mal_manader, bosette, innan_frist, andel (None when nobody was settled)."""
    bosette: dict[str, int] = defaultdict(int)
    innan: dict[str, int] = defaultdict(int)
    for s in _bosette_i(saker, manad):
        ok = s.innan_frist()
        if ok is None:
            continue
        bosette[s.gruppe] += s.personar  # type: ignore[index]
        if ok:
            innan[s.gruppe] += s.personar  # type: ignore[index]
    return [
        {"gruppe": g, "mal_manader": n, "bosette": bosette[g], "innan_frist": innan[g], "andel": _andel(innan[g], bosette[g])}
        for g, n in GRUPPER.items()
    ]


def _snitt_og_median(manader: list[tuple[float, int]]) -> tuple[int, float | None, float | None]:
    personar = sum(n for _, n in manader)
    if not personar:
        return 0, None, None
    snitt = sum(m * n for m, n in manader) / personar
    median = statistics.median([m for m, n in manader for _ in range(n)])
    return personar, snitt, median


def ventetid(saker: Iterable[KpiSak], periode: str | int | None = None) -> list[dict]:
    """Mean and median waiting time in months from the decision (vedtaksdato; the entry
    permit for resettlement refugees) to settlement (busetjingsdato), for the persons
    settled in the period ('2023-10', '2023' or None for all), by category and by case
    type. Counted per person (a household of four weighs four); a month is 30.4375 days.

    Rows: dimensjon ('kategori' | 'sakstype'), verdi, personar, snitt_manader, median_manader."""
    grupper: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
    for s in _bosette_i(saker, periode):
        if s.vedtaksdato is None or not s.personar:
            continue
        manader = (s.busetjingsdato - s.vedtaksdato).days / DAGAR_PER_MANAD  # type: ignore[operator]
        grupper[("kategori", s.kategori or "ukjend")].append((manader, s.personar))
        grupper[("sakstype", s.sakstype or "ukjend")].append((manader, s.personar))
    rows = []
    for (dimensjon, verdi), verdiar in sorted(grupper.items()):
        personar, snitt, median = _snitt_og_median(verdiar)
        rows.append(
            {"dimensjon": dimensjon, "verdi": verdi, "personar": personar, "snitt_manader": snitt, "median_manader": median}
        )
    return rows


def ventande(saker: Iterable[KpiSak], dato: date) -> dict[str, int]:
    """Persons waiting per status at `dato`: the status in force at the end of that day
    (under_kartlegging, fordelingsklar, fordelt, sokt_ut). Settled and withdrawn cases,
    and cases decided after the date, are not waiting. Persons are the case's current
    count (a later correction of the household counts back in time)."""
    result = {s: 0 for s in VENTANDE}
    for s in saker:
        status = s.status_ved(dato)
        if status in result:
            result[status] += s.personar
    return result


def kartleggingsdekning(saker: Iterable[KpiSak], manad: str | int) -> dict:
    """Mapping coverage among the persons settled in the period: of the persons to be
    mapped (kartlegging.startet), how many were mapped (kartlegging.fullfort) on or before
    the settlement date (integreringslova § 6), and how many after (§ 10).

    Keys: bosette_personar, skal_kartleggast, kartlagde_for_busetjing, dekning (None when
    nobody was to be mapped), kartlagde_etter_busetjing, dekning_etter_busetjing (mapped
    so far, before or after settlement, over those to be mapped)."""
    bosette = skal = for_ = totalt = 0
    for s in _bosette_i(saker, manad):
        bosette += s.personar
        skal += s.skal_kartleggast
        for_ += s.kartlagde_ved_busetjing or 0
        totalt += sum(1 for p in s.kartlagde_personar if p in s.skal_kartleggast_personar)
    return {
        "bosette_personar": bosette,
        "skal_kartleggast": skal,
        "kartlagde_for_busetjing": for_,
        "dekning": _andel(for_, skal),
        "kartlagde_etter_busetjing": totalt - for_,
        "dekning_etter_busetjing": _andel(totalt, skal),
    }


def fylke_for(kommunenummer: str, fylke_av: dict[str, str]) -> str:
    """The county of a kommune: from `fylke_av`, else the first two digits of its number."""
    return fylke_av.get(kommunenummer, kommunenummer[:2])


def kapasitetsbruk(
    busette_per_kommune: dict[str, int],
    vedtaksplassar: dict[str, int],
    oppmoda: dict[str, int],
    fylke_av: dict[str, str],
) -> tuple[list[dict], list[dict]]:
    """Capacity use per kommune and per county: bruk = persons settled / decided places
    (vedtaksplassar), and vedtak_mot_oppmoding = decided places / places requested by IMDi
    (oppmoding), both for the same year; None where the denominator is 0. A county's
    figures are the sums of its kommunar's before dividing.

    Returns (rows per kommune: kommunenummer, fylkesnummer, oppmoda, vedtaksplassar,
    bosette, bruk, vedtak_mot_oppmoding; rows per county: fylkesnummer and the same)."""
    kommunar = sorted(set(busette_per_kommune) | set(vedtaksplassar) | set(oppmoda))
    per_kommune = []
    summar: dict[str, dict[str, int]] = defaultdict(lambda: {"oppmoda": 0, "vedtaksplassar": 0, "bosette": 0})
    for k in kommunar:
        o, v, b = oppmoda.get(k, 0), vedtaksplassar.get(k, 0), busette_per_kommune.get(k, 0)
        f = fylke_for(k, fylke_av)
        per_kommune.append(
            {"kommunenummer": k, "fylkesnummer": f, "oppmoda": o, "vedtaksplassar": v, "bosette": b, "bruk": _andel(b, v), "vedtak_mot_oppmoding": _andel(v, o)}
        )
        summar[f]["oppmoda"] += o
        summar[f]["vedtaksplassar"] += v
        summar[f]["bosette"] += b
    per_fylke = [
        {"fylkesnummer": f, **t, "bruk": _andel(t["bosette"], t["vedtaksplassar"]), "vedtak_mot_oppmoding": _andel(t["vedtaksplassar"], t["oppmoda"])}
        for f, t in sorted(summar.items())
    ]
    return per_kommune, per_fylke


# --- the monthly report -------------------------------------------------------------------


@dataclass(frozen=True)
class KommuneKapasitet:
    """A kommune's capacity figures for the year: places requested by IMDi (oppmoda) and
    decided by the kommune (vedtaksplassar), in persons."""

    namn: str
    fylkesnummer: str
    fylke: str
    oppmoda: int = 0
    vedtaksplassar: int = 0


@dataclass(frozen=True)
class KapasitetInndata:
    """Per kommunenummer, for the report's year. Persons settled are computed from the
    cases (settled from 1 January up to the report month's end, by kommunenummer)."""

    kommunar: dict[str, KommuneKapasitet] = field(default_factory=dict)


def _forrige_manader(manad: str, n: int) -> list[str]:
    ar, m = int(manad[:4]), int(manad[5:7])
    result = []
    for _ in range(n):
        result.append(f"{ar:04d}-{m:02d}")
        ar, m = (ar - 1, 12) if m == 1 else (ar, m - 1)
    return list(reversed(result))


def bosette_per_kommune(saker: Iterable[KpiSak], fra: date, til: date) -> dict[str, int]:
    result: dict[str, int] = defaultdict(int)
    for s in saker:
        if s.status == BOSATT and s.busetjingsdato and s.kommunenummer and fra <= s.busetjingsdato <= til:
            result[s.kommunenummer] += s.personar
    return dict(result)


def rapport(saker: Iterable[KpiSak], manad: str, kapasitet_inndata: KapasitetInndata) -> dict:
    """All KPIs for the month `manad` ('2023-10'): deadline shares, waiting times and mapping
    coverage for the persons settled in the month; persons waiting per status at the end of
    the month; persons settled per county in the month; capacity use for the year up to the
    month's end; and a trend of the 12 months up to and including `manad`."""
    saker = list(saker)
    fra, til = _periode(manad)  # type: ignore[misc]
    kommunar = kapasitet_inndata.kommunar
    fylke_av = {k: v.fylkesnummer for k, v in kommunar.items()}
    fylkesnamn = {v.fylkesnummer: v.fylke for v in kommunar.values()}

    i_manaden = bosette_per_kommune(saker, fra, til)
    per_fylke: dict[str, int] = defaultdict(int)
    for k, n in i_manaden.items():
        per_fylke[fylke_for(k, fylke_av)] += n

    hittil = bosette_per_kommune(saker, date(fra.year, 1, 1), til)
    kap_kommune, kap_fylke = kapasitetsbruk(
        hittil,
        {k: v.vedtaksplassar for k, v in kommunar.items()},
        {k: v.oppmoda for k, v in kommunar.items()},
        fylke_av,
    )
    dekning = kartleggingsdekning(saker, manad)

    trend = []
    for m in _forrige_manader(manad, 12):
        rader = innan_frist(saker, m)
        i_gruppe = sum(r["bosette"] for r in rader)
        trend.append(
            {
                "manad": m,
                "bosette": sum(s.personar for s in _bosette_i(saker, m)),
                "andel_innan_frist": _andel(sum(r["innan_frist"] for r in rader), i_gruppe),
            }
        )

    def kap(rad: dict) -> dict:
        return {k: rad[k] for k in ("oppmoda", "vedtaksplassar", "bosette", "bruk", "vedtak_mot_oppmoding")}

    return {
        "manad": manad,
        "innan_frist": innan_frist(saker, manad),
        "ventetid": ventetid(saker, manad),
        "ventande": ventande(saker, til),
        "bosette_per_fylke": [
            {"fylkesnummer": f, "fylke": fylkesnamn.get(f), "personar": n} for f, n in sorted(per_fylke.items())
        ],
        "kapasitet": [
            {
                "kommunenummer": r["kommunenummer"],
                "namn": kommunar[r["kommunenummer"]].namn if r["kommunenummer"] in kommunar else None,
                "fylke": fylkesnamn.get(r["fylkesnummer"]),
                **kap(r),
            }
            for r in kap_kommune
        ],
        "kapasitet_fylke": [
            {"fylkesnummer": r["fylkesnummer"], "fylke": fylkesnamn.get(r["fylkesnummer"]), **kap(r)} for r in kap_fylke
        ],
        "kartlegging": {k: dekning[k] for k in ("bosette_personar", "skal_kartleggast", "kartlagde_for_busetjing", "dekning")},
        "trend": trend,
    }
