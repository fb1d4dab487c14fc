"""Kartlegging's decisions, with no I/O: who is to be mapped, what a mapping must hold
before it is complete, how complete it is, and when a case is complete.

A kartleggingssak (mapping case) opens when UDI's vedtak arrives. Adults are mapped, and
every unaccompanied minor; persons under collective protection get the simplified
(forenkla) mapping. A mapping is saved as a draft (utkast) any number of times, then
completed (version 1); a correction after that is a new version, never an overwrite. The
case is complete when every person to be mapped is mapped.
"""

from dataclasses import dataclass, field
from datetime import date

from services.kartlegging.skjema import FORENKLA_V1, ORDINAER_V1
from shared.catalogue import (
    Kartleggingstype,
    KartleggingFullfort,
    KartleggingKorrigert,
    KartleggingStartet,
    Kategori,
    Sakstype,
    VedtakFattet,
)

MYNDIG = 18


class DomainError(Exception):
    """A submission that breaks a rule."""


class Manglar(DomainError):
    """The mapping cannot be completed: fields its schema requires are not answered."""

    def __init__(self, felt: list[str]):
        super().__init__("required fields not answered: " + ", ".join(felt))
        self.felt = felt


class FeilSkjema(DomainError):
    """The submission's schema is not one this case may use."""


def skal_kartleggjast(fodselsar: int, kategori: Kategori, vedtaksdato: date) -> bool:
    return kategori == Kategori.einsleg_mindrearig or vedtaksdato.year - fodselsar >= MYNDIG


# --- what a mapping must hold, and how complete it is ------------------------------------

SKJEMA = {Kartleggingstype.ordinaer: ORDINAER_V1, Kartleggingstype.forenkla: FORENKLA_V1}
# A forenkla case may get the ordinary mapping (it asks more); never the other way round.
TILLATNE_SKJEMA = {
    Kartleggingstype.ordinaer: (ORDINAER_V1,),
    Kartleggingstype.forenkla: (FORENKLA_V1, ORDINAER_V1),
}
# Required before a mapping can be completed.
PAKREVD = {
    ORDINAER_V1: ("heimel", "utdanning", "arbeid", "sprak.norsk", "sprak.engelsk", "digitale_ferdigheiter", "helse"),
    FORENKLA_V1: ("heimel", "utdanning", "sprak.norsk", "sprak.engelsk"),
}
# What the completeness score counts: the required fields and those allocation and
# qualification weigh (fagfelt only where there is education beyond compulsory school).
KRITISKE = {
    ORDINAER_V1: (
        "heimel", "utdanning", "utdanning.fagfelt", "arbeid", "sprak.norsk", "sprak.engelsk",
        "digitale_ferdigheiter", "forerkort", "helse", "nettverk_kommunar", "onske",
    ),
    FORENKLA_V1: ("heimel", "utdanning", "arbeid", "sprak.norsk", "sprak.engelsk", "nettverk_kommunar"),
}
UTAN_FAGFELT = {"ingen", "grunnskule"}
# Health indicators as they may leave kartlegging: coarse needs only.
SAERLEGE_BEHOV = {
    "saerpleie": "saerpleie",
    "tilrettelagt_avdeling": "tilrettelagt_avdeling",
    "tilrettelagt_bustad": "tilrettelagt_bustad",
    "oppfolging_helse": "oppfolging_helse",
    "psykisk_helse_oppfolging": "oppfolging_helse",
}


def _svara(innhald: dict, felt: str) -> bool:
    value: object = innhald
    for part in felt.split("."):
        if not isinstance(value, dict) or value.get(part) is None:
            return False
        value = value[part]
    return True


def _gjeld(innhald: dict, felt: str) -> bool:
    if felt == "utdanning.fagfelt":
        return (innhald.get("utdanning") or {}).get("niva") not in UTAN_FAGFELT
    return True


def manglande(innhald: dict, felt: tuple[str, ...]) -> list[str]:
    return [f for f in felt if _gjeld(innhald, f) and not _svara(innhald, f)]


def fullstendigheit(innhald: dict) -> tuple[float, list[str]]:
    """The share of the schema's critical fields answered (those that apply), and the
    critical fields missing."""
    felt = [f for f in KRITISKE[innhald["schema"]] if _gjeld(innhald, f)]
    mangel = manglande(innhald, tuple(felt))
    return round((len(felt) - len(mangel)) / len(felt), 4), mangel


def kompetanse(innhald: dict) -> dict:
    """The content as it may travel on the bus: competence, coarse needs, network."""
    sprak = innhald.get("sprak") or {}
    helse = (innhald.get("helse") or {}).get("indikatorar", [])
    score, mangel = fullstendigheit(innhald)
    out = {
        "utdanning": innhald["utdanning"],
        "arbeid": innhald.get("arbeid", []),
        "sprak": [{"sprak": k, "niva": sprak[k]} for k in ("norsk", "engelsk") if k in sprak] + sprak.get("andre", []),
        "saerlege_behov": sorted({SAERLEGE_BEHOV[h] for h in helse if h in SAERLEGE_BEHOV}),
        "nettverk_kommunar": innhald.get("nettverk_kommunar", []),
        "fullstendigheit": score,
        "manglande_felt": mangel,
    }
    for felt in ("digitale_ferdigheiter", "forerkort", "heimel"):
        if felt in innhald:
            out[felt] = innhald[felt]
    return out


