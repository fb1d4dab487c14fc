"""The one envelope every message on the bus wears: CloudEvents 1.0, structured JSON mode.

Extensions: `correlationid` (the whole chain of a case's work), `causationid` (the event
that caused this one) and `sequence` (per source and subject, starting at 1 and increasing
by one), which lets a consumer detect gaps and hold an event until its predecessors arrive;
and CloudEvents' distributed-tracing extension, `traceparent` and `tracestate` (W3C Trace
Context; optional, see shared/tracing.py).
"""

import re
from typing import Any, Literal
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from shared import klokke

CONTENT_TYPE = "application/cloudevents+json"
MAX_MESSAGE_BYTES = 256 * 1024
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A version-00 traceparent has 55 characters (later versions may add fields); W3C asks
# vendors to propagate at least 512 of a tracestate.
TRACE_LIMITS = {"traceparent": 256, "tracestate": 512}

Subject = Field(
    pattern=r"^(sak-[0-9a-z-]{6,60}|kommune-[0-9]{4}|p-[0-9a-f]{16,64})$",
    description="What the event is about: a case (`sak-...`, one per household), a kommune"
    " (`kommune-<kommunenummer>`) or, for kompetanse's notifications, a pseudonymous person (`p-...`)",
)


def _absent(value: object) -> bool:
    return value is None


class Envelope(BaseModel):
    # Other CloudEvents extensions are allowed and carried along untouched.
    model_config = ConfigDict(extra="allow", frozen=True)

    # Defaults for envelopes built in code; a received envelope must carry both (parse_envelope).
    specversion: Literal["1.0"] = Field(default="1.0", description="Required in what you send (CloudEvents)")
    id: UUID = Field(
        default_factory=uuid4,
        description="Unique per event; with `source` the inbox key. Required in what you send: an event without one is dead-lettered",
    )
    source: str = Field(min_length=1, max_length=200, description="Producer, e.g. urn:chain:bosetting")
    type: str = Field(min_length=1, max_length=100, description="Event name; also the AMQP routing key")
    # When it happened, in business time (shared/klokke.py: real time unless simulated).
    time: AwareDatetime = Field(default_factory=lambda: klokke.no())
    subject: str = Subject
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str = Field(min_length=1, max_length=200)
    data: dict[str, Any]
    correlationid: UUID
    causationid: UUID | None = None
    sequence: int = Field(ge=1, description="Per source and subject: 1, 2, 3, ...")
    # Optional and unconstrained beyond length: a malformed trace context is ignored (W3C
    # Trace Context says so), never a reason to dead-letter the event. Left out of the JSON
    # when absent, as CloudEvents wants of an extension attribute without a value.
    traceparent: str | None = Field(
        default=None,
        exclude_if=_absent,
        max_length=TRACE_LIMITS["traceparent"],
        description="W3C Trace Context `traceparent` (CloudEvents distributed-tracing extension), e.g."
        " `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`. An event emitted while handling"
        " another carries its cause's trace id; an event without a cause starts its case's trace",
    )
    tracestate: str | None = Field(
        default=None,
        exclude_if=_absent,
        max_length=TRACE_LIMITS["tracestate"],
        description="W3C Trace Context `tracestate`, vendor trace data carried along",
    )

    @field_validator("traceparent", "tracestate", mode="before")
    @classmethod
    def _drop_malformed_trace(cls, value: object, info: ValidationInfo) -> object:
        """Not a string, or too long: dropped (W3C Trace Context: a participant ignores a
        trace context it cannot read and starts anew), never a reason to refuse the event."""
        return value if isinstance(value, str) and len(value) <= TRACE_LIMITS[info.field_name] else None


def parse_envelope(body: bytes) -> Envelope:
    """Parse a message body; raises ValueError (or pydantic's ValidationError) with a reason."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(body)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
    envelope = Envelope.model_validate_json(body)
    # Filled in when we build an envelope, required when we receive one: an event without
    # an id would get a new one at every delivery, and a redelivery would be applied again.
    missing = [k for k in ("id", "specversion") if k not in envelope.model_fields_set]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    # Control characters in the keys a consumer stores (inbox, sequence) would fail its
    # database write, and with it every event committed in the same batch.
    bad = [k for k in ("source", "type", "subject", "dataschema") if CONTROL.search(getattr(envelope, k))]
    if bad:
        raise ValueError(f"control characters in {', '.join(bad)}")
    return envelope
