"""The simulated outside world: UDI publishes vedtak, mottak submits mappings, kommunar
answer allocations and register move-ins. It talks to the chain only as real parties
would: events on the bus and the services' HTTP APIs."""

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import aio_pika
import aiohttp

from shared.catalogue import Kategori, MottakStatusEndret
from shared.envelope import parse_envelope
from shared.publish import envelope_for, publish_envelope
from shared.topology import declare_core
from sim.environment import Environment
from sim.workload import Household, agreed_date, capacity, kommune_refuses, mapping_for

UDI = "urn:no:udi"
LISTENS_TO = ("kartlegging.startet", "bosetting.fordelt", "bosetting.avslatt", "bosetting.avtale_inngatt", "bosetting.bosatt")


@dataclass
class Simulator:
    environment: Environment
    households: list[Household]
    queue_name: str = "sim.actors"
    counts: Counter = field(default_factory=Counter)
    published_at: dict[str, float] = field(default_factory=dict)
    settled_at: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    async def __aenter__(self) -> "Simulator":
        cfg = self.environment.settings()
        self.connection = await aio_pika.connect_robust(cfg.amqp_url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        await self.channel.set_qos(prefetch_count=100)
        self.exchange = await declare_core(self.channel, cfg.eventlog_max_age)
        self.queue = await self.channel.declare_queue(self.queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        for key in LISTENS_TO:
            await self.queue.bind(self.exchange, key)
        # aiohttp rather than httpx here: the simulator makes thousands of calls a second
        # and httpx's per-request overhead made it the demo's bottleneck (py-spy).
        self.http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10), connector=aiohttp.TCPConnector(limit=20)
        )
        self.by_sak = {h.sak_id: h for h in self.households}
        self._consumer_tag = await self.queue.consume(self._on_message)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.queue.cancel(self._consumer_tag)
        await self.http.close()
        await self.connection.close()

    # --- set-up and arrivals -------------------------------------------------------------

    async def decide_capacity(self, kommunar: list[tuple[str, int]]) -> None:
        """Each kommune decides its places per group (vedtaksplassar) for the year."""
        for knr, places in capacity(kommunar, self.households).items():
            await self._call("PUT", "bosetting", f"/kommunar/{knr}/kapasitet", places)

    async def publish_vedtak(self, per_second: float) -> None:
        """UDI's decisions arrive at the given rate; mottak reports each resident's status.
        Each tick's arrivals are published together, many confirms in flight."""
        started = time.monotonic()
        due = 0
        while due < len(self.households):
            await asyncio.sleep(0.1)
            until = min(len(self.households), int((time.monotonic() - started) * per_second) + 1)
            await asyncio.gather(*(self._arrive(h) for h in self.households[due:until]))
            due = until

    async def _arrive(self, h: Household) -> None:
        self.published_at[h.sak_id] = time.monotonic()
        await publish_envelope(self.exchange, envelope_for(h.vedtak, h.sak_id, UDI, 1))
        if h.vedtak.mottak_id:
            status = MottakStatusEndret(mottak_id=h.vedtak.mottak_id, status="innkvartert", dato=h.vedtak.vedtaksdato)
            await publish_envelope(self.exchange, envelope_for(status, h.sak_id, f"urn:no:mottak:{h.vedtak.mottak_id}", 1))
        self.counts["vedtak"] += 1

    # --- reactions -----------------------------------------------------------------------

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        envelope = parse_envelope(message.body)
        household = self.by_sak.get(envelope.subject)
        if household is not None:  # events of cases that are not ours are not our business
            try:
                await self._react(envelope, household)
            except Exception as exc:  # a rejected call is a finding of the run, not a reason to stall
                self.counts["errors"] += 1
                self.errors.append(f"{envelope.type}: {exc}"[:300])
        await message.ack()  # after our reaction is done: a crash here means a redelivery

    async def _react(self, envelope, household: Household) -> None:
        data, sak = envelope.data, household.sak_id
        match envelope.type:
            case "kartlegging.startet":
                for person in data["personar"]:
                    await self._call("POST", "kartlegging", f"/kartleggingar/{sak}/personar/{person}", mapping_for(person))
                    self.counts["kartlagde"] += 1
            case "bosetting.fordelt":
                knr = data["kommunenummer"]
                self.counts["fordelt"] += 1
                if kommune_refuses(sak, knr):
                    body = {"svar": "avslatt", "grunn": "no suitable housing available"}
                else:
                    body = {"svar": "akseptert", "busetjingsdato": agreed_date(household.vedtak.vedtaksdato, sak).isoformat()}
                await self._call("POST", "bosetting", f"/kommunar/{knr}/saker/{sak}/svar", body)
            case "bosetting.avslatt":
                self.counts["avslatt"] += 1
            case "bosetting.avtale_inngatt":
                self.counts["avtale"] += 1
                await self._call("POST", "bosetting", f"/saker/{sak}/busetjing", {"busetjingsdato": data["busetjingsdato"]})
            case "bosetting.bosatt":
                if sak not in self.settled_at:
                    self.settled_at[sak] = time.monotonic()
                    self.counts["bosatt"] += 1

    async def _call(self, method: str, service: str, path: str, body: dict) -> None:
        """Call a service, retrying while it is unavailable (it may be restarting).
        Every call here is safe to repeat; 409 means the case has moved on already."""
        url = self.environment.url(service) + path
        for attempt in range(600):
            try:
                async with self.http.request(method, url, json=body) as response:
                    status, text = response.status, await response.text()
            except (aiohttp.ClientError, TimeoutError):
                status, text = None, ""
            if status is not None and (status < 300 or status == 409):
                return
            if status is not None and 400 <= status < 500:
                raise RuntimeError(f"{method} {path} -> {status}: {text[:300]}")
            await asyncio.sleep(min(0.1 * (attempt + 1), 1.0))
        raise TimeoutError(f"{method} {path}: service unavailable")

    # --- progress ------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return len(self.settled_at) == len(self.households)

    def persons(self, kategori: Kategori | None = None) -> int:
        return sum(h.persons for h in self.households if kategori is None or h.vedtak.kategori == kategori)

    def latencies(self) -> list[float]:
        return sorted(self.settled_at[s] - self.published_at[s] for s in self.settled_at if s in self.published_at)
