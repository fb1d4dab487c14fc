"""Bosetting's decisions, with no I/O: the case (sak) state machine and its deadline.

A sak is one household (one REG-nummer): it is allocated, agreed and settled together.

    under_kartlegging -> fordelingsklar -> fordelt -> sokt_ut (avtale inngått) -> bosatt
                              ^                |
                              +--- avslått ----+   (the refusing kommune is not proposed again)
                              +--- korrigert --+   (allocation cancelled, kommune may be proposed again)
    any status but bosatt -> trukke (withdrawn)

Methods change the sak and return the events they cause; the handler stores both in one
transaction. Places at a kommune follow `plass()`: a sak holds places of its group while
it is fordelt, søkt ut or bosatt, and the handler moves capacity by the difference.
Allocation itself (which kommune) is decided in `allokering.py`.
"""

import calendar
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from enum import StrEnum
from uuid import UUID

from services.bosetting.allokering import Hushald, Medlem
from shared.catalogue import (
    AvtaleInngatt,
    Avslatt,
    Bosatt,
    EventData,
    Fordelt,
    FordelingOppheva,
    FristNaermar,
    FristOverskriden,
    KartleggingFullfort,
    Kategori,
    Kompetanse,
    Sakstype,
    Trukke,
    VedtakFattet,
    VedtakKorrigert,
)


class Status(StrEnum):
    under_kartlegging = "under_kartlegging"
    fordelingsklar = "fordelingsklar"  # ready for allocation
    fordelt = "fordelt"  # allocated, waiting for the kommune's answer
    sokt_ut = "sokt_ut"  # agreement reached (avtale inngått), settlement date agreed
    bosatt = "bosatt"  # settled: final
    trukke = "trukke"  # withdrawn from settlement: final


FINAL = {Status.bosatt, Status.trukke}
HELD = {Status.fordelt, Status.sokt_ut, Status.bosatt}  # statuses that use places at a kommune


class DomainError(Exception):
    """A command that breaks a rule; never retried."""


class UgyldigOvergang(DomainError):
    """Invalid transition for the sak's current status."""


class IkkjeKommunensSak(UgyldigOvergang):
    """The sak is not allocated to the kommune that asks; to that kommune it does not exist."""


@dataclass
class Person:
    person_id: str
    fodselsar: int
    kjonn: str
    skjerma: bool = False  # protected identity: never leaves this service with details
    statsborgarskap: str | None = None
    # From the competence mapping (kartlegging.fullfort), used to match kommunar:
    utdanningsniva: str | None = None
    sektorar: list[str] = field(default_factory=list)
    saerlege_behov: list[str] = field(default_factory=list)
    nettverk: list[str] = field(default_factory=list)
    fullstendigheit: float | None = None  # share of the mapping's critical fields answered
    # Flagged by the mottak (mottak.saerlege_behov_flagga), kept apart from the mapping's
    # own answer so that a corrected mapping does not erase the mottak's flag.
    behov_flagga: list[str] = field(default_factory=list)

    @property
    def behov(self) -> list[str]:
        return sorted(set(self.saerlege_behov) | set(self.behov_flagga))


def personar_av(vedtak: VedtakFattet | VedtakKorrigert, tidlegare: list[Person] = ()) -> list[Person]:
    """Persons of a (corrected) vedtak, keeping what the mapping told us about known persons."""
    kjende = {p.person_id: p for p in tidlegare}
    result = []
    for p in vedtak.personar:
        base = kjende.get(p.person_id) or Person(p.person_id, p.fodselsar, p.kjonn)
        result.append(
            replace(base, fodselsar=p.fodselsar, kjonn=p.kjonn, skjerma=p.skjerma, statsborgarskap=p.statsborgarskap)
        )
    return result


def legg_til_manader(dato: date, manader: int) -> date:
    month = dato.month - 1 + manader
    year, month = dato.year + month // 12, month % 12 + 1
    return date(year, month, min(dato.day, calendar.monthrange(year, month)[1]))


