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
is recorded: a span is two random ids and the traceparent is still propagated (a few
microseconds; its sampled flag is off then).
"""

import os
import re

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_LOW_64 = (1 << 64) - 1
# Where the relay finds an event's traceparent without parsing its body (the envelope's
# JSON as pydantic writes it: no spaces).
_IN_BODY = re.compile(r'"traceparent":"([0-9a-f-]{55})"')

Carried = tuple[str, str | None]  # (traceparent, tracestate) for an envelope


def _tracer_of(provider: TracerProvider) -> trace.Tracer:
    return provider.get_tracer("chain")


# Until `configure`: ids only (the simulator, the benchmarks, tests that publish).
_tracer = _tracer_of(TracerProvider(sampler=ALWAYS_OFF))
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


def install(provider: TracerProvider) -> None:
    """Record our spans with `provider` (tests use one with an in-memory exporter)."""
    global _tracer
    _tracer = _tracer_of(provider)


def exporting() -> bool:
    """Whether spans are recorded and exported (else spans are worth no extra work)."""
    return _exporting


def remote(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """The context an envelope's trace attributes name; None if absent or malformed (a
    broken traceparent is ignored, as W3C says, never a reason to refuse the event)."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent} | ({"tracestate": tracestate} if tracestate else {})
    context = _PROPAGATOR.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def case_context(correlationid) -> Context:
    """The case's trace as a parent: trace id = the correlation id, under a root span that
    is never recorded (its id, too, derives from the correlation id: one per case)."""
    value = correlationid.int
    root = SpanContext(trace_id=value, span_id=(value & _LOW_64) or 1, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(root))


def delivery_span(envelope, queue: str) -> Span:
    """The span of applying one delivery, a child of its envelope's trace context (or of
    its case's trace if the producer sent none); the caller ends it once settled."""
    parent = remote(getattr(envelope, "traceparent", None), getattr(envelope, "tracestate", None))
    span = _tracer.start_span(
        f"{queue} process", context=parent or case_context(envelope.correlationid), kind=SpanKind.CONSUMER
    )
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


def carried(span: Span) -> Carried:
    """The trace attributes of an event emitted within `span`."""
    ctx = span.get_span_context()
    state = ctx.trace_state.to_header() if ctx.trace_state else None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}", state or None


def for_case(correlationid, name: str) -> Carried:
    """Trace attributes for an event emitted outside a delivery: a new (producer) span in
    the case's trace."""
    span = _tracer.start_span(name, context=case_context(correlationid), kind=SpanKind.PRODUCER)
    span.end()
    return carried(span)


def in_body(body: str) -> Context | None:
    """The trace context of an envelope's JSON text, without parsing it."""
    match = _IN_BODY.search(body)
    return remote(match.group(1)) if match else None


def publish_span(body: str, exchange: str, event_type: str) -> Span:
    """The relay's span of publishing one event (call only when `exporting()`)."""
    return _tracer.start_span(
        f"{exchange} publish",
        context=in_body(body),
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "rabbitmq", "messaging.operation.type": "send", "cloudevents.event_type": event_type},
    )

