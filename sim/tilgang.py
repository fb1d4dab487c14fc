"""Access for reception-centre (mottak) systems: their own RabbitMQ user, confined to
publishing `mottak.*` events on the intake exchange `mottak.inn`, and a bearer token for
the HTTP intake.

`rabbitmqctl` runs on the broker's host (as the operator would); the user gets no
configure and no read permission, write only on `mottak.inn`, and topic permission only
for routing keys `mottak.*`, so a mottak system can neither declare queues, read anyone's
events, publish on the chain's own exchange nor send anything but its own kind of event.
"""

import secrets
import shutil
import subprocess
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


def legg_til_mottak(cfg: Settings, mottak_id: str) -> MottakTilgang:
    """Create (or rotate the password of) the mottak's broker user and issue its token."""
    http_token = tokens.issue(cfg.token_secret, f"mottak:{mottak_id}")  # validates the id too
    user, password = f"mottak-{mottak_id}", secrets.token_urlsafe(24)
    parts = urlsplit(cfg.amqp_url)
    vhost = parts.path[1:] or "/"
    if _ctl("add_user", user, password).returncode != 0:
        result = _ctl("change_password", user, password)
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl could not create or update {user}: {result.stderr.strip()[:200]}")
    exchange = MOTTAK_INN.replace(".", r"\.")
    for args in (
        ["set_permissions", "-p", vhost, user, "^$", f"^{exchange}$", "^$"],
        ["set_topic_permissions", "-p", vhost, user, MOTTAK_INN, r"^mottak\.", "^$"],
    ):
        result = _ctl(*args)
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {args[0]} failed: {result.stderr.strip()[:200]}")
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    url = urlunsplit(parts._replace(netloc=f"{quote(user)}:{quote(password)}@{host}"))
    return MottakTilgang(mottak_id, url, http_token)