def frist_for(kategori: Kategori, sakstype: str, privatbuande: bool, vedtaksdato: date) -> date:
    """The settlement deadline target: 3 months from the decision for unaccompanied minors
    and for families with children from mottak; 6 months for other adults and for
    resettlement refugees (whose vedtaksdato is the entry permit)."""
    tre_manader = kategori == Kategori.einsleg_mindrearig or (
        kategori == Kategori.barnefamilie and not privatbuande and sakstype != Sakstype.overforing
    )
    return legg_til_manader(vedtaksdato, 3 if tre_manader else 6)


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
    privatbuande: bool = False
    bustadkommune: str | None = None
    correlationid: UUID | None = None
    frist: date | None = None
    frist_naermar_sendt: bool = False
    frist_overskriden_sendt: bool = False
    # Kommunar whose pending allocation was cancelled (korrigert): they knew the sak, so
    # their late answers get "cancelled" (409), not "no such sak" (404).
    oppheva_hos: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.frist is None:
            self.frist = frist_for(self.kategori, self.sakstype, self.privatbuande, self.vedtaksdato)

    @classmethod
    def opne(cls, sak_id: str, vedtak: VedtakFattet, correlationid: UUID | None) -> "Sak":
        """A new sak is under kartlegging, unless every member has protected identity: they
        are mapped in the protected store, so the sak is ready for allocation at once."""
        alle_skjerma = all(p.skjerma for p in vedtak.personar)
        return cls(
            sak_id=sak_id,
            reg_nummer=vedtak.reg_nummer,
            kategori=vedtak.kategori,
            sakstype=vedtak.sakstype.value,
            vedtaksdato=vedtak.vedtaksdato,
            personar=personar_av(vedtak),
            mottak_id=vedtak.mottak_id,
            privatbuande=vedtak.privatbuande,
            bustadkommune=vedtak.bustadkommune,
            correlationid=correlationid,
            status=Status.fordelingsklar if alle_skjerma else Status.under_kartlegging,
        )

    @property
    def tal_personar(self) -> int:
        return len(self.personar)

    @property
    def synlege_personar(self) -> list[str]:
        """Person ids that may leave this service: protected identities are left out."""
        return [p.person_id for p in self.personar if not p.skjerma]

    def plass(self) -> tuple[str, Kategori, int] | None:
        """The places this sak uses at a kommune: (kommune, group, persons), or None."""
        if self.status in HELD and self.kommunenummer:
            return (self.kommunenummer, self.kategori, self.tal_personar)
        return None

    # --- events from other parties -----------------------------------------------------

    def kartlagt(self, data: Kompetanse) -> list[EventData]:
        """A person's mapping, completed or corrected (the newest version wins): what the
        allocation matches on, and how complete the mapping is."""
        for i, p in enumerate(self.personar):
            if p.person_id == data.person_id:
                self.personar[i] = replace(
                    p,
                    utdanningsniva=data.utdanning.niva,
                    sektorar=sorted({a.sektor for a in data.arbeid}),
                    saerlege_behov=list(data.saerlege_behov),
                    nettverk=list(data.nettverk_kommunar),
                    fullstendigheit=data.fullstendigheit,
                )
        return []

    def kartlegging_fullfort(self, data: KartleggingFullfort) -> list[EventData]:
        self.kartlagt(data)
        # Later mappings of an already allocated case change nothing in its status.
        if data.sak_komplett and self.status == Status.under_kartlegging:
            self.status = Status.fordelingsklar
        return []

    def saerlege_behov_flagga(self, person_id: str, behov: list[str]) -> list[EventData]:
        """The mottak flagged a resident's particular needs: the allocation weighs them."""
        for i, p in enumerate(self.personar):
            if p.person_id == person_id:
                self.personar[i] = replace(p, behov_flagga=sorted(set(p.behov_flagga) | set(behov)))
        return []

    def mottak_status(self, mottak_id: str, status: str) -> list[EventData]:
        self.mottak_id = None if status == "utflytta" else mottak_id
        return []

    def korriger(self, data: VedtakKorrigert) -> list[EventData]:
        """UDI corrected the household. A pending allocation is cancelled, so the kommune
        answers the household as it really is; an agreement stands, with its places moved
        to the corrected group and size. The deadline follows the corrected category."""
        if self.status == Status.trukke:
            return []
        self.reg_nummer = data.reg_nummer
        self.kategori = data.kategori
        self.personar = personar_av(data, self.personar)
        self.frist = frist_for(self.kategori, self.sakstype, self.privatbuande, self.vedtaksdato)
        if self.status != Status.fordelt:
            return []
        kommune, self.kommunenummer, self.status = self.kommunenummer, None, Status.fordelingsklar
        self.oppheva_hos.append(kommune)
        return [FordelingOppheva(kommunenummer=kommune, grunn="the household was corrected by UDI")]

    # --- commands ---------------------------------------------------------------------

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
                personar=self.synlege_personar,
                tal_personar=self.tal_personar,
            )
        ]

    def avtal(self, kommunenummer: str, busetjingsdato: date) -> list[EventData]:
        """The kommune accepts: agreement with a settlement date. Repeating it is a no-op,
        also after the household has moved in (a client retrying a lost answer)."""
        repeated = self.kommunenummer == kommunenummer and self.busetjingsdato == busetjingsdato
        if repeated and self.status in (Status.sokt_ut, Status.bosatt):
            return []
        self._krev_kommune(kommunenummer)  # first: another kommune learns nothing of the sak's status
        self._krev(Status.fordelt, "avtal")
        self.status = Status.sokt_ut
        self.busetjingsdato = busetjingsdato
        return [AvtaleInngatt(kommunenummer=kommunenummer, busetjingsdato=busetjingsdato)]

    def avsla(self, kommunenummer: str, grunn: str) -> list[EventData]:
        """The kommune refuses: back to fordelingsklar, never proposed to it again.
        Repeating it is a no-op, even after the sak has been allocated elsewhere."""
        if kommunenummer in self.avslatt_av:
            return []
        self._krev_kommune(kommunenummer)  # first: another kommune learns nothing of the sak's status
        self._krev(Status.fordelt, "avsla")
        self.status = Status.fordelingsklar
        self.kommunenummer = None
        self.avslatt_av.append(kommunenummer)
        return [Avslatt(kommunenummer=kommunenummer, grunn=grunn)]

    def bosett(self, kommunenummer: str, busetjingsdato: date) -> list[EventData]:
        """The kommune registers that the household has moved in. Repeating it is a no-op."""
        if self.status == Status.bosatt and self.kommunenummer == kommunenummer:
            return []
        self._krev_kommune(kommunenummer)  # first: another kommune learns nothing of the sak's status
        self._krev(Status.sokt_ut, "bosett")
        self.status = Status.bosatt
        self.busetjingsdato = busetjingsdato
        return [
            Bosatt(
                kommunenummer=self.kommunenummer,
                busetjingsdato=busetjingsdato,
                kategori=self.kategori,
                personar=self.synlege_personar,
                vedtaksdato=self.vedtaksdato,
                tal_personar=self.tal_personar,
            )
        ]

    def trekk(self, arsak: str) -> list[EventData]:
        """Withdraw the case from settlement; places it held are released."""
        if self.status == Status.trukke:
            return []
        if self.status == Status.bosatt:
            raise UgyldigOvergang("cannot withdraw a settled sak")
        kommune = self.kommunenummer if self.status in HELD else None
        self.status = Status.trukke
        return [Trukke(arsak=arsak, kommunenummer=kommune)]

    # --- deadline -----------------------------------------------------------------------

    def fristvarsel(self, idag: date, varsel_dagar: int) -> list[EventData]:
        """Deadline events due today, each at most once per case. A case first seen after
        its deadline gets only `frist_overskriden` (a 'nearing' notice would be noise)."""
        if self.status in FINAL or self.frist_overskriden_sendt:
            return []
        if idag > self.frist:
            self.frist_naermar_sendt = self.frist_overskriden_sendt = True
            return [FristOverskriden(frist=self.frist, kategori=self.kategori, status=self.status.value)]
        if not self.frist_naermar_sendt and idag >= self.frist - timedelta(days=varsel_dagar):
            self.frist_naermar_sendt = True
            return [FristNaermar(frist=self.frist, kategori=self.kategori, status=self.status.value)]
        return []

    # --- allocation input ---------------------------------------------------------------

    def hushald(self, idag: date) -> Hushald:
        """The household as the optimiser sees it: members' needs and competence, waiting
        time, deadline, refusals, where it lives and where its network is."""
        return Hushald(
            sak_id=self.sak_id,
            kategori=self.kategori,
            medlemmer=tuple(
                Medlem(
                    alder=max(0, idag.year - p.fodselsar),
                    kjonn=p.kjonn,
                    saerlege_behov=bool(p.behov),
                    utdanningsniva=p.utdanningsniva,
                    sektorar=frozenset(p.sektorar),
                )
                for p in self.personar
            ),
            ventedagar=(idag - self.vedtaksdato).days,
            dagar_til_frist=(self.frist - idag).days,
            avslatt_av=frozenset(self.avslatt_av),
            bustadkommune=self.bustadkommune if self.privatbuande else None,
            nettverk=frozenset(k for p in self.personar for k in p.nettverk),
        )

    def _krev(self, status: Status, kommando: str) -> None:
        if self.status != status:
            raise UgyldigOvergang(f"cannot {kommando} a sak in status {self.status}")

    def _krev_kommune(self, kommunenummer: str) -> None:
        if self.kommunenummer == kommunenummer:
            return
        if kommunenummer in self.oppheva_hos:
            raise UgyldigOvergang("the allocation to this kommune was cancelled")
        raise IkkjeKommunensSak("sak is not allocated to this kommune")
