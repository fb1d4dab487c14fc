"""Trace context in the envelope (shared/tracing.py), with the SDK's in-memory exporter: a
river delivery's span is the child of its envelope's `traceparent`, and what its handler
emits is the child of that span; work outside a delivery joins its case's trace. And the
river's metrics label a made-up event type as "invalid", never with the sender's string."""

import json
from uuid import UUID, uuid4

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from shared import tracing
from shared.catalogue import KartleggingStartet, Kartleggingstype
from shared.envelope import parse_envelope
from shared.outbox import UnitOfWork
from shared.publish import envelope_for
from tests.conftest import eventually
from tests.events import UDI, new_sak_id, vedtak
from tests.harness import river_harness

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def parts(traceparent: str) -> tuple[str, str, str, str]:
    version, trace_id, span_id, flags = traceparent.split("-")
    return version, trace_id, span_id, flags


@pytest.fixture(scope="module")
def spans():
    """Record spans in memory while this module runs (sampled: the parent says so)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.install(None)


async def emit_one(uow, envelope, data) -> None:
    await uow.emit(KartleggingStartet(kartleggingstype=Kartleggingstype.ordinaer, personar=[]), envelope.subject)


@pytest.fixture(scope="module")
async def river(env, spans):
    async with river_harness(env, "kartlegging", {"vedtak.fattet": emit_one}) as harness:
        yield harness


async def _emitted(h, sak_id):
    return await h.pool.fetchval("SELECT body FROM outbox WHERE subject = $1", sak_id)


async def test_a_delivery_span_is_the_child_of_the_envelopes_traceparent(river, spans):
    sak_id = new_sak_id()
    cause = envelope_for(vedtak(), sak_id, UDI, 1).model_copy(update={"traceparent": PARENT, "tracestate": "vendor=1"})
    await river.publish(cause)
    body = json.loads(await eventually(lambda: _emitted(river, sak_id)))

    [span] = [s for s in spans.get_finished_spans() if s.attributes.get("messaging.message.id") == str(cause.id)]
    assert span.kind == SpanKind.CONSUMER
    assert span.parent is not None and span.parent.is_remote
    assert f"{span.parent.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.attributes["chain.outcome"] == "applied"
    assert span.attributes["cloudevents.event_type"] == "vedtak.fattet"
    # the event it emitted: the cause's trace id, the delivery span as its parent, the state carried
    version, trace_id, span_id, flags = parts(body["traceparent"])
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert span_id == f"{span.context.span_id:016x}" != "00f067aa0ba902b7"
    assert body["tracestate"] == "vendor=1"


async def test_a_malformed_traceparent_is_ignored_and_the_case_trace_continues(river, spans):
    sak_id = new_sak_id()
    cause = envelope_for(vedtak(), sak_id, UDI, 1).model_copy(update={"traceparent": "00-not-a-trace-01"})
    await river.publish(cause)
    body = json.loads(await eventually(lambda: _emitted(river, sak_id)))
    assert parts(body["traceparent"])[1] == cause.correlationid.hex  # applied, not dead-lettered


def test_an_event_without_a_cause_starts_its_case_trace():
    correlationid = uuid4()
    envelope = envelope_for(vedtak(), new_sak_id(), UDI, 1, correlationid)
    assert parts(envelope.traceparent)[1] == correlationid.hex
    again = envelope_for(vedtak(), new_sak_id(), UDI, 2, correlationid)
    assert parts(again.traceparent)[1] == correlationid.hex
    assert parts(again.traceparent)[2] != parts(envelope.traceparent)[2]  # a new span each
    assert json.loads(envelope_for(vedtak(), new_sak_id(), UDI, 1).model_dump_json())["traceparent"]


async def test_work_outside_a_delivery_joins_the_case_trace_it_moves_to():
    """An HTTP command or a loop (no cause) emits into the trace of the case whose
    correlation id it takes; so does a handler that moves its work to another case's."""
    uow = UnitOfWork(None, "urn:chain:bosetting", None, None)
    case = UUID("0af7651916cd43dd8448eb211c80319c")
    uow.correlationid = case
    emitted = await uow.emit(KartleggingStartet(kartleggingstype=Kartleggingstype.ordinaer, personar=[]), new_sak_id())
    [row] = uow.pending
    assert row.envelope.id == emitted.id
    assert parts(row.envelope.traceparent)[1] == case.hex
    assert parts(row.envelope.traceparent)[2] != f"{case.int & (2**64 - 1):016x}"  # its own span, under the case's root


@pytest.mark.parametrize(
    ("traceparent", "parent_trace"),
    [
        (PARENT, TRACE_ID),
        ("01-" + TRACE_ID + "-00f067aa0ba902b7-01-later", TRACE_ID),  # a later version, extra field
        ("00-" + TRACE_ID + "-00f067aa0ba902b7-01-extra", None),  # version 00 has no more fields
        ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", None),
        ("00-" + TRACE_ID + "-" + "0" * 16 + "-01", None),
        ("ff-" + TRACE_ID + "-00f067aa0ba902b7-01", None),
        ("garbage", None),
        (None, None),
    ],
)
def test_without_recording_a_delivery_span_is_ids_only(traceparent, parent_trace):
    """No SDK spans where nothing is recorded: the parent's trace id (or the case's if it
    sent none or a malformed one), a new span id, its sampled flag as received."""
    tracing.install(None)
    cause = envelope_for(vedtak(), new_sak_id(), UDI, 1).model_copy(update={"traceparent": traceparent, "tracestate": "v=1"})
    span = tracing.delivery_span(cause, "kartlegging")
    carried, state = tracing.carried(span)
    version, trace_id, span_id, flags = parts(carried)
    assert (version, trace_id, flags) == ("00", parent_trace or cause.correlationid.hex, "01")
    assert span_id != "00f067aa0ba902b7" and int(span_id, 16)
    assert not span.is_recording()
    assert state == ("v=1" if parent_trace else None)


@pytest.mark.parametrize("bad", [5, ["00"], "0" * 600, {"a": 1}])
def test_a_malformed_trace_context_is_dropped_not_refused(bad):
    body = json.loads(envelope_for(vedtak(), new_sak_id(), UDI, 1).model_dump_json())
    envelope = parse_envelope(json.dumps(body | {"traceparent": bad, "tracestate": bad}).encode())
    assert envelope.traceparent is None and envelope.tracestate is None


def test_no_traceparent_in_an_envelope_that_has_none():
    bare = envelope_for(vedtak(), new_sak_id(), UDI, 1).model_copy(update={"traceparent": None})
    assert "traceparent" not in json.loads(bare.model_dump_json())
    assert "tracestate" not in json.loads(bare.model_dump_json())


async def test_a_made_up_event_type_is_counted_as_invalid_never_by_its_name(river):
    sak_id = new_sak_id()
    hostile = envelope_for(vedtak(), sak_id, UDI, 1).model_copy(update={"type": "12345678901 sak-x"})
    await river.publish(hostile)

    def invalid() -> float:
        return REGISTRY.get_sample_value(
            "chain_river_events_total",
            {"service": "kartlegging", "queue": river.river.queue.name, "type": "invalid", "outcome": "dead_lettered"},
        ) or 0

    async def counted():
        return invalid() >= 1

    await eventually(counted)
    values = {v for metric in REGISTRY.collect() for s in metric.samples for v in s.labels.values()}
    assert not [v for v in values if "12345678901" in v or "sak-" in v]
    await river.dead_letters()
