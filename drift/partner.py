"""Partner onboarding as code: `chain partner add NAME --events TYPE...`.

A partner (an agency or system outside the chain that subscribes to its events) gets:
- a RabbitMQ user `partner-NAME` with a generated password and least privilege: no
  configure and no write permission anywhere, read only on its own queue (it can consume
  and acknowledge there, and do nothing else: no declaring, no publishing, no other queue);
- its own durable quorum queue `partner.NAME`, bound to `chain.events` only for the event
  types it is entitled to (routing key = event type), bounded in length (drop-head) so a
  partner that stops reading never blocks the chain.

What a partner may receive at all is data, in `drift/partner.toml`: every event of the
catalogue is offered or withheld there, with the reason. A partner's queue gets each event
exactly as published, so an event is offered only when all of its data may leave the
chain; `schema_problems` checks each offered event's schema (every version) for free text,
values that could be a fødselsnummer and forbidden fields, and a test runs it.

`add` declares the wanted state and is idempotent: run again with the same events it
changes nothing (the password is kept: `--rotate-password` issues a new one); with other
events it binds the new and unbinds the ones no longer entitled. Every `add` and `remove`
is recorded in the operations journal (drift/journal.py), without the password.
`rabbitmqctl` runs on the broker's host, as for `chain mottak-add` (sim/tilgang.py).
"""

import asyncio
import json
import os
import re
import secrets
import tomllib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import aio_pika
import typer
from aio_pika.exceptions import ChannelClosed, ChannelNotFoundEntity, ChannelPreconditionFailed

from drift import journal
from shared.catalogue import CATALOGUE, EventType
from shared.config import Settings, settings
from shared.topology import EVENTS
from sim.tilgang import _ctl, _ctl_ok

RULES = Path(__file__).with_name("partner.toml")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
PERSONAL_DATA = ("none", "case", "pseudonymous")
FNR = "01019912345"  # a fødselsnummer-shaped value no string field of an offered event may accept
PERSON_ID = "p-0123456789abcdef"


class Refused(ValueError):
    """The command is refused (unknown or withheld event, bad name): nothing was changed."""


# --- entitlements ------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    event: str
    personal_data: str
    why: str
    codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entitlements:
    offered: dict[str, Offer]
    withheld: dict[str, str]
    forbidden_fields: frozenset[str]
    max_length: int

    def refusal(self, event: str) -> str | None:
        """Why a partner may not have this event type; None when it may."""
        if event in self.offered:
            return None
        if event in self.withheld:
            return f"{event} is not for partners: {self.withheld[event]}"
        if event in {et.name for et in CATALOGUE.values()}:
            return f"{event} is not classified for partners in {RULES.name} (offer or withhold it there first)"
        return f"{event} is not an event type in the catalogue (offered to partners: {', '.join(sorted(self.offered))})"


def load(path: Path = RULES) -> Entitlements:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    offered = {
        name: Offer(name, o["personal_data"], o["why"], tuple(o.get("codes", ())))
        for name, o in raw.get("offered", {}).items()
    }
    for o in offered.values():
        if o.personal_data not in PERSONAL_DATA:
            raise ValueError(f"{path.name}: {o.event}: personal_data must be one of {PERSONAL_DATA}")
    both = offered.keys() & raw.get("withheld", {}).keys()
    if both:
        raise ValueError(f"{path.name}: both offered and withheld: {sorted(both)}")
    return Entitlements(offered, dict(raw.get("withheld", {})), frozenset(raw.get("forbidden_fields", ())), int(raw["queue"]["max_length"]))


@lru_cache
def entitlements() -> Entitlements:
    return load()


