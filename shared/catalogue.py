"""The event catalogue: every event on `chain.events`, typed and versioned.

Each event's `data` is a pydantic model registered here under its name (which is also the
AMQP routing key) and version. Consumers are tolerant readers (unknown fields are ignored),
so fields may be added within a version; any other change is a new version that is
published beside the old one until subscribers have moved.

Domain words, explained once:
- vedtak: UDI's decision on residence (opphald) or, for resettlement refugees, entry
  permit (innreiseløyve). It starts the waiting-time clock.
- kartlegging: competence mapping of a person before settlement (integreringslova § 6).
- fordelt: IMDi has allocated the household to a kommune (municipality).
- avslått: the kommune refused the allocation; the case is fordelingsklar again.
- avtale inngått (søkt ut): the kommune agreed, with a settlement date.
- bosatt: the household has moved in; settlement is done.
- mottak: asylum reception centre.
- REG-nummer: UDI's household reference; a household is allocated and settled together.

Personal data: the bus carries pseudonymous person ids (`p-...`), never a fødselsnummer
or a name. Details stay in the services.
"""

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.envelope import Envelope

PersonId = Annotated[
    str, StringConstraints(pattern=r"^p-[0-9a-f]{16,64}$"), Field(description="Pseudonymous person id")
]
Kommunenummer = Annotated[
    str, StringConstraints(pattern=r"^[0-9]{4}$"), Field(description="Statistics Norway's municipality number")
]
MottakId = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9-]{1,40}$"), Field(description="Reception centre (mottak) id")
]
RegNummer = Annotated[
    str, StringConstraints(pattern=r"^REG-[0-9A-Z]{4,20}$"), Field(description="UDI's household reference")
]


class Kategori(StrEnum):
    """Person category that sets the deadline target and the capacity group."""

    einsleg_mindrearig = "einsleg_mindrearig"  # unaccompanied minor, 3 months
    barnefamilie = "barnefamilie"  # family with children under 18, 3 months
    vaksen = "vaksen"  # other adults, 6 months


class Sakstype(StrEnum):
    asyl = "asyl"
    overforing = "overforing"  # resettlement (quota) refugee; clock starts at entry permit
    kollektivt_vern = "kollektivt_vern"  # temporary collective protection (Ukraine)
    familiesameining = "familiesameining"


SaerlegeBehov = Literal["saerpleie", "tilrettelagt_avdeling", "tilrettelagt_bustad", "oppfolging_helse"]


class Kartleggingstype(StrEnum):
    ordinaer = "ordinaer"
    forenkla = "forenkla"  # simplified mapping, for collective protection


