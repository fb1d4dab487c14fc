"""Kartlegging's decisions, with no I/O: who is to be mapped, and when a case is complete.

A kartleggingssak (mapping case) opens when UDI's vedtak arrives. Adults are mapped, and
every unaccompanied minor; persons under collective protection get the simplified
(forenkla) mapping. The case is complete when every person to be mapped is mapped.
"""

from dataclasses import dataclass, field
from datetime import date

from shared.catalogue import (
    Kartleggingstype,
    KartleggingFullfort,
    KartleggingStartet,
    Kategori,
    Sakstype,
    VedtakFattet,
)

MYNDIG = 18


class DomainError(Exception):
    """A submission that breaks a rule."""


def skal_kartleggjast(fodselsar: int, kategori: Kategori, vedtaksdato: date) -> bool:
    return kategori == Kategori.einsleg_mindrearig or vedtaksdato.year - fodselsar >= MYNDIG


@dataclass
class Kartleggingssak:
    sak_id: str
    kartleggingstype: Kartleggingstype
    # person_id -> submitted mapping (None while pending)
    personar: dict[str, dict | None] = field(default_factory=dict)

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
        sak = cls(sak_id, kartleggingstype, dict.fromkeys(ids))
        if not ids:  # everyone is protected: nothing to map here (bosetting knows this too)
            return sak, []
        return sak, [KartleggingStartet(kartleggingstype=kartleggingstype, personar=ids)]

    @property
    def komplett(self) -> bool:
        return all(v is not None for v in self.personar.values())

    def fullfor(self, person_id: str, innhald: dict) -> list:
        """Record one person's completed mapping. Submitting the same content again is a no-op."""
        if person_id not in self.personar:
            raise KeyError(person_id)
        earlier = self.personar[person_id]
        if earlier is not None:
            if earlier == innhald:
                return []
            raise DomainError("this person's mapping is complete; corrections are a separate command")
        self.personar[person_id] = innhald
        return [
            KartleggingFullfort(
                person_id=person_id,
                kartleggingstype=self.kartleggingstype,
                sak_komplett=self.komplett,
                **innhald,
            )
        ]