def schema_problems(et: EventType, ent: Entitlements) -> list[str]:
    """Why this event version's data may not go to partners as published: a forbidden
    field, a string field that takes free text (no enum, const, pattern or format, and not
    declared a code) or a fødselsnummer, or person ids when its class says there are none."""
    offer = ent.offered[et.name]
    schema = et.model.model_json_schema()
    defs = schema.get("$defs", {})
    problems: list[str] = []
    person_ids = False

    def walk(node: dict, path: str) -> None:
        nonlocal person_ids
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]] | {k: v for k, v in node.items() if k != "$ref"}
        for key in ("anyOf", "oneOf", "allOf"):
            for branch in node.get(key, ()):
                walk(branch, path)
        kind = node.get("type")
        if kind == "object":
            for name, prop in node.get("properties", {}).items():
                if name in ent.forbidden_fields:
                    problems.append(f"{et.name} v{et.version}: {path}{name}: a forbidden field")
                walk(prop, f"{path}{name}.")
            if isinstance(node.get("additionalProperties"), dict):
                walk(node["additionalProperties"], f"{path}*.")
        elif kind == "array" and isinstance(node.get("items"), dict):
            walk(node["items"], path[:-1] + "[].")
        elif kind == "string":
            field_name = path[:-1]
            pattern = node.get("pattern")
            if pattern and re.search(pattern, PERSON_ID):
                person_ids = True
            if pattern and re.search(pattern, FNR):
                problems.append(f"{et.name} v{et.version}: {field_name}: its pattern admits a fødselsnummer")
            coded = "enum" in node or "const" in node or "format" in node or pattern
            if not coded and field_name.rsplit(".", 1)[-1] not in offer.codes:
                problems.append(f"{et.name} v{et.version}: {field_name}: free text (no enum, pattern or format)")

    walk(schema, "")
    if person_ids and offer.personal_data != "pseudonymous":
        problems.append(f"{et.name} v{et.version}: carries person ids but is classed {offer.personal_data!r}")
    if not person_ids and offer.personal_data == "pseudonymous":
        problems.append(f"{et.name} v{et.version}: classed 'pseudonymous' but carries no person ids")
    return problems


def check_events(events: list[str], ent: Entitlements | None = None) -> list[str]:
    """The requested event types, split on commas, deduplicated and sorted; Refused naming
    every type a partner may not have."""
    ent = ent or entitlements()
    wanted = sorted({e.strip() for item in events for e in item.split(",") if e.strip()})
    if not wanted:
        raise Refused("name at least one event type with --events")
    refusals = [r for e in wanted if (r := ent.refusal(e))]
    if refusals:
        raise Refused("\n".join(refusals))
    return wanted


# --- the broker ----------------------------------------------------------------------------


@dataclass
class Partner:
    name: str
    user: str
    queue: str
    host: str
    port: int
    vhost: str
    events: list[str]
    password: str | None = None  # None: the user existed and keeps its password
    changes: list[str] = field(default_factory=list)

    @property
    def amqp_url(self) -> str | None:
        if self.password is None:
            return None
        vhost = "" if self.vhost == "/" else quote(self.vhost, safe="")
        return f"amqp://{quote(self.user)}:{quote(self.password, safe='')}@{self.host}:{self.port}/{vhost}"


def names(name: str) -> tuple[str, str]:
    """The partner's user and queue."""
    if not NAME.fullmatch(name):
        raise Refused(f"partner name {name!r}: lower-case letters, digits and '-', at most 40, starting with a letter or digit")
    return f"partner-{name}", f"partner.{name}"


def _vhost(cfg: Settings) -> str:
    return unquote(urlsplit(cfg.amqp_url).path[1:]) or "/"


def _json(*args: str) -> list[dict] | None:
    """A rabbitmqctl listing as JSON; None when it names something that does not exist."""
    for attempt in range(3):
        result = _ctl(*args, "--formatter", "json")
        if result.returncode == 0:
            return json.loads(result.stdout or "[]")
        if "no_such" in result.stderr or "not_found" in result.stderr:
            return None
    raise RuntimeError(f"rabbitmqctl {args[0]} failed: {result.stderr.strip()[:200]}")


def _permissions(queue: str) -> tuple[str, str, str]:
    """configure, write, read: nothing, nothing, its own queue."""
    return ("^$", "^$", "^" + re.escape(queue).replace(r"\-", "-") + "$")


