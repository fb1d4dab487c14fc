"""A seeded, reproducible workload of households, calibrated from IMDi's 2023 figures
(../shared/DOMAIN.md, Figures): who arrives, and how mottak, caseworkers and kommunar answer.

Dates are relative to the run's day: most decisions are recent, and a backlog tail is
months old, so deadline events (frist nærmar / overskriden) happen in every run."""

import hashlib
import math
import random
from dataclasses import dataclass
from datetime import date, timedelta

from services.kompetanse.identitet import med_kontrollsiffer
from shared.catalogue import (
    Arbeidserfaring,
    Kategori,
    Sakstype,
    Utdanning,
    VedtakFattet,
    VedtakKorrigert,
    VedtakPerson,
)

# Households settled in 2023: 647 unaccompanied minors, 6,515 families (20,159 persons),
# about 12,000 other-adult households (12,894 persons: mostly single, some couples).
HOUSEHOLD_MIX = [(Kategori.vaksen, 0.626), (Kategori.barnefamilie, 0.340), (Kategori.einsleg_mindrearig, 0.034)]
RESETTLEMENT_SHARE = 0.075  # overføringsflyktningar, about 2,500 of 33,701 persons
COLLECTIVE_SHARE = 0.60  # kollektivt vern (Ukraine) dominated 2023
PRIVATE_SHARE = 0.15  # privatbuande
REFUSAL_RATE = 0.10  # share of allocations a kommune refuses
OVERRIDE_RATE = 0.03  # share of proposals a caseworker overrides (to the best alternative)
WITHDRAWAL_RATE = 0.01  # cases withdrawn (left the country, settled on their own)
CORRECTION_RATE = 0.02  # households UDI corrects after the decision
PROTECTED_RATE = 0.005  # persons with protected identity (skjerma)
SPECIAL_NEEDS_RATE = 0.033  # 1,105 of 33,701 settled in 2023 had particular needs
NETWORK_RATE = 0.2  # mapped persons with close relatives somewhere in Norway
BACKLOG_SHARE = 0.15  # decisions that have waited a while (the 2023 backlog)
# Citizenship mix (2023 was dominated by Ukraine; resettlement mostly Syria, DR Congo, Afghanistan).
CITIZENSHIP = {"asyl": [("SYR", 30), ("AFG", 20), ("ERI", 15), ("TUR", 15), ("SDN", 10), ("SOM", 10)],
               "overforing": [("SYR", 50), ("COD", 25), ("AFG", 25)]}


@dataclass(frozen=True)
class Household:
    sak_id: str
    vedtak: VedtakFattet

    @property
    def persons(self) -> int:
        return len(self.vedtak.personar)


def person_id(rng: random.Random) -> str:
    return "p-" + rng.randbytes(12).hex()


def syntetisk_fodselsnummer(person_id: str, fodselsar: int) -> str:
    """A synthetic fødselsnummer for a simulated person: valid control digits, month + 80
    (Skatteetaten's marker for synthetic numbers, so it can never be a real person's), the
    individual number in the birth century's range, derived from the person id."""
    h = int(hashlib.sha256(person_id.encode()).hexdigest(), 16)
    day, month = 1 + h % 28, 81 + (h >> 8) % 12
    low = 0 if fodselsar < 2000 else 500
    for i in range(500):
        individ = low + ((h >> 16) + i) % 500
        if fnr := med_kontrollsiffer(f"{day:02d}{month:02d}{fodselsar % 100:02d}{individ:03d}"):
            return fnr
    raise ValueError("no synthetic number")  # unreachable: most candidates have valid control digits


def _persons(rng: random.Random, kategori: Kategori, sakstype: Sakstype, year: int) -> list[VedtakPerson]:
    if sakstype == Sakstype.kollektivt_vern:
        land = "UKR"
    else:
        options = CITIZENSHIP.get(sakstype.value, CITIZENSHIP["asyl"])
        land = rng.choices([c for c, _ in options], weights=[w for _, w in options])[0]

    def person(age: int) -> VedtakPerson:
        return VedtakPerson(
            person_id=person_id(rng),
            fodselsar=year - age,
            kjonn=rng.choice("KM"),
            statsborgarskap=land,
            skjerma=rng.random() < PROTECTED_RATE,
        )

    if kategori == Kategori.einsleg_mindrearig:
        return [person(rng.randint(15, 17))]
    if kategori == Kategori.vaksen:
        return [person(rng.randint(18, 60)) for _ in range(1 if rng.random() < 0.93 else 2)]
    adults = [person(rng.randint(22, 50)) for _ in range(1 if rng.random() < 0.35 else 2)]
    # 3.1 persons per family on average
    children = [person(rng.randint(0, 17)) for _ in range(max(1, round(rng.gauss(1.6, 0.9))))]
    return adults + children


