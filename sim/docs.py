"""Generate the contract documents from the event catalogue and the services' queue
bindings, never by hand: `python -m sim.docs` (or `chain docs`) writes

- docs/asyncapi.json: AsyncAPI 3.0 for the whole bus (channels, messages, who sends and
  who receives each event);
- docs/events.md: the catalogue as a page;
- docs/schemas/<event>.v<n>.json: JSON Schema of each event's data, and the envelope;
- docs/schemas/http/*.json: JSON Schema of the HTTP bodies mottak systems send to
  kartlegging (mapping submissions by schema version, corrections, the § 11 note, and
  residents' events).

The event schemas in docs/schemas/ are the published contract. Within a version only
additive changes are allowed (`incompatibilities`); `python -m sim.docs` refuses to write
an event schema that breaks the one already there, and tests/test_schema_compat.py checks
every schema against each version of it ever committed. The partners' part of the
AsyncAPI document (their queue `partner.{name}` and the events offered to them) comes
from drift/partner.toml.
"""

import json
import sys
from fnmatch import fnmatch
from pathlib import Path

from pydantic.json_schema import models_json_schema

from drift.partner import entitlements
from shared.catalogue import CATALOGUE
from shared.envelope import CONTENT_TYPE, Envelope
from shared.topology import EVENTS, MOTTAK_INN

ROOT = Path(__file__).resolve().parent.parent
JSON_SCHEMA = "https://json-schema.org/draft/2020-12/schema"


def _http_schemas() -> dict[str, str]:
    from services.kartlegging import intake, skjema

    models = {
        "kartlegging.ordinaer.v1.json": skjema.OrdinaerV1,
        "kartlegging.forenkla.v1.json": skjema.ForenklaV1,
        "kartlegging.korrigering.json": skjema.Korrigering,
        "kartlegging.karriererettleiing.json": skjema.Karriererettleiing,
        "mottak.hending.json": intake.Hending,
    }
    return {f"http/{name}": json.dumps(m.model_json_schema(), indent=2, ensure_ascii=False) + "\n" for name, m in models.items()}


def _channel(name: str, key: str, exchange: str, description: str) -> dict:
    """An AsyncAPI channel: one routing key on one topic exchange, carrying one message."""
    return {
        "address": name,
        "description": description,
        "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": {"name": exchange, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"},
                "bindingVersion": "0.3.0",
            }
        },
    }


def _intake(channels: dict, operations: dict, name: str, key: str) -> None:
    """A mottak event's first leg: the mottak system's own user publishes it on `mottak.inn`;
    kartlegging's intake queue validates it and publishes it on the chain's exchange."""
    channel = channels.setdefault(f"intake.{name}", _channel(
        name, key, MOTTAK_INN, f"Routing key `{name}` on the intake exchange `{MOTTAK_INN}` (mottak systems' own users may publish only here)."
    ))
    channel["messages"][key] = {"$ref": f"#/components/messages/{key}"}
    ref = {"$ref": f"#/channels/intake.{name}"}
    operations[f"mottak.send.{name}"] = {
        "action": "send",
        "channel": ref,
        "summary": f"a mottak system publishes {name} with its own user (`chain mottak-add`)",
        "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": "0.3.0"}},
    }
    operations[f"kartlegging.intake.receive.{name}"] = {
        "action": "receive",
        "channel": ref,
        "summary": f"kartlegging validates {name} from its intake queue `kartlegging.mottak-inn`",
        "bindings": {"amqp": {"ack": True, "bindingVersion": "0.3.0"}},
    }


def event_schemas() -> dict[str, dict]:
    """The published contract: the envelope's and each event version's JSON Schema, by file name."""
    schemas = {"envelope.json": {"$schema": JSON_SCHEMA, **Envelope.model_json_schema()}}
    for et in CATALOGUE.values():
        schemas[f"{et.name}.v{et.version}.json"] = {"$schema": JSON_SCHEMA, "$id": et.dataschema, **et.model.model_json_schema()}
    return schemas


def schema_files() -> dict[str, str]:
    files = {name: json.dumps(schema, indent=2, ensure_ascii=False) + "\n" for name, schema in event_schemas().items()}
    files.update(_http_schemas())
    return dict(sorted(files.items()))


# --- compatibility within a version ------------------------------------------------------

