"""Trace context across the bus: the W3C `traceparent` (and `tracestate`) every envelope
carries, as the CloudEvents distributed-tracing extension, and the spans of our own work.

Which trace an emitted event joins:

- while a river applies a delivery: the delivery's span, a child of the envelope's
  `traceparent`; so what a handler emits carries its cause's trace id with a new span id;
- otherwise (an HTTP command, a periodic loop such as the allocator, an external producer
  through `shared/publish.py`): the case's trace, whose trace id is the case's correlation
  id (both are 128 random bits, and the correlation id follows a case from its vedtak to
  settlement already). So the caseworker's confirmation and the kommune's settlement stay
  in the trace the vedtak started, although nothing carries a span from one to the other.
  An incoming HTTP `traceparent` is not continued: it would split the case's trace.

Exported with OTLP (over HTTP) only when OTEL_EXPORTER_OTLP_ENDPOINT is set, sampled as
the OTEL_TRACES_SAMPLER variables say (by default: as the parent says). Without it nothing
is recorded and no SDK span is made: a span is its parent's trace id and flags with a new
random span id (about a microsecond; the SDK's non-recording span took fifteen, most of a
river's instrumentation cost), and the trace context is still propagated.
"""

import os
import random
import re

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_LOW_64 = (1 << 64) - 1
# Where the relay finds an event's traceparent without parsing its body (the envelope's
# JSON as pydantic writes it: no spaces).
_IN_BODY = re.compile(r'"traceparent":"([0-9a-f-]{55})"')
# version-traceid-parentid-flags; a later version may add fields, version ff is invalid.
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16

Carried = tuple[str, str | None]  # (traceparent, tracestate) for an envelope


def _tracer_of(provider: TracerProvider) -> trace.Tracer:
    return provider.get_tracer("chain")


# Until `configure` or `install`: no SDK spans, ids only (`IdsOnly`).
_tracer: trace.Tracer | None = None
_exporting = False


def configure(process: str) -> None:
    """Once per process, at start: export over OTLP if an endpoint is configured."""
    global _exporting
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # The sampler from OTEL_TRACES_SAMPLER (default: parent-based, always on).
    provider = TracerProvider(resource=Resource.create({"service.name": process}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    install(provider)
    _exporting = True


def install(provider: TracerProvider | None) -> None:
    """Record our spans with `provider` (tests use one with an in-memory exporter); None:
    ids only again."""
    global _tracer
    _tracer = _tracer_of(provider) if provider is not None else None


def exporting() -> bool:
    """Whether spans are recorded and exported (else spans are worth no extra work)."""
    return _exporting


class IdsOnly:
    """A span that is ids only, where nothing is recorded: the parent's trace id, flags and
    state, and a new random span id (what propagation needs, without the SDK's objects)."""

    __slots__ = ("traceparent", "tracestate")

    def __init__(self, trace_id: str, flags: str, tracestate: str | None):
        self.traceparent = f"00-{trace_id}-{random.getrandbits(64) or 1:016x}-{flags}"
        self.tracestate = tracestate

    def is_recording(self) -> bool:
        return False

    def end(self) -> None:
        pass


AnySpan = Span | IdsOnly  # what a delivery's span is: the SDK's where recorded, else ids only


def _ids_under(traceparent: str | None, tracestate: str | None) -> IdsOnly | None:
    """A new ids-only span under a valid traceparent (else None)."""
    match = _TRACEPARENT.match(traceparent) if traceparent else None
    if not match or match[1] == "ff" or (match[1] == "00" and match[5]):
        return None
    if match[2] == _ZERO_TRACE or match[3] == _ZERO_SPAN:
        return None
    return IdsOnly(match[2], f"{int(match[4], 16) & 1:02x}", tracestate)


def remote(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """The context an envelope's trace attributes name; None if absent or malformed (a
    broken traceparent is ignored, as W3C says, never a reason to refuse the event)."""
    parent = _parsed(traceparent, tracestate)
    return trace.set_span_in_context(NonRecordingSpan(parent)) if parent else None


def _parsed(traceparent: str | None, tracestate: str | None) -> SpanContext | None:
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent} | ({"tracestate": tracestate} if tracestate else {})
    context = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
    return context if context.is_valid else None


def _case_root(correlationid) -> SpanContext:
    """The case's trace: trace id = the correlation id, under a root span that is never
    recorded (its id, too, derives from the correlation id: one per case)."""
    value = correlationid.int
    return SpanContext(trace_id=value, span_id=(value & _LOW_64) or 1, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def case_context(correlationid) -> Context:
    return trace.set_span_in_context(NonRecordingSpan(_case_root(correlationid)))


def delivery_span(envelope, queue: str) -> AnySpan:
    """The span of applying one delivery, a child of its envelope's trace context (or of
    its case's trace if the producer sent none); the caller ends it once settled."""
    if _tracer is None:
        return _ids_under(envelope.traceparent, envelope.tracestate) or IdsOnly(envelope.correlationid.hex, "01", None)
    parent = _parsed(envelope.traceparent, envelope.tracestate) or _case_root(envelope.correlationid)
    span = _tracer.start_span(f"{queue} process", context=trace.set_span_in_context(NonRecordingSpan(parent)), kind=SpanKind.CONSUMER)
    if span.is_recording():  # attributes cost only when someone will see them
        span.set_attributes(
            {
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "process",
                "messaging.destination.name": queue,
                "messaging.message.id": str(envelope.id),
                "cloudevents.event_type": envelope.type,
                "cloudevents.event_source": envelope.source,
            }
        )
    return span


def carried(span: AnySpan) -> Carried:
    """The trace attributes of an event emitted within `span`."""
    if isinstance(span, IdsOnly):
        return span.traceparent, span.tracestate
    ctx = span.get_span_context()
    state = ctx.trace_state.to_header() if ctx.trace_state else None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}", state or None


def for_case(correlationid, name: str) -> Carried:
    """Trace attributes for an event emitted outside a delivery: a new (producer) span in
    the case's trace."""
    if _tracer is None:
        return IdsOnly(correlationid.hex, "01", None).traceparent, None
    span = _tracer.start_span(name, context=case_context(correlationid), kind=SpanKind.PRODUCER)
    span.end()
    return carried(span)


def in_body(body: str) -> Context | None:
    """The trace context of an envelope's JSON text, without parsing it."""
    match = _IN_BODY.search(body)
    return remote(match.group(1)) if match else None


def publish_span(body: str, exchange: str, event_type: str) -> Span:
    """The relay's span of publishing one event (call only when `exporting()`)."""
    return (_tracer or trace.get_tracer("chain")).start_span(
        f"{exchange} publish",
        context=in_body(body),
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "rabbitmq", "messaging.operation.type": "send", "cloudevents.event_type": event_type},
    )

