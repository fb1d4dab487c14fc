"""The one envelope every message on the bus wears: CloudEvents 1.0, structured JSON mode.

Extensions: `correlationid` (the whole chain of a case's work), `causationid` (the event
that caused this one) and `sequence` (per source and subject, starting at 1 and increasing
by one), which lets a consumer detect gaps and hold an event until its predecessors arrive.
"""

import re
from typing import Any, Literal
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared import klokke

CONTENT_TYPE = "application/cloudevents+json"
MAX_MESSAGE_BYTES = 256 * 1024
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Subject = Field(
    pattern=r"^(sak-[0-9a-z-]{6,60}|kommune-[0-9]{4}|p-[0-9a-f]{16,64})$",
    description="What the event is about: a case (`sak-...`, one per household), a kommune"
    " (`kommune-<kommunenummer>`) or, for kompetanse's notifications, a pseudonymous person (`p-...`)",
)


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
