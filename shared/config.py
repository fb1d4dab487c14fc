"""Configuration from environment variables (prefix CHAIN_), with defaults for a local machine."""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHAIN_", extra="ignore")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # Server address without a database: each service gets its own database on it.
    pg_url: str = "postgresql://postgres@127.0.0.1:5432"
    # Prefix for database names, so a demo or a test run never touches production data.
    db_prefix: str = ""
    prefetch: int = 200
    # A river applies the deliveries that arrive together in one transaction (group
    # commit): at most this many, waiting at most river_batch_wait_ms for more once one is
    # there (shared/river.py). The prefetch window must be larger, or the next batch
    # cannot gather while one is being applied.
    river_batch_size: int = 100
    river_batch_wait_ms: float = 2.0
    pg_pool_size: int = 10
    # Delayed-retry tiers in milliseconds; attempt n waits retry_delays_ms[min(n, last)].
    retry_delays_ms: list[int] = Field(default_factory=lambda: [200, 1000, 5000, 30000])
    # After this many failed attempts a message is dead-lettered with its reason.
    max_attempts: int = 8
    # Event-log stream retention (x-max-age); fixed at first declaration.
    eventlog_max_age: str = "365D"
    log_level: str = "INFO"
    # HTTP bind address (0.0.0.0 in containers); each service's port is CHAIN_<SERVICE>_PORT.
    http_host: str = "127.0.0.1"
    # A relay's Prometheus metrics port (`GET /metrics`, on http_host); 0: not served. A
    # service serves its metrics on its own HTTP port. Off by default, as the three relays
    # of a developer machine would need three ports; the Kubernetes manifests set 9101.
    relay_metrics_port: int = 0
    # Kompetanse API access: Maskinporten-style JWTs (shared/maskinporten.py). Trusted
    # issuers and where their public keys are (a JWKS URL, or a file for development):
    # {"https://maskinporten.no/": "https://maskinporten.no/jwk"}. Empty: every token is refused.
    maskinporten_utferdarar: dict[str, str] = Field(default_factory=dict)
    # Where `chain maskinporten nokkel` keeps a development signing key (private.pem,
    # jwks.json); the demo and the tests trust it as the issuer DEV_UTFERDAR.
    maskinporten_dev_katalog: str = "var/maskinporten"
    # The `aud` a token must carry for the kompetanse API.
    kompetanse_audience: str = "https://kompetanse.chain.local"
    # Who may see what: consumers and their policies (unset: the file shipped with kompetanse).
    kompetanse_policy: str | None = None
    # Fødselsnummer are encrypted at rest and looked up by a keyed hash; both keys derive
    # from this one (base64, 32 bytes). The default is for development only.
    kompetanse_fnr_key: str = "ZGV2LWtleS1kby1ub3QtdXNlLWluLXByb2R1Y3Rpb24="
    # Signs the HTTP access tokens of caseworkers and kommunar (shared/tokens.py). The
    # default is for development only; production sets a long random secret.
    token_secret: str = "dev-secret-change-me"
    # How often bosetting's allocator runs a batch over fordelingsklar cases (seconds);
    # IMDi works in weekly batches, the demo in seconds.
    allocation_interval: float = 0.5
    # Most fordelingsklar households in one batch (the 31.12.2023 backlog was about 7,000 persons).
    allocation_batch: int = 5000
    # "milp": the optimiser (SciPy HiGHS); "gradig": the greedy baseline.
    allocator: str = Field(default="milp", pattern="^(milp|gradig)$")
    # How often the deadline watch looks for cases near or past their deadline (seconds),
    # and how many days before the deadline `bosetting.frist_naermar` is emitted.
    frist_interval: float = 60.0
    frist_varsel_dagar: int = 30
    # Kommune reference data from Statistics Norway's exports (KLASS 131 and StatBank 07459
    # CSV); unset: the 2023 files shipped with bosetting.
    kommune_klass_csv: str | None = None
    kommune_folketal_csv: str | None = None

    # A simulated business clock (shared/klokke.py), for compressed demo runs; unset: real time.
    klokke: str | None = None

    def database_url(self, service: str) -> str:
        return f"{self.pg_url.rstrip('/')}/{self.db_prefix}{service}"


@lru_cache
def settings() -> Settings:
    return Settings()
