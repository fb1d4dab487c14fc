"""Bosetting's decisions, with no I/O: the case (sak) state machine and allocation.

A sak is one household (one REG-nummer): it is allocated, agreed and settled together.

    under_kartlegging -> fordelingsklar -> fordelt -> sokt_ut (avtale inngått) -> bosatt
                              ^                |
                              +--- avslått ----+   (the refusing kommune is not proposed again)

Methods change the sak and return the events they cause; the handler stores both in one
transaction.
"""

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from uuid import UUID

from shared.catalogue import AvtaleInngatt, Avslatt, Bosatt, EventData, Fordelt, Kategori


class Status(StrEnum):
    under_kartlegging = "under_kartlegging"
    fordelingsklar = "fordelingsklar"  # ready for allocation
    fordelt = "fordelt"  # allocated, waiting for the kommune's answer
    sokt_ut = "sokt_ut"  # agreement reached (avtale inngått), settlement date agreed
    bosatt = "bosatt"  # settled: final


FINAL = {Status.bosatt}


class DomainError(Exception):
    """A command that breaks a rule; never retried."""


class UgyldigOvergang(DomainError):
    """Invalid transition for the sak's current status."""


@dataclass
class Person:
    person_id: str
    fodselsar: int
    kjonn: str


@dataclass
class Sak:
    sak_id: str
    reg_nummer: str
    kategori: Kategori
    sakstype: str
    vedtaksdato: date
    personar: list[Person]
    status: Status = Status.under_kartlegging
    kommunenummer: str | None = None
    busetjingsdato: date | None = None
    avslatt_av: list[str] = field(default_factory=list)
    mottak_id: str | None = None
    bustadkommune: str | None = None
    correlationid: UUID | None = None

    @property
    def tal_personar(self) -> int:
        return len(self.personar)

    def kartlegging_fullfort(self, sak_komplett: bool) -> list[EventData]:
        # Later mappings of an already allocated case change nothing here.
        if sak_komplett and self.status == Status.under_kartlegging:
            self.status = Status.fordelingsklar
        return []

    def mottak_status(self, mottak_id: str, status: str) -> list[EventData]:
        self.mottak_id = None if status == "utflytta" else mottak_id
        return []

    def fordel(self, kommunenummer: str) -> list[EventData]:
        self._krev(Status.fordelingsklar, "fordel")
        if kommunenummer in self.avslatt_av:
            raise DomainError("kommune has refused this sak before")
        self.status = Status.fordelt
        self.kommunenummer = kommunenummer
        return [
            Fordelt(
                reg_nummer=self.reg_nummer,
                kommunenummer=kommunenummer,
                kategori=self.kategori,
                personar=[p.person_id for p in self.personar],
            )
        ]

    def avtal(self, kommunenummer: str, busetjingsdato: date) -> list[EventData]:
        """The kommune accepts: agreement with a settlement date. Repeating it is a no-op,
        also after the household has moved in (a client retrying a lost answer)."""
        repeated = self.kommunenummer == kommunenummer and self.busetjingsdato == busetjingsdato
        if repeated and self.status in (Status.sokt_ut, Status.bosatt):
            return []
        self._krev(Status.fordelt, "avtal")
        self._krev_kommune(kommunenummer)
        self.status = Status.sokt_ut
        self.busetjingsdato = busetjingsdato
        return [AvtaleInngatt(kommunenummer=kommunenummer, busetjingsdato=busetjingsdato)]

    def avsla(self, kommunenummer: str, grunn: str) -> list[EventData]:
        """The kommune refuses: back to fordelingsklar, never proposed to it again.
        Repeating it is a no-op, even after the sak has been allocated elsewhere."""
        if kommunenummer in self.avslatt_av:
            return []
        self._krev(Status.fordelt, "avsla")
        self._krev_kommune(kommunenummer)
        self.status = Status.fordelingsklar
        self.kommunenummer = None
        self.avslatt_av.append(kommunenummer)
        return [Avslatt(kommunenummer=kommunenummer, grunn=grunn)]

    def bosett(self, busetjingsdato: date) -> list[EventData]:
        if self.status == Status.bosatt:
            return []
        self._krev(Status.sokt_ut, "bosett")
        self.status = Status.bosatt
        self.busetjingsdato = busetjingsdato
        return [
            Bosatt(
                kommunenummer=self.kommunenummer,
                busetjingsdato=busetjingsdato,
                kategori=self.kategori,
                personar=[p.person_id for p in self.personar],
                vedtaksdato=self.vedtaksdato,
            )
        ]

    def _krev(self, status: Status, kommando: str) -> None:
        if self.status != status:
            raise UgyldigOvergang(f"cannot {kommando} a sak in status {self.status}")

    def _krev_kommune(self, kommunenummer: str) -> None:
        if self.kommunenummer != kommunenummer:
            raise UgyldigOvergang("sak is not allocated to this kommune")


@dataclass
class Kapasitet:
    """A kommune's decided places (vedtaksplassar) and places in use, per group, in persons."""

    kommunenummer: str
    kategori: Kategori
    plassar: int
    brukt: int = 0

    @property
    def ledige(self) -> int:
        return self.plassar - self.brukt


def velg_kommune(sak: Sak, kapasitet: list[Kapasitet]) -> Kapasitet | None:
    """The greedy rule (IMDi's late-in-year practice, kept as the optimiser's baseline).

    Among kommunar with a decision for the sak's group, enough free places for the whole
    household, and no earlier refusal of this sak: the one where a privately living
    household already lives, otherwise the one with the most free places.
    """
    kandidatar = [
        k
        for k in kapasitet
        if k.kategori == sak.kategori and k.ledige >= sak.tal_personar and k.kommunenummer not in sak.avslatt_av
    ]
    if not kandidatar:
        return None
    heime = [k for k in kandidatar if k.kommunenummer == sak.bustadkommune]
    if heime:
        return heime[0]
    return max(kandidatar, key=lambda k: (k.ledige, k.kommunenummer))


def fordel_saker(saker: list[Sak], kapasitet: list[Kapasitet]) -> list[tuple[Sak, list[EventData]]]:
    """Allocate fordelingsklar saker in order, reserving places as it goes."""
    resultat = []
    for sak in saker:
        val = velg_kommune(sak, kapasitet)
        if val is None:
            continue  # waits for capacity; tried again next round
        val.brukt += sak.tal_personar
        resultat.append((sak, sak.fordel(val.kommunenummer)))
    return resultat
