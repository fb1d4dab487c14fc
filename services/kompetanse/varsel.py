"""Per-consumer notification queues ("hendingar"): notify, then pull.

Kompetanse emits `kompetanse.endra` through its outbox, one per policy that can see a
change, with the AMQP headers `policy`, `kommunenummer` and `fylkesnummer`. The headers
exchange `kompetanse.varsel` gets them from `chain.events`, and each registered consumer's
queue `kompetanse.varsel.<org number>` is bound to what it may know: its policy, and for a
kommune or county its own area. The message carries a pseudonymous id and the names of the
changed fields; the data itself is fetched through the API, where the read is audited.

A notification is a hint that can be re-derived (a consumer can always read again), so a
feed nobody reads is capped (oldest dropped) rather than allowed to block the outbox of
every other consumer.
"""

import aio_pika

from services.kompetanse.policy import Konsument, Policyar
from shared.topology import EVENTS

VARSEL = "kompetanse.varsel"
MAKS_I_KO = 1_000_000


def konsument_ko(k: Konsument) -> str:
    return f"{VARSEL}.{k.slug}"


def binding(policyar: Policyar, k: Konsument) -> dict[str, str]:
    """What a consumer's queue matches: its policy and, for a kommune or county, its area."""
    utval = policyar.policy[k.policy].utval
    match = {"x-match": "all", "policy": k.policy}
    if utval == "kommune":
        match["kommunenummer"] = k.kommunenummer
    if utval == "fylke":
        match["fylkesnummer"] = k.fylkesnummer
    return match


async def deklarer(amqp_url: str, policyar: Policyar) -> None:
    """Declare the exchange and every registered consumer's queue (idempotent)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        events = await channel.declare_exchange(EVENTS, aio_pika.ExchangeType.TOPIC, durable=True)
        varsel = await channel.declare_exchange(VARSEL, aio_pika.ExchangeType.HEADERS, durable=True)
        await varsel.bind(events, "kompetanse.endra")
        for k in policyar.konsument.values():
            queue = await channel.declare_queue(
                konsument_ko(k),
                durable=True,
                arguments={"x-queue-type": "quorum", "x-max-length": MAKS_I_KO, "x-overflow": "drop-head"},
            )
            await queue.bind(varsel, arguments=binding(policyar, k))
