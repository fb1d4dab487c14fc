"""A seeded, reproducible workload of households, calibrated from IMDi's 2023 figures
(../shared/DOMAIN.md, Figures): who arrives, and how mottak and kommunar answer."""

import hashlib
import random
from dataclasses import dataclass
from datetime import date, timedelta

from shared.catalogue import (
    Arbeidserfaring,
    Kategori,
    Sakstype,
    Sprak,
    Utdanning,
    VedtakFattet,
    VedtakPerson,
)

YEAR = 2023
# Households settled in 2023: 647 unaccompanied minors, 6,515 families (20,159 persons),
# about 12,000 other-adult households (12,894 persons: mostly single, some couples).
HOUSEHOLD_MIX = [(Kategori.vaksen, 0.626), (Kategori.barnefamilie, 0.340), (Kategori.einsleg_mindrearig, 0.034)]
RESETTLEMENT_SHARE = 0.075  # overføringsflyktningar, about 2,500 of 33,701 persons
COLLECTIVE_SHARE = 0.60  # kollektivt vern (Ukraine) dominated 2023
PRIVATE_SHARE = 0.15  # privatbuande
REFUSAL_RATE = 0.10  # share of allocations a kommune refuses
# Monthly arrival weights: peaks in spring and autumn, dip in July, surge from week 36.
MONTH_WEIGHTS = [7, 8, 9, 9, 8, 7, 4, 7, 10, 11, 10, 10]


@dataclass(frozen=True)
class Household:
    sak_id: str
    vedtak: VedtakFattet

    @property
    def persons(self) -> int:
        return len(self.vedtak.personar)


def person_id(rng: random.Random) -> str:
    return "p-" + rng.randbytes(12).hex()


def _persons(rng: random.Random, kategori: Kategori) -> list[VedtakPerson]:
    def person(age: int) -> VedtakPerson:
        return VedtakPerson(person_id=person_id(rng), fodselsar=YEAR - age, kjonn=rng.choice("KM"))

    if kategori == Kategori.einsleg_mindrearig:
        return [person(rng.randint(15, 17))]
    if kategori == Kategori.vaksen:
        return [person(rng.randint(18, 60)) for _ in range(1 if rng.random() < 0.93 else 2)]
    adults = [person(rng.randint(22, 50)) for _ in range(1 if rng.random() < 0.35 else 2)]
    # 3.1 persons per family on average
    children = [person(rng.randint(0, 17)) for _ in range(max(1, round(rng.gauss(1.6, 0.9))))]
    return adults + children


def _vedtaksdato(rng: random.Random) -> date:
    month = rng.choices(range(1, 13), weights=MONTH_WEIGHTS)[0]
    return date(YEAR, month, rng.randint(1, 28))


def households(n: int, seed: int, kommunar: list[str]) -> list[Household]:
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
            vedtaksdato=_vedtaksdato(rng),
            mottak_id=None if private or sakstype == Sakstype.overforing else f"mottak-{rng.randint(1, 40):02d}",
            privatbuande=private,
            bustadkommune=rng.choice(kommunar) if private else None,
            personar=_persons(rng, kategori),
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


def agreed_date(vedtaksdato: date, sak_id: str) -> date:
    return vedtaksdato + timedelta(days=30 + int(_fraction("date", sak_id) * 120))


EDUCATION = ["ingen", "grunnskule", "vidaregaande", "fagskule", "bachelor", "master"]
SECTORS = [("sjukepleiar", "helse"), ("lærar", "undervisning"), ("snekkar", "bygg"), ("sjåfør", "transport"),
           ("kokk", "reiseliv"), ("ingeniør", "industri"), ("seljar", "varehandel"), ("bonde", "landbruk")]


def mapping_for(person: str) -> dict:
    """A plausible mapping result for one person, stable per person id."""
    rng = random.Random(person)
    level = rng.choices(EDUCATION, weights=[8, 25, 30, 10, 20, 7])[0]
    work = [Arbeidserfaring(yrke=y, sektor=s, ar=rng.randint(1, 15)) for y, s in rng.sample(SECTORS, rng.randint(0, 2))]
    languages = [Sprak(sprak="norsk", niva=rng.choice(["ingen", "A1", "A2"])),
                 Sprak(sprak="engelsk", niva=rng.choice(["ingen", "A2", "B1", "B2"]))]
    utdanning = Utdanning(niva=level, ar={"ingen": 0, "grunnskule": 9}.get(level, rng.randint(12, 18)), dokumentert=rng.random() < 0.4)
    return {
        "utdanning": utdanning.model_dump(mode="json"),
        "arbeid": [w.model_dump(mode="json") for w in work],
        "sprak": [s.model_dump(mode="json") for s in languages],
    }


def capacity(kommunar: list[tuple[str, int]], households: list[Household], slack: float = 1.5) -> dict[str, dict[str, int]]:
    """Decided places per kommune and group, spread by population with some slack, and
    never fewer than the largest household of the group (or it could never be placed)."""
    need: dict[Kategori, int] = {g: 0 for g in Kategori}
    largest: dict[Kategori, int] = {g: 1 for g in Kategori}
    for h in households:
        need[h.vedtak.kategori] += h.persons
        largest[h.vedtak.kategori] = max(largest[h.vedtak.kategori], h.persons)
    total = sum(pop for _, pop in kommunar)
    return {
        knr: {g.value: max(largest[g], round(need[g] * slack * pop / total)) for g in Kategori}
        for knr, pop in kommunar
    }
