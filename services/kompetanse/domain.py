"""Kompetanse's decisions, with no I/O: the per-person competence profile (a read model
built from vedtak, mapping and settlement events), what a consumer is shown of it, and
which consumers' notification feeds a change goes to."""

from dataclasses import asdict, dataclass, field
from datetime import datetime

from services.kompetanse.policy import Policy
from shared.catalogue import Karriererettleiing, Kompetanse


@dataclass
class Profil:
    person_id: str
    sak_id: str | None = None
    kategori: str | None = None
    skjerma: bool = False  # protected identity: never served, never notified
    kartleggingstype: str | None = None
    utdanning: dict | None = None
    arbeid: list = field(default_factory=list)
    sprak: list = field(default_factory=list)
    saerlege_behov: list = field(default_factory=list)
    digitale_ferdigheiter: str | None = None
    forerkort: str | None = None
    karriererettleiing: dict | None = None
    kommunenummer: str | None = None
    bosatt: bool = False
    kartlagt_at: datetime | None = None

    def vedtak(self, sak_id: str, kategori: str, skjerma: bool) -> None:
        self.sak_id, self.kategori = sak_id, kategori
        self.skjerma = self.skjerma or skjerma  # protection, once known, is not lifted by an event

    def kartlagt(self, data: Kompetanse, tid: datetime) -> None:
        self.kartleggingstype = data.kartleggingstype.value
        self.utdanning = data.utdanning.model_dump(mode="json")
        self.arbeid = [a.model_dump(mode="json") for a in data.arbeid]
        self.sprak = [s.model_dump(mode="json") for s in data.sprak]
        self.saerlege_behov = sorted(set(self.saerlege_behov) | set(data.saerlege_behov))
        self.digitale_ferdigheiter = data.digitale_ferdigheiter
        self.forerkort = data.forerkort
        self.kartlagt_at = self.kartlagt_at or tid  # the month of the first completed mapping

    def behov_flagga(self, behov: list[str]) -> None:
        self.saerlege_behov = sorted(set(self.saerlege_behov) | set(behov))

    def rettleiing(self, data: Karriererettleiing) -> None:
        self.karriererettleiing = {"fylkesnummer": data.fylkesnummer, "dato": data.dato.isoformat(), "notat": data.notat}

    def fordelt(self, sak_id: str, kategori: str, kommunenummer: str) -> None:
        if not self.bosatt:  # a late allocation event never undoes a settlement
            self.sak_id, self.kategori, self.kommunenummer = sak_id, kategori, kommunenummer

    def fordeling_slutt(self) -> None:
        """Refused, cancelled or withdrawn: the kommune no longer has the person."""
        if not self.bosatt:
            self.kommunenummer = None

    def busett(self, kommunenummer: str) -> None:
        self.kommunenummer = kommunenummer
        self.bosatt = True

    @property
    def har_kompetanse(self) -> bool:
        return self.utdanning is not None

    def verdiar(self) -> dict:
        """The fields a policy can grant (fødselsnummer aside: that lives encrypted elsewhere)."""
        d = asdict(self)
        return {k: d[k] for k in d if k not in ("person_id", "sak_id", "skjerma", "kartlagt_at")}

    def vis(self, felt: tuple[str, ...], fodselsnummer: str | None = None) -> dict:
        verdiar = self.verdiar() | {"fodselsnummer": fodselsnummer}
        return {"person_id": self.person_id} | {f: verdiar[f] for f in felt}


def tom(v) -> bool:
    """No value: nothing to serve or to notify about."""
    return v is None or v == [] or v is False


@dataclass(frozen=True)
class Varsel:
    policy: str
    endra: list[str]
    headers: dict[str, str]


def varsel(policyar: list[Policy], for_: dict, etter: dict, skjerma: bool) -> list[Varsel]:
    """The notifications a profile change causes, one per policy that can see a change:
    only the names of the changed fields it may see. A person who newly enters a kommune's
    or county's selection is new to that consumer: it hears of every field it may see."""
    if skjerma:
        return []
    endra = {k for k in etter if etter[k] != for_.get(k)}
    kommune = etter.get("kommunenummer")
    ut = []
    for p in policyar:
        synlege = [f for f in p.felt if f in endra]
        if p.utval != "alle":
            if kommune is None:
                continue  # not in any kommune's or county's selection
            omrade = {"kommune": lambda k: k, "fylke": lambda k: k[:2]}[p.utval]
            if for_.get("kommunenummer") is None or omrade(for_["kommunenummer"]) != omrade(kommune):
                synlege = [f for f in p.felt if f in etter and not tom(etter[f])]
        if synlege:
            headers = {"policy": p.namn, "kommunenummer": kommune or "", "fylkesnummer": (kommune or "")[:2]}
            ut.append(Varsel(p.namn, synlege, headers))
    return ut
