"""The versioned submission schemas for a mapping (kartlegging), as mottak systems, the
vertskommune or the settlement kommune (and a privately living person) send them.

Two schemas, told apart by `schema`:
- `urn:chain:kartlegging:ordinaer:v1`: the ordinary mapping (more questions);
- `urn:chain:kartlegging:forenkla:v1`: the simplified mapping for collective protection.

Both have the same shape and every answer is optional here, so a draft (utkast) can be
saved at any stage; which answers a schema requires before the mapping can be completed,
and which count towards its completeness, is the domain's rule (`domain.PAKREVD`,
`domain.KRITISKE`). A field left out (or null) is unanswered; an empty list is the answer
"none". Health is coarse categories, a lay judgement, never a diagnosis; only the coarse
`saerlege_behov` derived from it leaves kartlegging.
"""

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.catalogue import (
    Arbeidserfaring,
    DigitaleFerdigheiter,
    Forerkort,
    Heimel,
    Kommunenummer,
    SaerlegeBehov,
    Sprak,
    Sprakniva,
    Utdanning,
)

ORDINAER_V1 = "urn:chain:kartlegging:ordinaer:v1"
FORENKLA_V1 = "urn:chain:kartlegging:forenkla:v1"

Kortsvar = Annotated[str, StringConstraints(min_length=1, max_length=100)]
# Coarse categories only. psykisk_helse_oppfolging and nedsett_funksjonsevne stay in
# kartlegging; on the bus they are at most the coarse saerlege_behov.
Helseindikator = Literal[(*get_args(SaerlegeBehov), "psykisk_helse_oppfolging", "nedsett_funksjonsevne")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sprakkunnskap(Strict):
    """Languages and levels (CEFR, or morsmål): Norwegian and English always, others listed."""

    norsk: Sprakniva
    engelsk: Sprakniva
    andre: list[Sprak] = Field(default_factory=list, max_length=20)


class Helse(Strict):
    """Coarse health and adaptation indicators (a lay judgement, never a diagnosis)."""

    indikatorar: list[Helseindikator] = Field(default_factory=list, max_length=6, description="Empty: none known")


class Onske(Strict):
    """The person's own wishes for work and education."""

    arbeid: list[Kortsvar] = Field(default_factory=list, max_length=5)
    utdanning: list[Kortsvar] = Field(default_factory=list, max_length=5)


class Kartleggingsskjema(Strict):
    heimel: Heimel | None = Field(
        default=None, description="integreringslova_6 (vertskommune, before settlement) or _10 (settlement kommune, after)"
    )
    utdanning: Utdanning | None = None
    arbeid: list[Arbeidserfaring] | None = Field(default=None, max_length=20, description="Empty list: no work experience")
    sprak: Sprakkunnskap | None = None
    digitale_ferdigheiter: DigitaleFerdigheiter | None = None
    forerkort: Forerkort | None = None
    bil: bool | None = Field(default=None, description="Has a car at their disposal")
    helse: Helse | None = None
    nettverk_kommunar: list[Kommunenummer] | None = Field(
        default=None, max_length=10, description="Kommunar where close relatives or a network live; empty: none"
    )
    onske: Onske | None = None

    def innhald(self) -> dict:
        """The content as kartlegging stores and compares it: unanswered fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class OrdinaerV1(Kartleggingsskjema):
    """Ordinary mapping, version 1."""

    schema_: Literal["urn:chain:kartlegging:ordinaer:v1"] = Field(alias="schema")


class ForenklaV1(Kartleggingsskjema):
    """Simplified mapping (forenkla), version 1: for persons under collective protection."""

    schema_: Literal["urn:chain:kartlegging:forenkla:v1"] = Field(alias="schema")


Innsending = Annotated[OrdinaerV1 | ForenklaV1, Field(discriminator="schema_")]


class Korrigering(Strict):
    """A correction of a completed mapping: the whole corrected content and why."""

    innhald: Innsending
    grunn: str = Field(min_length=1, max_length=500)


class Karriererettleiing(Strict):
    """The county's career-guidance note (integreringslova § 11), submitted after the mapping."""

    fylkesnummer: str = Field(pattern=r"^[0-9]{2}$")
    dato: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
    notat: str = Field(min_length=1, max_length=4000)


class Eldre(Strict):
    """The original (unversioned) submit-and-complete body, still accepted: treated as the
    case's own schema, completed with what it has; the gaps show in its completeness."""

    utdanning: Utdanning
    arbeid: list[Arbeidserfaring] = Field(default_factory=list, max_length=20)
    sprak: list[Sprak] = Field(default_factory=list, max_length=20)
    saerlege_behov: list[SaerlegeBehov] = Field(default_factory=list, max_length=5)
    nettverk_kommunar: list[Kommunenummer] = Field(default_factory=list, max_length=10)

    def innhald(self, schema: str) -> dict:
        """In the versioned shape; only what was sent counts as answered."""
        sent = self.model_dump(mode="json", exclude_unset=True)
        out: dict = {"schema": schema, "utdanning": self.utdanning.model_dump(mode="json", exclude_none=True)}
        if "arbeid" in sent:
            out["arbeid"] = sent["arbeid"]
        if "nettverk_kommunar" in sent:
            out["nettverk_kommunar"] = sent["nettverk_kommunar"]
        if "saerlege_behov" in sent:
            out["helse"] = {"indikatorar": sent["saerlege_behov"]}
        if "sprak" in sent:
            # Norwegian and English go to their own keys; a missing one stays unanswered.
            levels = {s["sprak"].lower(): s["niva"] for s in sent["sprak"]}
            sprak = {k: levels[k] for k in ("norsk", "engelsk") if k in levels}
            sprak["andre"] = [s for s in sent["sprak"] if s["sprak"].lower() not in ("norsk", "engelsk")]
            out["sprak"] = sprak
        return out
