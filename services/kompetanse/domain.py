"""Kompetanse's decisions, with no I/O: the per-person competence profile (a read model
built from mapping and settlement events) and which of its fields a request may see."""

from dataclasses import dataclass, field

from shared.catalogue import Kompetanse

# Fields a consumer may be served. Per-consumer policies (NAV, kommune, fylke) replace
# this single development policy when Maskinporten access is added.
FELT = ("kartleggingstype", "utdanning", "arbeid", "sprak", "kommunenummer", "bosatt")


@dataclass
class Profil:
    person_id: str
    kartleggingstype: str | None = None
    utdanning: dict | None = None
    arbeid: list = field(default_factory=list)
    sprak: list = field(default_factory=list)
    kommunenummer: str | None = None
    bosatt: bool = False

    def kartlagt(self, data: Kompetanse) -> None:
        self.kartleggingstype = data.kartleggingstype.value
        self.utdanning = data.utdanning.model_dump(mode="json")
        self.arbeid = [a.model_dump(mode="json") for a in data.arbeid]
        self.sprak = [s.model_dump(mode="json") for s in data.sprak]

    def fordelt(self, kommunenummer: str) -> None:
        if not self.bosatt:  # a late allocation event never undoes a settlement
            self.kommunenummer = kommunenummer

    def busett(self, kommunenummer: str) -> None:
        self.kommunenummer = kommunenummer
        self.bosatt = True

    @property
    def har_kompetanse(self) -> bool:
        return self.utdanning is not None

    def vis(self, felt: tuple[str, ...] = FELT) -> dict:
        return {"person_id": self.person_id} | {f: getattr(self, f) for f in felt}
