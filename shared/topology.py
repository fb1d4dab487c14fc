"""RabbitMQ topology as code, declared idempotently by every process at start.

- `chain.events`: durable topic exchange; the routing key is the event name.
- `mottak.inn`: durable topic exchange where reception-centre systems publish `mottak.*`
  events with their own, confined users; only kartlegging's intake queue reads it, and
  kartlegging puts what passes validation on `chain.events`. Whatever a mottak system
  sends, the chain's own queues never see it unvalidated.
- per consuming service: a quorum queue named after it, bound to the event names it wants,
  with a delivery limit and at-least-once dead-lettering to `chain.dlx` -> `<queue>.dlq`;
- delayed retries: `<queue>.retry.<n>` quorum queues whose message TTL sends the message
  back to the service queue (through the default exchange) after the tier's delay;
- `chain.eventlog`: a stream bound to `#` that keeps every event for replay.

Queue arguments cannot change after declaration: change a queue's arguments by giving it
a new name and migrating, never in place.
"""

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

EVENTS = "chain.events"
MOTTAK_INN = "mottak.inn"
DLX = "chain.dlx"
EVENTLOG = "chain.eventlog"
DELIVERY_LIMIT = 20  # a message that crashes its consumer this often is dead-lettered by the broker


@dataclass(frozen=True)
class ServiceQueue:
    name: str
    bindings: tuple[str, ...]
    retry_delays_ms: tuple[int, ...] = (200, 1000, 5000, 30000)
    exchange: str = EVENTS  # where the bindings are made

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    def retry_queue(self, tier: int) -> str:
        return f"{self.name}.retry.{self.retry_delays_ms[tier]}ms"


def _quorum_args(**extra) -> dict:
    return {"x-queue-type": "quorum", **extra}


async def declare_core(channel: AbstractChannel, eventlog_max_age: str = "365D") -> AbstractExchange:
    events = await channel.declare_exchange(EVENTS, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(MOTTAK_INN, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(DLX, aio_pika.ExchangeType.DIRECT, durable=True)
    log = await channel.declare_queue(
        EVENTLOG, durable=True, arguments={"x-queue-type": "stream", "x-max-age": eventlog_max_age}
    )
    await log.bind(events, "#")
    return events


async def declare_service(channel: AbstractChannel, sq: ServiceQueue) -> None:
    events = await channel.get_exchange(sq.exchange)
    dlx = await channel.get_exchange(DLX)
    queue = await channel.declare_queue(
        sq.name,
        durable=True,
        arguments=_quorum_args(
            **{
                "x-delivery-limit": DELIVERY_LIMIT,
                "x-dead-letter-exchange": DLX,
                "x-dead-letter-routing-key": sq.name,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            }
        ),
    )
    for key in sq.bindings:
        await queue.bind(events, key)
    dlq = await channel.declare_queue(sq.dlq, durable=True, arguments=_quorum_args())
    await dlq.bind(dlx, sq.name)
    for tier, delay in enumerate(sq.retry_delays_ms):
        await channel.declare_queue(
            sq.retry_queue(tier),
            durable=True,
            arguments=_quorum_args(
                **{
                    "x-message-ttl": delay,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": sq.name,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                }
            ),
        )


# A broker that accepts the TCP connection but never answers the AMQP handshake (stopped
# with `rabbitmqctl stop_app`, or overloaded) left a starting service waiting forever,
# never ready and never restarted; now it fails and is restarted.
CONNECT_TIMEOUT = 30.0


async def declare_all(url: str, queues: list[ServiceQueue], eventlog_max_age: str = "365D", connect_timeout: float = CONNECT_TIMEOUT) -> None:
    connection = await aio_pika.connect(url, timeout=connect_timeout)
    async with connection:
        channel = await connection.channel()
        await declare_core(channel, eventlog_max_age)
        for sq in queues:
            await declare_service(channel, sq)
