"""The contracts on the bus: the CloudEvents envelope, the event catalogue, and the log
redaction that keeps fødselsnummer-like values out of the logs."""

import json
import os
import re
import subprocess
from datetime import date
from pathlib import Path
from uuid import uuid4

import pytest
import structlog
from pydantic import ValidationError

from shared import log
from shared.catalogue import (
    CATALOGUE,
    Bosatt,
    EventData,
    EventType,
    Kategori,
    Trukke,
    UnknownEvent,
    VedtakFattet,
    event_type_of,
    parse_data,
)
from shared.envelope import MAX_MESSAGE_BYTES, Envelope, parse_envelope
from shared.log import REDACTED, redact
from shared.publish import envelope_for
from sim.docs import asyncapi, event_schemas
from tests.events import UDI, new_sak_id, vedtak

FNR = "01019912345"


def valid_dict(**changes) -> dict:
    env = envelope_for(vedtak(), new_sak_id(), UDI, 1)
    return json.loads(env.model_dump_json()) | changes


def body(d: dict) -> bytes:
    return json.dumps(d).encode()


# --- envelope --------------------------------------------------------------------------


def test_a_valid_envelope_round_trips_through_json():
    original = envelope_for(vedtak(), new_sak_id(), UDI, 3, correlationid=uuid4())
    wire = original.model_dump_json().encode()
    parsed = parse_envelope(wire)
    assert parsed == original
    assert parsed.id == original.id and parsed.time == original.time
    assert parsed.sequence == 3
    assert parsed.correlationid == original.correlationid
    assert json.loads(wire)["specversion"] == "1.0"
    assert isinstance(parse_data(parsed), VedtakFattet)
    assert parse_data(parsed) == VedtakFattet.model_validate(original.data)


def test_unknown_cloudevents_extensions_are_carried_along():
    parsed = parse_envelope(body(valid_dict(traceparent="00-abc-def-01")))
    assert json.loads(parsed.model_dump_json())["traceparent"] == "00-abc-def-01"


def test_an_envelope_at_the_size_limit_is_accepted_and_one_byte_more_rejected():
    raw = body(valid_dict())
    at_limit = raw + b" " * (MAX_MESSAGE_BYTES - len(raw))
    assert len(at_limit) == MAX_MESSAGE_BYTES
    parse_envelope(at_limit)
    with pytest.raises(ValueError, match="exceeds"):
        parse_envelope(at_limit + b" ")


def test_an_oversized_envelope_is_rejected():
    d = valid_dict()
    d["data"]["padding"] = "x" * MAX_MESSAGE_BYTES
    with pytest.raises(ValueError, match="exceeds"):
        parse_envelope(body(d))


@pytest.mark.parametrize("specversion", ["0.3", "1", "2.0", None])
def test_wrong_specversion_is_rejected(specversion):
    with pytest.raises(ValidationError, match="specversion"):
        parse_envelope(body(valid_dict(specversion=specversion)))


@pytest.mark.parametrize(
    "subject",
    ["SAK-test-123456", "sak-12345", "sak-ABCDEF", "sak-test 123456", "case-test-123456", "sak-" + "a" * 61, ""],
)
def test_a_subject_not_matching_the_sak_pattern_is_rejected(subject):
    with pytest.raises(ValidationError, match="subject"):
        parse_envelope(body(valid_dict(subject=subject)))


@pytest.mark.parametrize("subject", ["sak-123456", "sak-" + "a" * 60, "sak-test-0a1b2c"])
def test_subjects_matching_the_pattern_are_accepted(subject):
    assert parse_envelope(body(valid_dict(subject=subject))).subject == subject


@pytest.mark.parametrize("sequence", [0, -1])
def test_sequence_starts_at_one(sequence):
    with pytest.raises(ValidationError, match="sequence"):
        parse_envelope(body(valid_dict(sequence=sequence)))
    assert parse_envelope(body(valid_dict(sequence=1))).sequence == 1


@pytest.mark.parametrize("missing", ["id", "specversion", "correlationid", "sequence", "data", "type", "dataschema", "subject"])
def test_required_envelope_fields(missing):
    d = valid_dict()
    d.pop(missing)
    # id and specversion have defaults when an envelope is built in code, but a received
    # one must carry them (a missing id, made up anew at each delivery, defeats the inbox)
    with pytest.raises(ValueError, match="missing" if missing in ("id", "specversion") else missing):
        parse_envelope(body(d))


def test_a_naive_time_is_rejected():
    with pytest.raises(ValidationError, match="time"):
        parse_envelope(body(valid_dict(time="2023-03-01T12:00:00")))


def test_malformed_json_is_rejected():
    with pytest.raises(ValueError):
        parse_envelope(b'{"specversion": "1.0",')


# --- catalogue -------------------------------------------------------------------------


def test_parse_data_rejects_an_unknown_type():
    env = Envelope.model_validate(valid_dict(type="vedtak.omgjort"))
    with pytest.raises(UnknownEvent):
        parse_data(env)


