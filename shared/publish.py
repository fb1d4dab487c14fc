"""Publishing an event from outside a service (UDI, a mottak system, tests), with confirms.

Services never publish directly: they emit through their outbox. External producers own
their `source` and number each case's events 1, 2, 3, ... in `sequence`.
"""

from uuid import UUID, uuid4

import aio_pika

from shared import tracing
from shared.catalogue import EventData, event_type_of
from shared.envelope import CONTENT_TYPE, Envelope


def envelope_for(
    data: EventData, subject: str, source: str, sequence: int, correlationid: UUID | None = None
) -> Envelope:
    """An event starting (or continuing) its case's work: in the case's trace, whose trace
    id is the correlation id (shared/tracing.py)."""
    et = event_type_of(data)
    correlationid = correlationid or uuid4()
    traceparent, tracestate = tracing.for_case(correlationid, f"{source} publish")
    return Envelope(
        source=source,
        type=et.name,
        subject=subject,
        dataschema=et.dataschema,
        data=data.model_dump(mode="json"),
        correlationid=correlationid,
        sequence=sequence,
        traceparent=traceparent,
        tracestate=tracestate,
    )


async def publish_envelope(exchange: aio_pika.abc.AbstractExchange, envelope: Envelope) -> None:
    await publish_raw(exchange, envelope.type, envelope.model_dump_json().encode(), str(envelope.id))


async def publish_raw(exchange: aio_pika.abc.AbstractExchange, routing_key: str, body: bytes, message_id: str | None = None) -> None:
    await exchange.publish(
        aio_pika.Message(
            body=body,
            content_type=CONTENT_TYPE,
            message_id=message_id,
            type=routing_key,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=routing_key,
    )
