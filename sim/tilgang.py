"""Broker access for outside parties. Reception-centre (mottak) systems: their own
RabbitMQ user, confined to publishing `mottak.*` events on the intake exchange
`mottak.inn`, and a bearer token for the HTTP intake. Kompetanse consumers: their own
user, confined to reading their own notification queue.

`rabbitmqctl` runs on the broker's host (as the operator would); the user gets no
configure and no read permission, write only on `mottak.inn`, and topic permission only
for routing keys `mottak.*`, so a mottak system can neither declare queues, read anyone's
events, publish on the chain's own exchange nor send anything but its own kind of event.
"""

import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from shared import tokens
from shared.config import Settings
from shared.topology import MOTTAK_INN


@dataclass(frozen=True)
class MottakTilgang:
    mottak_id: str
    amqp_url: str  # with the mottak's own user and password
    http_token: str


def _ctl(*args: str) -> subprocess.CompletedProcess:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    return subprocess.run([ctl, "-q", *args], capture_output=True, text=True, timeout=60)


def _ctl_ok(*args: str, attempts: int = 3) -> None:
    """rabbitmqctl, retried: on a loaded machine its CLI node can time out talking to the broker."""
    for attempt in range(attempts):
        result = _ctl(*args)
        if result.returncode == 0:
            return
        time.sleep(1 + attempt)
    raise RuntimeError(f"rabbitmqctl {args[0]} failed: {result.stderr.strip()[:200]}")


def legg_til_mottak(cfg: Settings, mottak_id: str) -> MottakTilgang:
    """Create (or rotate the password of) the mottak's broker user and issue its token."""
    http_token = tokens.issue(cfg.token_secret, f"mottak:{mottak_id}")  # validates the id too
    exchange = MOTTAK_INN.replace(".", r"\.")
    url = _brukar(cfg, f"mottak-{mottak_id}", ("^$", f"^{exchange}$", "^$"), topic=(MOTTAK_INN, r"^mottak\.", "^$"))
    return MottakTilgang(mottak_id, url, http_token)


@dataclass(frozen=True)
class KonsumentTilgang:
    org: str
    amqp_url: str  # with the consumer's own user and password
    queue: str


def legg_til_konsument(cfg: Settings, org: str) -> KonsumentTilgang:
    """A registered kompetanse consumer's broker user: it may read its own notification
    queue (`kompetanse.varsel.<org number>`, bound by kompetanse to what it may know) and
    nothing else: no declaring, no publishing, no other queue."""
    if not re.fullmatch(r"0192:[0-9]{9}", org):
        raise ValueError("org must be 0192:<9-digit organisation number>")
    queue = f"kompetanse.varsel.{org.split(':')[1]}"
    url = _brukar(cfg, f"konsument-{org.split(':')[1]}", ("^$", "^$", "^" + queue.replace(".", r"\.") + "$"))
    return KonsumentTilgang(org, url, queue)


def _brukar(cfg: Settings, user: str, permissions: tuple[str, str, str], topic: tuple[str, str, str] | None = None) -> str:
    """Create the user (or rotate its password) with these configure/write/read permissions
    on the vhost, and topic permissions (exchange, write, read) if given; its AMQP URL."""
    password = secrets.token_urlsafe(24)
    parts = urlsplit(cfg.amqp_url)
    vhost = parts.path[1:] or "/"
    if _ctl("add_user", user, password).returncode != 0:  # it exists: a new password
        _ctl_ok("change_password", user, password)
    _ctl_ok("set_permissions", "-p", vhost, user, *permissions)
    if topic:
        _ctl_ok("set_topic_permissions", "-p", vhost, user, *topic)
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=f"{quote(user)}:{quote(password)}@{host}"))