def bound_events(cfg: Settings, queue: str) -> set[str]:
    """The event types `queue` is bound to on the events exchange: what it is entitled to."""
    return _bound(_vhost(cfg), queue)


def _bound(vhost: str, queue: str) -> set[str]:
    rows = _json("list_bindings", "-p", vhost, "source_name", "destination_name", "destination_kind", "routing_key") or []
    return {r["routing_key"] for r in rows if r["source_name"] == EVENTS and r["destination_kind"] == "queue" and r["destination_name"] == queue}


async def _declare(cfg: Settings, queue: str, max_length: int) -> bool:
    """The partner's queue, declared idempotently with the operator's credentials; True when
    it was created now. Refused if it exists with other arguments (they cannot change)."""
    connection = await aio_pika.connect(cfg.amqp_url)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(queue, passive=True)
            existed = True
        except ChannelNotFoundEntity:
            existed = False
            channel = await connection.channel()
        await channel.declare_exchange(EVENTS, aio_pika.ExchangeType.TOPIC, durable=True)
        arguments = {"x-queue-type": "quorum", "x-max-length": max_length, "x-overflow": "drop-head"}
        try:
            await channel.declare_queue(queue, durable=True, arguments=arguments)
        except ChannelPreconditionFailed as exc:
            raise Refused(f"queue {queue} exists with other arguments ({exc}); remove the partner first") from None
    return not existed


async def _rebind(cfg: Settings, queue: str, bind: set[str], unbind: set[str]) -> None:
    connection = await aio_pika.connect(cfg.amqp_url)
    async with connection:
        channel = await connection.channel()
        q = await channel.get_queue(queue, ensure=False)
        for key in sorted(bind):
            await q.bind(EVENTS, key)
        for key in sorted(unbind):
            await q.unbind(EVENTS, key)


async def add(cfg: Settings, name: str, events: list[str], rotate_password: bool = False) -> Partner:
    """Create or update the partner: user, permissions, queue, bindings (journaled)."""
    ent = entitlements()
    user, queue = names(name)
    wanted = check_events(events, ent)
    parts = urlsplit(cfg.amqp_url)
    vhost = _vhost(cfg)
    partner = Partner(name, user, queue, parts.hostname or "localhost", parts.port or 5672, vhost, wanted)
    params = {"name": name, "events": wanted, "vhost": vhost, "rotate_password": rotate_password}
    async with journal.record(cfg, "partner add", params) as op:
        existing = await asyncio.to_thread(_json, "list_users")
        if user not in {u["user"] for u in existing or []}:
            partner.password = secrets.token_urlsafe(24)
            await asyncio.to_thread(_ctl_ok, "add_user", user, partner.password)
            partner.changes.append(f"created user {user}")
        elif rotate_password:
            partner.password = secrets.token_urlsafe(24)
            await asyncio.to_thread(_ctl_ok, "change_password", user, partner.password)
            partner.changes.append(f"new password for {user}")
        permissions = _permissions(queue)
        current = await asyncio.to_thread(_json, "list_user_permissions", user) or []
        if [(p["configure"], p["write"], p["read"]) for p in current if p["vhost"] == vhost] != [permissions]:
            await asyncio.to_thread(_ctl_ok, "set_permissions", "-p", vhost, user, *permissions)
            partner.changes.append(f"permissions of {user} on vhost {vhost}: configure none, write none, read {queue}")
        if await _declare(cfg, queue, ent.max_length):
            partner.changes.append(f"created queue {queue}")
        bound = await asyncio.to_thread(_bound, vhost, queue)
        bind, unbind = set(wanted) - bound, bound - set(wanted)
        if bind or unbind:
            await _rebind(cfg, queue, bind, unbind)
        partner.changes += [f"bound {e}" for e in sorted(bind)] + [f"unbound {e}" for e in sorted(unbind)]
        op.resultat = {"changes": partner.changes, "user": user, "queue": queue}
    return partner


