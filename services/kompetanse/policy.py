"""Consumer policies as data (policy.toml), and the access decision, with no I/O.

A read is allowed when, in this order: the token's consumer organisation is registered;
the token carries its policy's scope; the stated purpose is one of the policy's; and the
person is in the policy's selection (every person, those allocated to or settled in the
consumer's kommune, or in its county). The consumer then sees the policy's fields and
nothing more. Persons with protected identity are never served: the API answers them as
unknown, so not even their protection shows.
"""

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.maskinporten import Klient

# Fields a policy may grant (the profile's fields and the decrypted fødselsnummer).
FELT = (
    "fodselsnummer",
    "kategori",
    "kartleggingstype",
    "utdanning",
    "arbeid",
    "sprak",
    "saerlege_behov",
    "digitale_ferdigheiter",
    "forerkort",
    "karriererettleiing",
    "kommunenummer",
    "bosatt",
)
DEFAULT_FIL = Path(__file__).with_name("policy.toml")


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    namn: str = Field(pattern=r"^[a-z_]{1,30}$")
    beskriving: str
    scope: str = Field(min_length=3)
    heimel: str = Field(min_length=3, description="Legal basis")
    utval: Literal["alle", "kommune", "fylke"]
    felt: tuple[str, ...] = Field(min_length=1)
    formal: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _kjende_felt(self):
        ukjende = set(self.felt) - set(FELT)
        if ukjende:
            raise ValueError(f"policy {self.namn}: unknown fields {sorted(ukjende)}")
        return self


class Konsument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    org: str = Field(pattern=r"^0192:[0-9]{9}$")
    namn: str
    policy: str
    kommunenummer: str | None = Field(default=None, pattern=r"^[0-9]{4}$")
    fylkesnummer: str | None = Field(default=None, pattern=r"^[0-9]{2}$")

    @property
    def slug(self) -> str:
        """The name of its notification queue: `kompetanse.varsel.<org number>`."""
        return self.org.split(":", 1)[1]


class Avslag(Exception):
    """Refused, with a reason the consumer is shown (403)."""

    def __init__(self, grunn: str):
        super().__init__(grunn)
        self.grunn = grunn


@dataclass(frozen=True)
class Tilgang:
    """An authorised consumer: who it is and the policy it reads under."""

    klient: Klient
    konsument: Konsument
    policy: Policy

    def omrade(self) -> str | None:
        """The kommune or county the consumer's selection is limited to (None: every person)."""
        return {"alle": None, "kommune": self.konsument.kommunenummer, "fylke": self.konsument.fylkesnummer}[self.policy.utval]

    def sjekk_formal(self, formal: str) -> None:
        if formal not in self.policy.formal:
            raise Avslag(f"purpose '{formal[:40]}' is not permitted for this consumer; permitted: {', '.join(self.policy.formal)}")

    def sjekk_person(self, kommunenummer: str | None) -> None:
        """Is a person allocated to or settled in `kommunenummer` within this consumer's selection?"""
        if self.policy.utval == "kommune" and kommunenummer != self.konsument.kommunenummer:
            raise Avslag(f"the person is not allocated to or settled in kommune {self.konsument.kommunenummer}")
        if self.policy.utval == "fylke" and (kommunenummer or "")[:2] != self.konsument.fylkesnummer:
            raise Avslag(f"the person is not allocated to or settled in county {self.konsument.fylkesnummer}")


class Policyar(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: dict[str, Policy]
    statistikk_scope: str
    konsument: dict[str, Konsument]  # by org

    def tilgang(self, klient: Klient) -> Tilgang:
        """The consumer's access under its policy, or Avslag (unregistered org, missing scope)."""
        konsument = self.konsument.get(klient.org)
        if konsument is None:
            raise Avslag("the consumer organisation is not registered for individual competence data")
        policy = self.policy[konsument.policy]
        if policy.scope not in klient.scopes:
            raise Avslag(f"the token lacks scope {policy.scope}, required by this consumer's policy")
        return Tilgang(klient, konsument, policy)

    def har_mottakar(self, policy: str, kommunenummer: str | None) -> bool:
        """Is any registered consumer's feed bound to a notification for this policy and kommune?"""
        utval = self.policy[policy].utval
        return any(
            k.policy == policy
            and (utval == "alle" or utval == "kommune" and k.kommunenummer == kommunenummer
                 or utval == "fylke" and k.fylkesnummer == (kommunenummer or "")[:2])
            for k in self.konsument.values()
        )

    def sjekk_statistikk(self, klient: Klient) -> None:
        """Aggregates are open to every registered consumer with a kompetanse scope."""
        if klient.org not in self.konsument:
            raise Avslag("the consumer organisation is not registered for kompetanse data")
        if not klient.scopes & ({self.statistikk_scope} | {p.scope for p in self.policy.values()}):
            raise Avslag(f"the token lacks a kompetanse scope (e.g. {self.statistikk_scope})")


def last(path: Path | str | None = None) -> Policyar:
    """Read and validate a policy file; a mistake in it stops the service at start."""
    raw = tomllib.loads(Path(path or DEFAULT_FIL).read_text())
    policyar = {namn: Policy(namn=namn, **p) for namn, p in raw.get("policy", {}).items()}
    konsumentar = [Konsument(**k) for k in raw.get("konsument", [])]
    for k in konsumentar:
        p = policyar.get(k.policy)
        if p is None:
            raise ValueError(f"consumer {k.org}: unknown policy {k.policy}")
        if p.utval == "kommune" and not k.kommunenummer or p.utval == "fylke" and not k.fylkesnummer:
            raise ValueError(f"consumer {k.org}: policy {k.policy} needs its {p.utval}")
    if len({k.org for k in konsumentar}) != len(konsumentar):
        raise ValueError("a consumer organisation is listed twice")
    return Policyar(
        policy=policyar,
        statistikk_scope=raw["statistikk"]["scope"],
        konsument={k.org: k for k in konsumentar},
    )