def _vedtaksdato(rng: random.Random, idag: date) -> date:
    """Most decisions are days old; a backlog tail has waited up to seven months."""
    age = rng.randint(60, 210) if rng.random() < BACKLOG_SHARE else rng.randint(0, 30)
    return idag - timedelta(days=age)


# Arrivals of decisions per month in a year (DOMAIN.md: peaks in spring and autumn, a dip
# in July, a surge from week 36), as shares of the year.
SESONG = (0.075, 0.080, 0.090, 0.092, 0.088, 0.080, 0.050, 0.070, 0.095, 0.105, 0.098, 0.077)


def vedtaksdato_i_aret(ar: int):
    """Decision dates spread over the year `ar` by the seasonal pattern (for `households`)."""

    def dato(rng: random.Random, _idag: date) -> date:
        manad = rng.choices(range(1, 13), weights=SESONG)[0]
        start = date(ar, manad, 1)
        dagar = ((date(ar + manad // 12, manad % 12 + 1, 1)) - start).days
        return start + timedelta(days=rng.randrange(dagar))

    return dato


def households(n: int, seed: int, kommunar: list[str], idag: date | None = None, vedtaksdato=None) -> list[Household]:
    """`n` households, sorted by decision date: by default decided in the weeks before
    `idag` (with a backlog tail); `vedtaksdato_i_aret(ar)` spreads them over a year instead."""
    idag = idag or date.today()
    vedtaksdato = vedtaksdato or _vedtaksdato
    rng = random.Random(seed)
    result = []
    for i in range(n):
        kategori = rng.choices([k for k, _ in HOUSEHOLD_MIX], weights=[w for _, w in HOUSEHOLD_MIX])[0]
        roll = rng.random()
        sakstype = (
            Sakstype.overforing
            if roll < RESETTLEMENT_SHARE
            else Sakstype.kollektivt_vern
            if roll < RESETTLEMENT_SHARE + COLLECTIVE_SHARE
            else Sakstype.asyl
        )
        if kategori == Kategori.einsleg_mindrearig and sakstype == Sakstype.overforing:
            sakstype = Sakstype.asyl
        private = sakstype != Sakstype.overforing and kategori != Kategori.einsleg_mindrearig and rng.random() < PRIVATE_SHARE
        vedtak = VedtakFattet(
            reg_nummer=f"REG-{seed:04d}{i:07d}",
            kategori=kategori,
            sakstype=sakstype,
            vedtakstype="innreiseloyve" if sakstype == Sakstype.overforing else "opphald",
            vedtaksdato=vedtaksdato(rng, idag),
            mottak_id=None if private or sakstype == Sakstype.overforing else f"mottak-{rng.randint(1, 40):02d}",
            privatbuande=private,
            bustadkommune=rng.choice(kommunar) if private else None,
            personar=_persons(rng, kategori, sakstype, idag.year),
        )
        result.append(Household(f"sak-{seed:04d}-{i:07d}", vedtak))
    return sorted(result, key=lambda h: h.vedtak.vedtaksdato)


def _fraction(*parts: str) -> float:
    """A stable pseudo-random number in [0, 1) from the parts: the same question always
    gets the same answer, so a retried or redelivered decision never changes its mind."""
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def kommune_refuses(sak_id: str, kommunenummer: str) -> bool:
    return _fraction("refuse", sak_id, kommunenummer) < REFUSAL_RATE


def kartlegging_dagar(sak_id: str) -> float:
    """Days the mottak takes to map a household's residents (one to five weeks)."""
    return 7 + _fraction("kartlegging", sak_id) * 28


def agreed_date(idag: date, sak_id: str) -> date:
    """The kommune needs some weeks to prepare housing."""
    return idag + timedelta(days=14 + int(_fraction("date", sak_id) * 60))


def stops_taking(kommunenummer: str) -> bool:
    """About 3% of kommunar report that they cannot take new allocations for now."""
    return _fraction("stop", kommunenummer) < 0.03


def caseworker_overrides(sak_id: str) -> bool:
    return _fraction("override", sak_id) < OVERRIDE_RATE


def withdrawn(sak_id: str) -> bool:
    return _fraction("withdraw", sak_id) < WITHDRAWAL_RATE


def correction(h: Household) -> VedtakKorrigert | None:
    """UDI's correction of some households: an unaccompanied minor gets an accompanying
    adult (and so becomes a family), a family gets a child registered that was missing."""
    if _fraction("correct", h.sak_id) >= CORRECTION_RATE or h.vedtak.kategori == Kategori.vaksen:
        return None
    rng = random.Random(h.sak_id)
    first = h.vedtak.personar[0]
    if h.vedtak.kategori == Kategori.einsleg_mindrearig:
        extra = VedtakPerson(person_id=person_id(rng), fodselsar=first.fodselsar - 20, kjonn=rng.choice("KM"),
                             statsborgarskap=first.statsborgarskap)
        grunn = "accompanying adult (følgjeperson) registered"
    else:
        extra = VedtakPerson(person_id=person_id(rng), fodselsar=h.vedtak.vedtaksdato.year - rng.randint(0, 12),
                             kjonn=rng.choice("KM"), statsborgarskap=first.statsborgarskap)
        grunn = "child missing from the registration"
    return VedtakKorrigert(reg_nummer=h.vedtak.reg_nummer, kategori=Kategori.barnefamilie,
                           personar=[*h.vedtak.personar, extra], grunn=grunn)


EDUCATION = ["ingen", "grunnskule", "vidaregaande", "fagskule", "bachelor", "master"]
SECTORS = [("sjukepleiar", "helse"), ("lærar", "undervisning"), ("snekkar", "bygg"), ("sjåfør", "transport"),
           ("kokk", "reiseliv"), ("ingeniør", "industri"), ("seljar", "varehandel"), ("bonde", "landbruk")]


DIGITAL = ["ingen", "grunnleggjande", "gode", "avanserte"]
SCHEMA = {"ordinaer": "urn:chain:kartlegging:ordinaer:v1", "forenkla": "urn:chain:kartlegging:forenkla:v1"}


def mapping_for(person: str, kommunar: list[str], kartleggingstype: str = "ordinaer") -> dict:
    """A plausible mapping for one person in the case's versioned schema (the simplified
    one answers fewer questions), stable per person id."""
    rng = random.Random(person)
    level = rng.choices(EDUCATION, weights=[8, 25, 30, 10, 20, 7])[0]
    work = [Arbeidserfaring(yrke=y, sektor=s, ar=rng.randint(1, 15)) for y, s in rng.sample(SECTORS, rng.randint(0, 2))]
    utdanning = Utdanning(
        niva=level,
        fagfelt=rng.choice(SECTORS)[1] if level not in ("ingen", "grunnskule") and rng.random() < 0.8 else None,
        ar={"ingen": 0, "grunnskule": 9}.get(level, rng.randint(12, 18)),
        dokumentert=rng.random() < 0.4,
    )
    body = {
        "schema": SCHEMA[kartleggingstype],
        "heimel": "integreringslova_6",
        "utdanning": utdanning.model_dump(mode="json", exclude_none=True),
        "arbeid": [w.model_dump(mode="json") for w in work],
        "sprak": {"norsk": rng.choice(["ingen", "A1", "A2"]), "engelsk": rng.choice(["ingen", "A2", "B1", "B2"])},
        "nettverk_kommunar": [rng.choice(kommunar)] if kommunar and rng.random() < NETWORK_RATE else [],
    }
    if kartleggingstype == "ordinaer":
        body |= {
            "digitale_ferdigheiter": rng.choice(DIGITAL),
            "forerkort": rng.choice(["ingen", "ingen", "B", "tyngre"]),
            "helse": {"indikatorar": ["tilrettelagt_bustad"] if rng.random() < SPECIAL_NEEDS_RATE else []},
        }
        if rng.random() < 0.7:
            body["onske"] = {"arbeid": [rng.choice(SECTORS)[0]], "utdanning": []}
    elif rng.random() < SPECIAL_NEEDS_RATE:
        body["helse"] = {"indikatorar": ["tilrettelagt_bustad"]}
    return body


# 36,082 places decided for 33,701 persons settled in 2023 (DOMAIN.md): 7% more places.
DECIDED_PER_SETTLED = 36_082 / 33_701


def apportion(total: int, weights: dict[str, int]) -> dict[str, int]:
    """`total` split in proportion to `weights`, in whole numbers summing to `total`
    (largest remainder, ties to the larger weight)."""
    whole = sum(weights.values())
    exact = {k: total * w / whole for k, w in weights.items()}
    shares = {k: int(x) for k, x in exact.items()}
    rest = total - sum(shares.values())
    for k in sorted(exact, key=lambda k: (exact[k] - shares[k], weights[k]), reverse=True)[:rest]:
        shares[k] += 1
    return shares


def capacity(
    kommunar: list[tuple[str, int, bool]], households: list[Household], slack: float = DECIDED_PER_SETTLED
) -> dict[str, dict[str, int]]:
    """Decided places per kommune and group: the workload's persons of the group times
    `slack` (2023's ratio by default), apportioned by population. Only kommunar with services
    for minors (the third element) decide places for minors. The most populous kommune of a
    group decides at least its largest household, so each household fits somewhere at the
    start; when places run short later, IMDi asks for more (`tilleggsplassar`)."""
    need: dict[Kategori, int] = {g: 0 for g in Kategori}
    largest: dict[Kategori, int] = {g: 1 for g in Kategori}
    for h in households:
        need[h.vedtak.kategori] += h.persons
        largest[h.vedtak.kategori] = max(largest[h.vedtak.kategori], h.persons)
    result: dict[str, dict[str, int]] = {knr: {g.value: 0 for g in Kategori} for knr, _, _ in kommunar}
    for g in Kategori:
        if not need[g]:
            continue
        eligible = {knr: pop for knr, pop, minors in kommunar if minors or g != Kategori.einsleg_mindrearig}
        # Places for families are decided in whole families (about three persons): single
        # places scattered over many kommunar would fit no family.
        unit = 3 if g == Kategori.barnefamilie else 1
        shares = {k: n * unit for k, n in apportion(math.ceil(need[g] * slack / unit), eligible).items()}
        biggest = max(eligible, key=eligible.get)
        shares[biggest] = max(shares[biggest], largest[g])
        for knr, n in shares.items():
            result[knr][g.value] = n
    return result


def tilleggsplassar(ventande: list[tuple[str, int, list[str]]], kommunar: list[dict]) -> dict[str, dict[str, int]]:
    """IMDi's extra request (tilleggsoppmoding) when places run short: each waiting household
    (group, persons, kommunar that refused it) that no other kommune taking allocations has
    free places for is given to the most populous such kommune, which is asked for the
    places missing.
    `kommunar` are bosetting's rows (GET /kommunar). Returns the whole new decision of each
    kommune asked, places per group, as a decision replaces the earlier one."""
    ledige = {
        k["kommunenummer"]: {g: c["plassar"] - c["brukt"] for g, c in k["kapasitet"].items()}
        for k in kommunar
        if k["tek_imot"]
    }
    folk = {k["kommunenummer"]: k["innbyggjarar"] for k in kommunar}
    minors = {k["kommunenummer"] for k in kommunar if k["mindrearig_teneste"]}
    asked: dict[str, dict[str, int]] = {}
    # Largest first, each into the tightest kommune it fits (best fit decreasing): close to
    # the fewest places missing, so IMDi does not ask for places an allocation would not need.
    for gruppe, personar, avslatt_av in sorted(ventande, key=lambda v: v[1], reverse=True):
        kandidatar = [
            k for k in ledige if k not in avslatt_av and (gruppe != Kategori.einsleg_mindrearig.value or k in minors)
        ]
        if not kandidatar:
            continue
        fits = [k for k in kandidatar if ledige[k].get(gruppe, 0) >= personar]
        if fits:
            ledige[min(fits, key=lambda k: (ledige[k][gruppe], -folk[k]))][gruppe] -= personar
            continue
        best = max(kandidatar, key=folk.get)
        missing = personar - max(0, ledige[best].get(gruppe, 0))
        asked.setdefault(best, {})[gruppe] = asked.get(best, {}).get(gruppe, 0) + missing
        ledige[best][gruppe] = 0
    decided = {k["kommunenummer"]: {g: c["plassar"] for g, c in k["kapasitet"].items()} for k in kommunar}
    return {knr: {g: decided[knr].get(g, 0) + extra.get(g, 0) for g in decided[knr] | extra} for knr, extra in asked.items()}
