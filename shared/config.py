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
    # Development bearer token for the kompetanse API (replaced by Maskinporten JWTs later).
    kompetanse_token: str = "dev-token"
    # How often bosetting's allocator looks for fordelingsklar cases (seconds).
    allocation_interval: float = 0.5

    def database_url(self, service: str) -> str:
        return f"{self.pg_url.rstrip('/')}/{self.db_prefix}{service}"


@lru_cache
def settings() -> Settings:
    return Settings()
