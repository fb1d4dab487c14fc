"""Outbox relay process for one service: `python -m shared.relay <service>`.

Restarts its loop after a lost database or broker connection; SIGTERM stops it cleanly.
Its metrics (events published and failed per type, whether it is the active relay) are
served on CHAIN_RELAY_METRICS_PORT, if set; the outbox backlog is its service's to report
(shared/metrics.py: `observe_outbox`).
"""

import asyncio
import signal
import sys

from shared.config import settings
from shared.db import open_database
from shared import tracing
from shared.log import configure, get_logger
from shared.metrics import serve_relay_metrics
from shared.outbox import Relay

log = get_logger()


async def main(service: str) -> None:
    cfg = settings()
    configure(f"{service}-relay", cfg.log_level)
    tracing.configure(f"{service}-relay")
    serve_relay_metrics(cfg.relay_metrics_port, cfg.http_host)
    url = cfg.database_url(service)
    pool = await open_database(url, ["shared", f"services.{service}"], 2)  # migrated before we read the outbox
    await pool.close()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    relay = Relay(url, cfg.amqp_url, cfg.eventlog_max_age, service=service)
    while not stop.is_set():
        try:
            await relay.run(stop)
        except Exception as exc:  # a restarting PostgreSQL or RabbitMQ: wait and go on
            log.warning("relay_restarting", error=type(exc).__name__)
            await asyncio.sleep(1.0)
    log.info("relay_stopped", published=relay.published)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