class EventData(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


@dataclass(frozen=True)
class EventType:
    name: str
    version: int
    model: type[EventData]
    producer: str
    description: str

    @property
    def dataschema(self) -> str:
        return f"urn:chain:schema:{self.name}:v{self.version}"


CATALOGUE: dict[str, EventType] = {}


def event(name: str, version: int, producer: str):
    """Register a data model in the catalogue under its event name and version."""

    def register(model: type[EventData]) -> type[EventData]:
        et = EventType(name, version, model, producer, (model.__doc__ or "").strip())
        CATALOGUE[et.dataschema] = et
        model.event_type = et  # type: ignore[attr-defined]
        return model

    return register


def event_type_of(model: type[EventData] | EventData) -> EventType:
    return model.event_type  # type: ignore[attr-defined]


class UnknownEvent(ValueError):
    pass


def parse_data(envelope: Envelope) -> EventData:
    """The typed data of an envelope; raises UnknownEvent or ValidationError."""
    et = CATALOGUE.get(envelope.dataschema)
    if et is None or et.name != envelope.type:
        # Only names from the catalogue are repeated: the sender's own strings may carry
        # anything, personal data included, and the reason goes to DLQ headers and logs.
        known = {e.name for e in CATALOGUE.values()}
        if envelope.type in known:
            raise UnknownEvent(f"dataschema is not a version of {envelope.type}")
        raise UnknownEvent("event type not in the catalogue")
    return et.model.model_validate(envelope.data)


# --- UDI -------------------------------------------------------------------------------


class VedtakPerson(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    person_id: PersonId
    fodselsar: int = Field(ge=1900, le=2100, description="Year of birth")
    kjonn: Literal["K", "M", "X"]
    statsborgarskap: str | None = Field(
        default=None, pattern=r"^[A-Z]{3}$", description="Citizenship (ISO 3166 alpha-3), for fairness statistics"
    )
    skjerma: bool = Field(
        default=False,
        description="Protected identity (skjerma identitet): counted, but the person's details and id never leave bosetting",
    )


@event("vedtak.fattet", 1, producer="udi")
class VedtakFattet(EventData):
    """UDI has decided residence (or an entry permit) for a household: the clock starts."""

    reg_nummer: RegNummer
    kategori: Kategori
    sakstype: Sakstype
    vedtakstype: Literal["opphald", "innreiseloyve"]
    vedtaksdato: date
    mottak_id: str | None = Field(default=None, max_length=40, description="Reception centre, if any")
    privatbuande: bool = Field(default=False, description="Lives privately, outside reception")
    bustadkommune: Kommunenummer | None = Field(default=None, description="Where a privately living household lives")
    personar: list[VedtakPerson] = Field(min_length=1, max_length=30)


@event("vedtak.korrigert", 1, producer="udi")
class VedtakKorrigert(EventData):
    """UDI corrects a household after the decision: its category or members changed (an
    unaccompanied minor gets an accompanying adult, a wrong registration is fixed). Carries
    the whole corrected household; the case is re-evaluated."""

    reg_nummer: RegNummer
    kategori: Kategori
    personar: list[VedtakPerson] = Field(min_length=1, max_length=30)
    grunn: str = Field(min_length=1, max_length=500)


# --- mottak ----------------------------------------------------------------------------


@event("mottak.status_endret", 1, producer="mottak")
class MottakStatusEndret(EventData):
    """A reception centre reports that a resident's status changed."""

    mottak_id: str = Field(max_length=40)
    status: Literal["innkvartert", "flytta", "utflytta"]
    dato: date


@event("mottak.saerlege_behov_flagga", 1, producer="mottak")
class SaerlegeBehovFlagga(EventData):
    """The reception centre flags a resident's particular needs (a lay judgement, coarse
    categories only: never a diagnosis)."""

    mottak_id: MottakId
    person_id: PersonId
    behov: list[SaerlegeBehov] = Field(min_length=1, max_length=5)
    dato: date


@event("mottak.samtykke_gitt", 1, producer="mottak")
class SamtykkeGitt(EventData):
    """A resident consented, e.g. to share the mapping with the settlement kommune before
    allocation. Consent can be withdrawn (`gitt: false`)."""

    mottak_id: MottakId
    person_id: PersonId
    formal: Literal["deling_med_kommune", "karriererettleiing"]
    gitt: bool = True
    dato: date


# --- kartlegging -----------------------------------------------------------------------


@event("kartlegging.startet", 1, producer="kartlegging")
class KartleggingStartet(EventData):
    """A mapping case is open for the persons of a household who are to be mapped."""

    kartleggingstype: Kartleggingstype
    personar: list[PersonId]


class Utdanning(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    niva: Literal["ingen", "grunnskule", "vidaregaande", "fagskule", "bachelor", "master", "doktorgrad"]
    fagfelt: str | None = Field(default=None, max_length=100)
    ar: int = Field(ge=0, le=30, description="Years of schooling")
    dokumentert: bool = False


class Arbeidserfaring(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    yrke: str = Field(max_length=100)
    sektor: str = Field(max_length=100)
    ar: int = Field(ge=0, le=60)


Sprakniva = Literal["ingen", "A1", "A2", "B1", "B2", "C1", "C2", "morsmal"]
Heimel = Literal["integreringslova_6", "integreringslova_10"]
DigitaleFerdigheiter = Literal["ingen", "grunnleggjande", "gode", "avanserte"]
Forerkort = Literal["ingen", "B", "tyngre"]


class Sprak(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    sprak: str = Field(max_length=40)
    niva: Sprakniva


class Kompetanse(EventData):
    """A person's mapped competence as it travels on the bus: keyed by pseudonym, no
    health details beyond the coarse `saerlege_behov`, no free text about the person."""

    person_id: PersonId
    kartleggingstype: Kartleggingstype
    utdanning: Utdanning
    arbeid: list[Arbeidserfaring] = Field(default_factory=list, max_length=20)
    sprak: list[Sprak] = Field(default_factory=list, max_length=20)
    saerlege_behov: list[SaerlegeBehov] = Field(default_factory=list, max_length=5)
    nettverk_kommunar: list[Kommunenummer] = Field(
        default_factory=list, max_length=10, description="Kommunar where close relatives or a network live"
    )
    digitale_ferdigheiter: DigitaleFerdigheiter | None = Field(default=None, description="Digital skills, coarse")
    forerkort: Forerkort | None = Field(default=None, description="Driving licence: none, class B, or heavier")
    heimel: Heimel | None = Field(
        default=None, description="Legal basis: integreringslova § 6 (before settlement) or § 10 (after)"
    )
    fullstendigheit: float | None = Field(
        default=None, ge=0, le=1, description="Share of the schema's critical fields answered (None: not computed)"
    )
    manglande_felt: list[str] = Field(default_factory=list, max_length=30, description="Critical fields not answered")


@event("kartlegging.fullfort", 1, producer="kartlegging")
class KartleggingFullfort(Kompetanse):
    """One person's competence mapping is complete (competence only, keyed by pseudonym)."""

    sak_komplett: bool = Field(description="True when every person to be mapped in the case is mapped")


@event("kartlegging.korrigert", 1, producer="kartlegging")
class KartleggingKorrigert(Kompetanse):
    """A completed mapping was corrected: a new version with the whole corrected
    competence content (earlier versions stay in kartlegging's history)."""

    versjon: int = Field(ge=2, description="The new version; the completed mapping is version 1")
    grunn: str = Field(min_length=1, max_length=500)


@event("kartlegging.karriererettleiing", 1, producer="kartlegging")
class Karriererettleiing(EventData):
    """The county's career-guidance note (integreringslova § 11) for a mapped person. The
    one event with free text about a person: internal to the chain (kompetanse serves it to
    the consumers whose policy includes it), never offered to partners as it is."""

    person_id: PersonId
    fylkesnummer: str = Field(pattern=r"^[0-9]{2}$", description="The county that gave the guidance")
    dato: date
    notat: str = Field(min_length=1, max_length=4000)


# --- bosetting -------------------------------------------------------------------------


@event("bosetting.fordelt", 1, producer="bosetting")
class Fordelt(EventData):
    """IMDi has allocated the household to a kommune, which must now accept or refuse."""

    reg_nummer: RegNummer
    kommunenummer: Kommunenummer
    kategori: Kategori
    personar: list[PersonId] = Field(description="Pseudonymous ids; persons with protected identity are left out")
    tal_personar: int = Field(default=0, ge=0, description="All persons of the household, protected ones included")


@event("bosetting.avslatt", 1, producer="bosetting")
class Avslatt(EventData):
    """The kommune refused the allocation; the case is fordelingsklar again."""

    kommunenummer: Kommunenummer
    grunn: str = Field(max_length=500)


@event("bosetting.avtale_inngatt", 1, producer="bosetting")
class AvtaleInngatt(EventData):
    """The kommune agreed to settle the household on the agreed date (status søkt ut)."""

    kommunenummer: Kommunenummer
    busetjingsdato: date


@event("bosetting.bosatt", 1, producer="bosetting")
class Bosatt(EventData):
    """The household has moved in. Triggers the integration grant."""

    kommunenummer: Kommunenummer
    busetjingsdato: date
    kategori: Kategori
    personar: list[PersonId] = Field(description="Pseudonymous ids; persons with protected identity are left out")
    vedtaksdato: date
    tal_personar: int = Field(default=0, ge=0, description="All persons of the household, protected ones included")


@event("bosetting.fordeling_oppheva", 1, producer="bosetting")
class FordelingOppheva(EventData):
    """An allocation the kommune had not answered yet is cancelled (the household was
    corrected); the case is fordelingsklar again and the kommune may be proposed again."""

    kommunenummer: Kommunenummer
    grunn: str = Field(max_length=500)


@event("bosetting.trukke", 1, producer="bosetting")
class Trukke(EventData):
    """The case is withdrawn from settlement (left the country, settled on their own,
    decision revoked). Final."""

    arsak: Literal["utreist", "busett_sjolv", "vedtak_oppheva", "anna"]
    kommunenummer: Kommunenummer | None = Field(default=None, description="Kommune whose allocation is released")


@event("bosetting.frist_naermar", 1, producer="bosetting")
class FristNaermar(EventData):
    """The case's settlement deadline target is near (3 months for unaccompanied minors and
    families from mottak, 6 months otherwise). Emitted at most once per case."""

    frist: date
    kategori: Kategori
    status: str


@event("bosetting.frist_overskriden", 1, producer="bosetting")
class FristOverskriden(EventData):
    """The case passed its settlement deadline target without being settled. Emitted at
    most once per case."""

    frist: date
    kategori: Kategori
    status: str


# --- kommunar ----------------------------------------------------------------------------


@event("kommune.kapasitet_rapportert", 1, producer="kommune")
class KapasitetRapportert(EventData):
    """A kommune reports its capacity: free housing units, whether it can take new
    allocations, and optionally its decided places (vedtaksplassar) per group for the year.
    Subject: `kommune-<kommunenummer>`."""

    kommunenummer: Kommunenummer
    dato: date
    ledige_bustader: int | None = Field(default=None, ge=0, le=100_000, description="Free housing units")
    tek_imot: bool | None = Field(default=None, description="False: cannot take new allocations now")
    ar: int | None = Field(default=None, ge=2000, le=2100, description="Year of the decided places")
    vedtaksplassar: dict[Kategori, Annotated[int, Field(ge=0, le=100_000)]] | None = Field(default=None, description="Decided places per group, in persons")


# --- kompetanse ------------------------------------------------------------------------


@event("kompetanse.endra", 1, producer="kompetanse")
class KompetanseEndra(EventData):
    """Notification to one authorised consumer (notify, then pull): the competence data it
    may see for this person changed, or the person became visible to it. Only the
    pseudonymous id and the names of the changed fields; the consumer fetches the data
    through the kompetanse API, which audits the read. Subject: the person id. Routed by
    the AMQP headers `policy`, `kommunenummer` and `fylkesnummer` to per-consumer queues."""

    person_id: PersonId
    policy: str = Field(pattern=r"^[a-z_]{1,30}$", description="The consumer policy this notification is for")
    endra: list[str] = Field(min_length=1, max_length=30, description="Fields that changed (names only)")