# Keywords that document and change no instance's validity.
ANNOTATIONS = {"title", "description", "examples", "$comment", "$schema", "$id", "$defs", "deprecated", "readOnly", "writeOnly"}
# Constraints that may not change within a version (either way: a narrower one breaks
# producers such as mottak systems, a wider one breaks consumers that relied on it).
CONSTRAINTS = (
    "minLength", "maxLength", "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties",
)
HANDLED = {"type", "properties", "required", "items", "additionalProperties", "propertyNames", "enum", "const",
           "anyOf", "oneOf", "$ref", "default", *CONSTRAINTS}


def incompatibilities(old: dict, new: dict) -> list[str]:
    """What in `new` breaks the published `old` schema of the same event version, one line
    each (empty: compatible). Allowed within a version: new optional fields, new enum
    values, changed descriptions. Anything else breaks someone: a field removed, a field
    newly required or no longer required, a type narrowed, widened or changed, an enum
    value removed, a constraint or default changed."""
    problems: list[str] = []
    _compare(old, new, old, new, "", problems, 0)
    return problems


def _resolve(node: dict, root: dict) -> dict:
    while "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target | {k: v for k, v in node.items() if k != "$ref"}
    return node


def _branches(node: dict, root: dict) -> dict[str, dict]:
    """The alternatives a value may take, by JSON type (anyOf / oneOf / a list of types)."""
    node = _resolve(node, root)
    for key in ("anyOf", "oneOf"):
        if key in node:
            out: dict[str, dict] = {}
            for branch in node[key]:
                for kind, b in _branches(branch, root).items():
                    out[kind if kind not in out else f"{kind}#{len(out)}"] = b
            return out
    kind = node.get("type")
    if isinstance(kind, list):
        return {k: node | {"type": k} for k in kind}
    return {kind or "any": node}


def _compare(old: dict, new: dict, old_root: dict, new_root: dict, path: str, problems: list[str], depth: int) -> None:
    where = path or "(root)"
    if depth > 40:
        return
    o, n = _resolve(old, old_root), _resolve(new, new_root)
    if o.get("default") != n.get("default"):
        problems.append(f"{where}: default changed from {o.get('default')!r} to {n.get('default')!r}")
    ob, nb = _branches(o, old_root), _branches(n, new_root)
    narrowed, widened = sorted(ob.keys() - nb.keys()), sorted(nb.keys() - ob.keys())
    if narrowed and widened:
        problems.append(f"{where}: type changed from {'|'.join(sorted(ob))} to {'|'.join(sorted(nb))}")
    elif narrowed:
        problems.append(f"{where}: type narrowed: {'|'.join(narrowed)} no longer allowed")
    elif widened:
        problems.append(f"{where}: type widened: {'|'.join(widened)} now allowed")
    for kind in sorted(ob.keys() & nb.keys()):
        _compare_same_type(ob[kind], nb[kind], old_root, new_root, path, problems, depth)


def _compare_same_type(o: dict, n: dict, old_root: dict, new_root: dict, path: str, problems: list[str], depth: int) -> None:
    where = path or "(root)"
    old_values = o["enum"] if "enum" in o else [o["const"]] if "const" in o else None
    new_values = n["enum"] if "enum" in n else [n["const"]] if "const" in n else None
    if old_values is not None and new_values is None:
        problems.append(f"{where}: no longer restricted to {old_values}")
    elif old_values is None and new_values is not None:
        problems.append(f"{where}: newly restricted to {new_values}")
    elif old_values is not None and (removed := [v for v in old_values if v not in new_values]):
        problems.append(f"{where}: enum value removed: {', '.join(map(str, removed))}")
    for key in CONSTRAINTS:
        if o.get(key) != n.get(key):
            problems.append(f"{where}: {key} changed from {o.get(key)!r} to {n.get(key)!r}")
    for key in sorted((o.keys() | n.keys()) - ANNOTATIONS - HANDLED):
        if o.get(key) != n.get(key):
            problems.append(f"{where}: {key} changed")
    prefix = f"{path}." if path else ""
    old_props, new_props = o.get("properties", {}), n.get("properties", {})
    old_req, new_req = set(o.get("required", ())), set(n.get("required", ()))
    for name in sorted(old_props.keys() - new_props.keys()):
        problems.append(f"{prefix}{name}: field removed")
    for name in sorted(new_req - old_req):
        problems.append(f"{prefix}{name}: {'field became required' if name in old_props else 'new required field'}")
    for name in sorted((old_req - new_req) & new_props.keys()):
        problems.append(f"{prefix}{name}: no longer required")
    for name in sorted(old_props.keys() & new_props.keys()):
        _compare(old_props[name], new_props[name], old_root, new_root, f"{prefix}{name}", problems, depth + 1)
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}"), ("propertyNames", "{key}")):
        ov, nv = o.get(key), n.get(key)
        if isinstance(ov, dict) and isinstance(nv, dict):
            _compare(ov, nv, old_root, new_root, f"{path}{suffix}", problems, depth + 1)
        elif ov != nv:
            problems.append(f"{where}: {key} changed from {ov!r} to {nv!r}")