def test_parse_data_rejects_an_unknown_schema():
    env = Envelope.model_validate(valid_dict(dataschema="urn:chain:schema:vedtak.fattet:v2"))
    with pytest.raises(UnknownEvent):
        parse_data(env)


def test_parse_data_rejects_a_type_schema_mismatch():
    env = Envelope.model_validate(valid_dict(dataschema=event_type_of(Bosatt).dataschema))
    with pytest.raises(UnknownEvent):
        parse_data(env)
    env = Envelope.model_validate(valid_dict(type="bosetting.bosatt"))
    with pytest.raises(UnknownEvent):
        parse_data(env)


@pytest.mark.parametrize("person_id", [FNR, "p-" + FNR, "Ola Nordmann", "p-0123456789ABCDEF0123"])
def test_vedtak_person_ids_must_be_pseudonymous(person_id):
    d = valid_dict()
    d["data"]["personar"][0]["person_id"] = person_id
    env = parse_envelope(body(d))
    with pytest.raises(ValidationError, match="person_id"):
        parse_data(env)


def test_a_vedtak_person_id_as_an_11_digit_number_is_rejected():
    d = valid_dict()
    d["data"]["personar"][0]["person_id"] = int(FNR.lstrip("0") + "0")
    with pytest.raises(ValidationError):
        parse_data(parse_envelope(body(d)))


def test_bosatt_person_ids_must_be_pseudonymous():
    good = Bosatt(
        kommunenummer="0301",
        busetjingsdato=date(2023, 9, 1),
        kategori=Kategori.vaksen,
        personar=["p-" + "ab" * 10],
        vedtaksdato=date(2023, 3, 1),
    )
    env = envelope_for(good, new_sak_id(), "urn:chain:bosetting", 1)
    assert parse_data(env) == good
    data = env.data | {"personar": [FNR]}
    with pytest.raises(ValidationError):
        parse_data(env.model_copy(update={"data": data}))


def test_every_catalogue_entry_has_a_versioned_urn_schema():
    assert CATALOGUE, "the catalogue is empty"
    for key, et in CATALOGUE.items():
        assert re.fullmatch(r"[a-z_]+\.[a-z_]+", et.name), et.name
        assert et.version >= 1
        assert et.dataschema == f"urn:chain:schema:{et.name}:v{et.version}"
        assert key == et.dataschema
        assert event_type_of(et.model) is et


def test_the_catalogue_holds_the_chain_events():
    names = {et.name for et in CATALOGUE.values()}
    assert names >= {
        "vedtak.fattet",
        "mottak.status_endret",
        "kartlegging.startet",
        "kartlegging.fullfort",
        "bosetting.fordelt",
        "bosetting.avslatt",
        "bosetting.avtale_inngatt",
        "bosetting.bosatt",
    }
    versions = {(et.name, et.version) for et in CATALOGUE.values()}
    assert len(versions) == len(CATALOGUE), "one event version registered twice"


def test_unknown_fields_in_data_are_ignored():
    d = valid_dict()
    d["data"]["ny_felt"] = {"noko": 1}
    d["data"]["personar"][0]["ekstra"] = "x"
    data = parse_data(parse_envelope(body(d)))
    assert isinstance(data, VedtakFattet)
    dumped = data.model_dump()
    assert "ny_felt" not in dumped
    assert "ekstra" not in dumped["personar"][0]
    assert data.personar[0].person_id == d["data"]["personar"][0]["person_id"]


def test_invalid_known_fields_in_data_are_still_rejected():
    d = valid_dict()
    d["data"]["kategori"] = "turist"
    with pytest.raises(ValidationError, match="kategori"):
        parse_data(parse_envelope(body(d)))


# --- log redaction ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [f"fnr {FNR} here", FNR, "010199 12345", f"a={FNR},b", f"{FNR}\n"],
)
def test_an_fnr_in_a_string_is_redacted(text):
    out = redact(text)
    assert REDACTED in out
    assert "12345" not in out


def test_an_fnr_as_int_is_redacted():
    assert redact(12345678901) == REDACTED
    assert redact(-12345678901) == REDACTED
    assert redact(99999999999) == REDACTED


def test_an_fnr_nested_in_dicts_and_lists_is_redacted():
    value = {"a": [1, {"b": FNR}, 12345678901], "c": (f"x {FNR}",), "d": {"e": {"f": [FNR]}}}
    out = redact(value)
    assert FNR not in json.dumps(out)
    assert "12345678901" not in json.dumps(out)
    assert out["a"][0] == 1
    assert out["a"][1] == {"b": REDACTED}
    assert out["a"][2] == REDACTED
    assert out["c"] == [f"x {REDACTED}"]
    assert out["d"]["e"]["f"] == [REDACTED]