async def remove(cfg: Settings, name: str) -> list[str]:
    """Delete the partner's user and queue (with what is in it); journaled."""
    user, queue = names(name)
    changes: list[str] = []
    async with journal.record(cfg, "partner remove", {"name": name, "vhost": _vhost(cfg)}) as op:
        if _ctl("delete_user", user).returncode == 0:
            changes.append(f"deleted user {user}")
        connection = await aio_pika.connect(cfg.amqp_url)
        async with connection:
            channel = await connection.channel()
            try:
                await channel.declare_queue(queue, passive=True)
                channel = await connection.channel()
                await channel.queue_delete(queue)
                changes.append(f"deleted queue {queue}")
            except (ChannelNotFoundEntity, ChannelClosed):
                pass
        op.resultat = {"changes": changes}
    return changes


# --- the CLI: `chain partner ...` -------------------------------------------------------------

app = typer.Typer(help="Partners outside the chain: their own user and queue for the events they are entitled to.", no_args_is_help=True)
ENV_OPTION = typer.Option(None, "--env", help="Act on a named environment (e.g. chain_demo): its vhost and settings")


def _use_env(env: str | None) -> Settings:
    if env:
        from sim.environment import Environment

        os.environ.update({k: v for k, v in Environment(env).env().items() if k.startswith("CHAIN_")})
        settings.cache_clear()
    return settings()


def _fail(message: str) -> None:
    for line in message.splitlines():
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(2)


@app.command("add")
def add_command(
    name: str = typer.Argument(..., help="The partner's name: lower-case letters, digits, '-' (user partner-NAME, queue partner.NAME)"),
    events: list[str] = typer.Option(..., "--events", help="An event type it may receive (repeat, or separate by commas); see `chain partner events`"),
    rotate_password: bool = typer.Option(False, "--rotate-password", help="Issue a new password (an existing user otherwise keeps its own)"),
    env: str | None = ENV_OPTION,
) -> None:
    """Create (or bring up to date) a partner: its user with least privilege, its durable
    queue bound only to the events it is entitled to; print its connection details.
    Idempotent: the same command again changes nothing."""
    cfg = _use_env(env)
    try:
        p = asyncio.run(add(cfg, name, events, rotate_password))
    except Refused as exc:
        _fail(str(exc))
    except (RuntimeError, OSError, aio_pika.exceptions.AMQPError) as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    for change in p.changes or ["nothing to change"]:
        typer.echo(f"# {change}", err=True)
    password = p.password or "(unchanged: the one given when the partner was added; --rotate-password for a new one)"
    for key, value in (
        ("host", p.host), ("port", p.port), ("vhost", p.vhost), ("user", p.user), ("password", password),
        ("queue", p.queue), ("events", ",".join(p.events)),
    ):
        typer.echo(f"{key}: {value}")
    if p.amqp_url:
        typer.echo(f"url: {p.amqp_url}")


@app.command("remove")
def remove_command(name: str = typer.Argument(..., help="The partner's name"), env: str | None = ENV_OPTION) -> None:
    """Delete a partner's user and queue (and the events waiting in it)."""
    cfg = _use_env(env)
    try:
        changes = asyncio.run(remove(cfg, name))
    except Refused as exc:
        _fail(str(exc))
    typer.echo("\n".join(changes) or f"no partner {name}")


@app.command("events")
def events_command(as_json: bool = typer.Option(False, "--json", help="As JSON")) -> None:
    """The event types partners may receive, with the personal data each carries, and
    those withheld, with the reason."""
    ent = entitlements()
    if as_json:
        typer.echo(json.dumps({"offered": [asdict(o) for o in ent.offered.values()], "withheld": ent.withheld}, indent=2, ensure_ascii=False))
        return
    typer.echo("offered to partners (personal data: none / case / pseudonymous):")
    for o in ent.offered.values():
        typer.echo(f"  {o.event:32} {o.personal_data:13} {o.why}")
    typer.echo("withheld:")
    for event, why in ent.withheld.items():
        typer.echo(f"  {event:32} {why}")