def markdown() -> str:
    lines = [
        "# Event catalogue",
        "",
        "Generated by `python -m sim.docs` from `shared/catalogue.py`; do not edit by hand.\nThe whole bus as AsyncAPI 3.0: [`asyncapi.json`](asyncapi.json).",
        "Every event travels in the CloudEvents envelope (`schemas/envelope.json`) on the topic",
        "exchange `chain.events` with the event name as routing key.",
        "",
        "Partners (`chain partner add`) may receive the events marked in the column *partners*, with",
        "the personal data named there (`drift/partner.toml`); the others stay inside the chain.",
        "",
        "| event (routing key) | version | producer | dataschema | partners | what it means |",
        "|---|---|---|---|---|---|",
    ]
    offered = entitlements().offered
    for et in CATALOGUE.values():
        partners = f"yes ({offered[et.name].personal_data})" if et.name in offered else "no"
        lines.append(f"| `{et.name}` | {et.version} | {et.producer} | `{et.dataschema}` | {partners} | {et.description} |")
    for et in CATALOGUE.values():
        lines += ["", f"## `{et.name}` v{et.version}", "", et.description, "", "| field | type | required | description |", "|---|---|---|---|"]
        schema = et.model.model_json_schema()
        required = set(schema.get("required", []))
        for name, prop in schema["properties"].items():
            kind = prop.get("type") or prop.get("$ref", "").rsplit("/", 1)[-1] or " / ".join(
                p.get("type", p.get("$ref", "").rsplit("/", 1)[-1]) for p in prop.get("anyOf", [])
            )
            lines.append(f"| `{name}` | {kind} | {'yes' if name in required else 'no'} | {prop.get('description', '')} |")
        lines += ["", f"JSON Schema: [`schemas/{et.name}.v{et.version}.json`](schemas/{et.name}.v{et.version}.json)"]
    return "\n".join(lines) + "\n"


def _consumers() -> dict[str, list[str]]:
    """Which service queues receive which event, from the services' own bindings (a topic
    binding like `kartlegging.*` matches as a shell pattern does for one-word suffixes)."""
    from services.bosetting.app import SPEC as bosetting
    from services.kartlegging.app import SPEC as kartlegging
    from services.kompetanse.app import SPEC as kompetanse

    return {
        et.name: [s.name for s in (kartlegging, bosetting, kompetanse) if any(fnmatch(et.name, b) for b in s.bindings)]
        for et in CATALOGUE.values()
    }


def asyncapi() -> dict:
    models = [(et.model, "validation") for et in CATALOGUE.values()] + [(Envelope, "validation")]
    keys, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas = dict(top.get("$defs", {}))
    consumers = _consumers()
    offers = entitlements().offered
    channels, operations, messages = {}, {}, {}
    for et in CATALOGUE.values():
        key = f"{et.name}.v{et.version}"
        data_ref = keys[(et.model, "validation")]["$ref"]
        messages[key] = {
            "name": et.name,
            "title": f"{et.name} v{et.version}",
            "summary": et.description,
            **({"tags": [{"name": "partner", "description": f"Offered to partners; personal data: {offers[et.name].personal_data}"}]}
               if et.name in offers else {}),
            "contentType": CONTENT_TYPE,
            "payload": {
                "allOf": [
                    keys[(Envelope, "validation")],
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": et.name},
                            "dataschema": {"const": et.dataschema},
                            "data": {"$ref": data_ref},
                        },
                    },
                ]
            },
            "bindings": {"amqp": {"messageType": et.name, "bindingVersion": "0.3.0"}},
        }
        # one channel per routing key; a new version's message runs beside the old one's there
        channel = channels.setdefault(et.name, _channel(et.name, key, EVENTS, f"Routing key `{et.name}` on the topic exchange `{EVENTS}`."))
        channel["messages"][key] = {"$ref": f"#/components/messages/{key}"}
        channel_ref = {"$ref": f"#/channels/{et.name}"}
        sender = et.producer
        if et.producer == "mottak":  # mottak systems publish on the intake exchange only
            _intake(channels, operations, et.name, key)
            sender = "kartlegging"
        operations[f"{sender}.send.{et.name}"] = {
            "action": "send",
            "channel": channel_ref,
            "summary": f"{sender} publishes {et.name} (persistent, with publisher confirms)",
            "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": "0.3.0"}},
        }
        for service in consumers[et.name]:
            operations[f"{service}.receive.{et.name}"] = {
                "action": "receive",
                "channel": channel_ref,
                "summary": f"{service} consumes {et.name} from its quorum queue `{service}`",
                "bindings": {"amqp": {"ack": True, "bindingVersion": "0.3.0"}},
            }
    _partners(channels, operations, messages)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "chain: the asylum-to-settlement event bus",
            "version": "1.0.0",
            "description": "Generated from shared/catalogue.py, the services' queue bindings and drift/partner.toml by "
            "`python -m sim.docs`. Every message is a CloudEvents 1.0 envelope in structured JSON mode "
            "(`application/cloudevents+json`); the routing key is the event name (`type`), and `dataschema` "
            "(`urn:chain:schema:<type>:v<n>`) names the version of `data`.\n\n"
            "**Partners** receive the events offered to them (the tag `partner`) on their own queue "
            "(the channel `partner`, operation `partner.receive`), with their own user.\n\n"
            "**Versioning.** Within a version, changes are only additive: new optional fields, new enum values. "
            "Readers ignore fields they do not know and treat unknown enum values as unknown, never as an error. "
            "Any other change is a new version (a new `dataschema`), published beside the old one on the same "
            "routing key until every subscriber has moved; subscribers tell them apart by `dataschema`.",
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "local": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "Development broker. The virtual host is the environment's (`chain partner add` prints it).",
                "security": [{"$ref": "#/components/securitySchemes/brukar"}],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "securitySchemes": {
                "brukar": {
                    "type": "userPassword",
                    "description": "Every party has its own RabbitMQ user and password, with permissions for its own part only "
                    "(a partner: `chain partner add`; a mottak system: `chain mottak-add`).",
                }
            },
        },
    }


