"""An isolated environment for a demo or test run: its own RabbitMQ vhost and database
names, so a run never touches another run's (or production's) queues and data."""

import asyncio
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from shared import maskinporten, tokens
from shared.config import Settings

SERVICES = ("kartlegging", "bosetting", "kompetanse")
RETRY_DELAYS_MS = [100, 500, 2000, 5000]  # faster than production's: a demo's gaps heal in seconds
RELAY_METRICS_OFFSET = 50  # relays' metrics ports, from base_port


@dataclass(frozen=True)
class Environment:
    name: str  # vhost and database prefix
    base_port: int = 8101
    # Another broker and PostgreSQL server than CHAIN_AMQP_URL / CHAIN_PG_URL name (the
    # chaos suite's throwaway ones, sim/sandbox.py), and the RabbitMQ node that rabbitmqctl
    # must address there; None: the machine's own.
    amqp_url: str | None = None
    pg_url: str | None = None
    rabbitmq_node: str | None = None

    def settings(self) -> Settings:
        base = Settings()
        if self.amqp_url or self.pg_url:
            base = base.model_copy(update={"amqp_url": self.amqp_url or base.amqp_url, "pg_url": self.pg_url or base.pg_url})
        # The environment's vhost replaces any in CHAIN_AMQP_URL (a shell set up for another
        # environment, or the service processes of this one, which inherit it).
        url = urlsplit(base.amqp_url)
        amqp = urlunsplit(url._replace(path="/" + quote(self.name, safe="")))
        return base.model_copy(update={"amqp_url": amqp, "db_prefix": f"{self.name}_", "retry_delays_ms": RETRY_DELAYS_MS})

    def env(self) -> dict[str, str]:
        cfg = self.settings()
        env = dict(os.environ)
        env.update(
            {
                "CHAIN_AMQP_URL": cfg.amqp_url,
                "CHAIN_DB_PREFIX": cfg.db_prefix,
                "CHAIN_PG_URL": cfg.pg_url,
                "CHAIN_RETRY_DELAYS_MS": json.dumps(RETRY_DELAYS_MS),
                # Weekly allocation batches and a daily deadline watch, compressed to seconds.
                "CHAIN_ALLOCATION_INTERVAL": "0.5",
                "CHAIN_FRIST_INTERVAL": "1.0",
            }
        )
        for i, service in enumerate(SERVICES):
            env[f"CHAIN_{service.upper()}_PORT"] = str(self.base_port + i)
        # The development Maskinporten key (made once, kept in var/): the kompetanse API trusts it.
        env["CHAIN_MASKINPORTEN_UTFERDARAR"] = json.dumps({maskinporten.DEV_UTFERDAR: str(self.jwks())})
        return env

    def jwks(self) -> Path:
        katalog = Path(self.settings().maskinporten_dev_katalog).resolve()
        maskinporten.lag_nokkel(katalog)  # no-op when the key exists
        return katalog / "jwks.json"

    def maskinporten_token(self, org: str, scope: str, klient_id: str = "chain-sim", **extra) -> str:
        """A development Maskinporten token for a kompetanse consumer (`org` as 0192:<orgnr>)."""
        self.jwks()
        cfg = self.settings()
        return maskinporten.lag_token(
            Path(cfg.maskinporten_dev_katalog), scope=scope, org=org, klient_id=klient_id, audience=cfg.kompetanse_audience, extra=extra or None
        )

    def token(self, subject: str) -> str:
        """A bearer token for a caseworker (`imdi:<id>`) or a kommune (`kommune:<knr>`)."""
        return tokens.issue(self.settings().token_secret, subject)

    def ports(self) -> list[int]:
        return [self.base_port + i for i in range(len(SERVICES))] + [self.relay_metrics_port(s) for s in SERVICES]

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.base_port + SERVICES.index(service)}"

    def relay_metrics_port(self, service: str) -> int:
        """Where a relay of this environment serves its metrics (CHAIN_RELAY_METRICS_PORT):
        clear of the service ports of the other environments (tests, fuzz, benchmarks)."""
        return self.base_port + RELAY_METRICS_OFFSET + SERVICES.index(service)

    def relay_metrics_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.relay_metrics_port(service)}/metrics"

    async def reset(self) -> None:
        """Drop this environment's databases and recreate its vhost, empty."""
        _reset_vhost(self.name, self.rabbitmq_node, user=self.settings().amqp_url.split("//", 1)[1].split(":", 1)[0])
        cfg = self.settings()
        conn = await asyncpg.connect(cfg.pg_url.rstrip("/") + "/postgres")
        try:
            names = await conn.fetch("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", cfg.db_prefix)
            for row in names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
        finally:
            await conn.close()

    def drop_vhost(self) -> None:
        """Delete this environment's vhost, its queues and stream with it: each holds some
        of the broker's file handles, and environments left behind add up (see
        scripts/ensure-services.sh). The databases stay, for a look afterwards."""
        _rabbitmqctl(self.rabbitmq_node, "delete_vhost", self.name)


def _rabbitmqctl(node: str | None, *args: str) -> subprocess.CompletedProcess:
    """rabbitmqctl against the machine's broker, or `node` (a throwaway one)."""
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    target = ["-n", node] if node else []
    return subprocess.run([ctl, "-q", *target, *args], capture_output=True, text=True, timeout=60)


def _reset_vhost(vhost: str, node: str | None = None, user: str | None = None) -> None:
    """Recreate the vhost, empty, on the machine's broker or on `node` (a throwaway one)."""
    user = user or Settings().amqp_url.split("//", 1)[1].split(":", 1)[0]
    for args in (["delete_vhost", vhost], ["add_vhost", vhost], ["set_permissions", "-p", vhost, user, ".*", ".*", ".*"]):
        result = _rabbitmqctl(node, *args)
        if result.returncode != 0 and args[0] != "delete_vhost":
            raise RuntimeError(f"rabbitmqctl {args[0]} failed: {result.stderr.strip()}")


async def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval)
    return False