# --- the mapping case ------------------------------------------------------------------


@dataclass
class Kartleggingssak:
    sak_id: str
    kartleggingstype: Kartleggingstype
    # person_id -> the current completed mapping (None while pending)
    personar: dict[str, dict | None] = field(default_factory=dict)
    privatbuande: bool = False
    utkast: dict[str, dict] = field(default_factory=dict)  # person_id -> draft, while pending
    versjon: dict[str, int] = field(default_factory=dict)  # person_id -> current version (1 = completed)

    @classmethod
    def opne(cls, sak_id: str, vedtak: VedtakFattet) -> tuple["Kartleggingssak", list]:
        kartleggingstype = (
            Kartleggingstype.forenkla if vedtak.sakstype == Sakstype.kollektivt_vern else Kartleggingstype.ordinaer
        )
        # Persons with protected identity are mapped in the protected store, never here.
        synlege = [p for p in vedtak.personar if not p.skjerma]
        ids = [p.person_id for p in synlege if skal_kartleggjast(p.fodselsar, vedtak.kategori, vedtak.vedtaksdato)]
        if not ids and synlege:  # a household with no adult: map the oldest, who speaks for it
            ids = [min(synlege, key=lambda p: p.fodselsar).person_id]
        sak = cls(sak_id, kartleggingstype, dict.fromkeys(ids), privatbuande=vedtak.privatbuande)
        if not ids:  # everyone is protected: nothing to map here (bosetting knows this too)
            return sak, []
        return sak, [KartleggingStartet(kartleggingstype=kartleggingstype, personar=ids)]

    @property
    def komplett(self) -> bool:
        return all(v is not None for v in self.personar.values())

    @property
    def skjema(self) -> str:
        """The schema this case's mappings use by default."""
        return SKJEMA[self.kartleggingstype]

    def _person(self, person_id: str) -> dict | None:
        if person_id not in self.personar:
            raise KeyError(person_id)
        return self.personar[person_id]

    def _sjekk(self, innhald: dict, pakravde: bool) -> None:
        if innhald.get("schema") not in TILLATNE_SKJEMA[self.kartleggingstype]:
            raise FeilSkjema(f"a {self.kartleggingstype.value} case takes {' or '.join(TILLATNE_SKJEMA[self.kartleggingstype])}")
        if pakravde and (mangel := manglande(innhald, PAKREVD[innhald["schema"]])):
            raise Manglar(mangel)

    def lagre_utkast(self, person_id: str, innhald: dict) -> None:
        """Save a draft; any number of times while the mapping is pending. No event."""
        if self._person(person_id) is not None:
            raise DomainError("this person's mapping is complete; corrections are a separate command")
        self._sjekk(innhald, pakravde=False)
        self.utkast[person_id] = innhald

    def fullfor(self, person_id: str, innhald: dict | None = None, *, pakravde: bool = True) -> list:
        """Complete one person's mapping: with the content given, or the saved draft.
        Completing again with the same content (or with none) is a no-op. `pakravde=False`
        is the original submit-and-complete, which completes with what it has."""
        earlier = self._person(person_id)
        if earlier is not None:
            if innhald is None or earlier == innhald:
                return []
            raise DomainError("this person's mapping is complete; corrections are a separate command")
        if innhald is None:
            if person_id not in self.utkast:
                raise DomainError("nothing to complete: no draft saved")
            innhald = self.utkast[person_id]
        self._sjekk(innhald, pakravde)
        self.personar[person_id] = innhald
        self.utkast.pop(person_id, None)
        self.versjon[person_id] = 1
        return [
            KartleggingFullfort(
                person_id=person_id,
                kartleggingstype=self.kartleggingstype,
                sak_komplett=self.komplett,
                **kompetanse(innhald),
            )
        ]

    def korriger(self, person_id: str, innhald: dict, grunn: str) -> list:
        """Correct a completed mapping: a new version with the whole content. The same
        content as the current version is a no-op."""
        earlier = self._person(person_id)
        if earlier is None:
            raise DomainError("only a completed mapping can be corrected")
        if earlier == innhald:
            return []
        self._sjekk(innhald, pakravde=True)
        self.personar[person_id] = innhald
        self.versjon[person_id] = self.versjon.get(person_id, 1) + 1
        return [
            KartleggingKorrigert(
                person_id=person_id,
                kartleggingstype=self.kartleggingstype,
                versjon=self.versjon[person_id],
                grunn=grunn,
                **kompetanse(innhald),
            )
        ]