def _partners(channels: dict, operations: dict, messages: dict) -> None:
    """A partner's own queue and the events it may be entitled to (drift/partner.toml)."""
    offers = entitlements().offered
    keys = [key for key, m in messages.items() if m["name"] in offers]
    listed = "; ".join(f"`{messages[k]['name']}` ({offers[messages[k]['name']].personal_data})" for k in keys)
    channels["partner"] = {
        "address": "partner.{name}",
        "title": "A partner's own queue",
        "description": "A durable quorum queue per partner, made by the operator with `chain partner add NAME --events ...` "
        f"and bound to the exchange `{EVENTS}` for exactly the event types the partner is entitled to. A partner consumes "
        "it with its own user (`partner-NAME`: read on this queue only; it cannot declare, publish or read anything else), "
        "acknowledges each message after handling it, and handles a redelivered message (same `id`) idempotently. "
        f"The queue keeps at most the latest {entitlements().max_length:,} events while nobody reads. "
        f"Events offered to partners, with the personal data they carry: {listed}.",
        "parameters": {"name": {"description": "The partner's name as given to `chain partner add`"}},
        "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in keys},
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {"name": "partner.{name}", "durable": True, "exclusive": False, "autoDelete": False, "vhost": "/"},
                "bindingVersion": "0.3.0",
            }
        },
    }
    operations["partner.receive"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/partner"},
        "title": "A partner consumes its queue",
        "summary": "Consume `partner.{name}` with manual acknowledgement; only the entitled event types arrive.",
        "messages": [{"$ref": f"#/channels/partner/messages/{key}"} for key in keys],
        "bindings": {"amqp": {"ack": True, "bindingVersion": "0.3.0"}},
    }


def generated() -> dict[Path, str]:
    out = {
        ROOT / "docs" / "events.md": markdown(),
        ROOT / "docs" / "asyncapi.json": json.dumps(asyncapi(), indent=2, ensure_ascii=False) + "\n",
    }
    out.update({ROOT / "docs" / "schemas" / name: text for name, text in schema_files().items()})
    return out


def published_breaks() -> list[str]:
    """Incompatible changes of the event schemas now in docs/schemas/ (the published ones)."""
    problems = []
    for name, schema in event_schemas().items():
        path = ROOT / "docs" / "schemas" / name
        if path.exists():
            problems += [f"{name}: {p}" for p in incompatibilities(json.loads(path.read_text(encoding="utf-8")), schema)]
    return problems


def main() -> int:
    if breaks := published_breaks():
        print("refusing to overwrite published schemas with incompatible ones (make it a new version instead):", file=sys.stderr)
        for line in breaks:
            print(f"  {line}", file=sys.stderr)
        return 1
    for path, text in generated().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    print(f"wrote {len(generated())} files under docs/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