@pytest.mark.parametrize(
    "value",
    [2023, 12345, 1234567890, 123456789012, True, 0, 3.5, None, "2023", "12345", "ordinary text 2023-03-01",
     "1234567890", "123456789012", "p-0123456789abcdef0123", "sak-test-123456"],
)
def test_ordinary_values_are_kept(value):
    assert redact(value) == value


def test_ordinary_numbers_beside_an_fnr_are_kept():
    out = redact({"year": 2023, "count": 12345, "note": f"in 2023 {FNR} x 12345"})
    assert out == {"year": 2023, "count": 12345, "note": f"in 2023 {REDACTED} x 12345"}


@pytest.fixture
def fresh_structlog():
    """configure() caches loggers and binds context: restore the test session's setup after."""
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    log.configure("tests", "WARNING")


def test_configured_logging_never_writes_an_fnr(capsys, fresh_structlog):
    log.configure("contract-test", "INFO")
    logger = log.get_logger(component="test")
    logger.info(f"lookup for {FNR}", fnr=FNR, nested={"ids": [12345678901, "010199 12345"]}, year=2023)
    try:
        raise ValueError(f"bad person {FNR}")
    except ValueError:
        logger.exception("failed")
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(lines) == 2, out
    assert lines[0]["service"] == "contract-test"
    assert lines[0]["year"] == 2023
    assert lines[0]["fnr"] == REDACTED
    for digits in (FNR, "12345678901", "010199 12345", "01019912345"):
        assert digits not in out
    assert "bad person" in out  # the exception was rendered, with the number redacted


# --- the published contract: AsyncAPI and a new version beside the old one ----------------------


class TrukkeV2(EventData):  # a hypothetical v2, registered only inside a test
    """The case is withdrawn (v2: the cause as a code list)."""

    arsakar: list[str]


@pytest.fixture
def with_v2(monkeypatch):
    et = EventType("bosetting.trukke", 2, TrukkeV2, "bosetting", "v2 beside v1")
    monkeypatch.setitem(CATALOGUE, et.dataschema, et)
    monkeypatch.setattr(TrukkeV2, "event_type", et, raising=False)
    return et


def test_the_asyncapi_document_is_asyncapi_3_with_the_partners_part():
    from drift.partner import entitlements

    doc = asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    offered = entitlements().offered
    partner = doc["channels"]["partner"]
    assert partner["address"] == "partner.{name}" and partner["bindings"]["amqp"]["is"] == "queue"
    assert {doc["components"]["messages"][k]["name"] for k in partner["messages"]} == offered.keys()
    assert doc["operations"]["partner.receive"]["action"] == "receive"
    tagged = {m["name"] for m in doc["components"]["messages"].values() if any(t["name"] == "partner" for t in m.get("tags", ()))}
    assert tagged == offered.keys()
    assert "kartlegging.karriererettleiing" not in {doc["components"]["messages"][k]["name"] for k in partner["messages"]}


def test_a_new_version_is_published_beside_the_old_one(with_v2):
    doc = asyncapi()
    assert set(doc["channels"]["bosetting.trukke"]["messages"]) == {"bosetting.trukke.v1", "bosetting.trukke.v2"}
    assert {"bosetting.trukke.v1", "bosetting.trukke.v2"} <= set(doc["channels"]["partner"]["messages"])
    assert doc["components"]["messages"]["bosetting.trukke.v2"]["payload"]["allOf"][1]["properties"]["dataschema"] == {
        "const": "urn:chain:schema:bosetting.trukke:v2"
    }
    files = event_schemas()
    assert files["bosetting.trukke.v1.json"]["$id"].endswith(":v1") and files["bosetting.trukke.v2.json"]["$id"].endswith(":v2")
    v2 = envelope_for(TrukkeV2(arsakar=["utreist"]), new_sak_id(), "urn:chain:bosetting", 1)
    assert parse_data(v2) == TrukkeV2(arsakar=["utreist"])  # both versions parse, each by its dataschema
    v1 = envelope_for(Trukke(arsak="utreist"), new_sak_id(), "urn:chain:bosetting", 1)
    assert isinstance(parse_data(v1), Trukke)


ASYNCAPI_CLI = Path(__file__).resolve().parent.parent / ".tools" / "asyncapi" / "node_modules" / ".bin" / "asyncapi"


@pytest.mark.skipif(not ASYNCAPI_CLI.exists(), reason="the AsyncAPI CLI is installed by `make contracts`")
def test_the_official_cli_validates_the_document_with_two_versions_side_by_side(with_v2, tmp_path):
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(asyncapi()), encoding="utf-8")
    (tmp_path / "analytics.json").write_text('{"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "chain"}')
    result = subprocess.run(
        [str(ASYNCAPI_CLI), "validate", str(path), "--fail-severity", "warn"],
        capture_output=True, text=True, timeout=180, env=os.environ | {"ASYNCAPI_METRICS_CONFIG_PATH": str(tmp_path / "analytics.json")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout
