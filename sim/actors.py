"""The simulated outside world: UDI publishes and corrects vedtak, mottak submits mappings,
an IMDi caseworker confirms, overrides or withdraws, kommunar decide places, answer
allocations and register move-ins. It talks to the chain only as real parties
would: events on the bus and the services' HTTP APIs."""

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import aio_pika
import aiohttp

from shared import klokke
from shared.catalogue import KapasitetRapportert, Kategori, MottakStatusEndret
from shared.envelope import parse_envelope
from shared.publish import envelope_for, publish_envelope
from shared.topology import MOTTAK_INN, declare_core
from sim.environment import Environment
from sim.workload import (
    Household,
    apportion,
    agreed_date,
    kartlegging_dagar,
    capacity,
    caseworker_overrides,
    correction,
    kommune_refuses,
    mapping_for,
    stops_taking,
    syntetisk_fodselsnummer,
    tilleggsplassar,
    withdrawn,
)

UDI = "urn:no:udi"
NAV, OSLO = "0192:889640782", "0192:958935420"  # their registrations in services/kompetanse/policy.toml
SCOPE = {NAV: "imdi:kompetanse/nav", OSLO: "imdi:kompetanse/kommune"}
LISTENS_TO = ("kartlegging.startet", "bosetting.*")


@dataclass
class Simulator:
    environment: Environment
    households: list[Household]
    queue_name: str = "sim.actors"
    counts: Counter = field(default_factory=Counter)
    published_at: dict[str, float] = field(default_factory=dict)
    settled_at: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    kommunenummer: list[str] = field(default_factory=list)  # every kommune, for mapped networks
    withdrawn_cases: set[str] = field(default_factory=set)
    oppmoding: dict[tuple[int, str], dict[str, int]] = field(default_factory=dict)  # IMDi's request per (year, kommune)
    _waiting_before: set[str] = field(default_factory=set)  # fordelingsklar at the last look
    _later: list = field(default_factory=list)

    async def __aenter__(self) -> "Simulator":
        cfg = self.environment.settings()
        self.connection = await aio_pika.connect_robust(cfg.amqp_url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        await self.channel.set_qos(prefetch_count=100)
        self.exchange = await declare_core(self.channel, cfg.eventlog_max_age)
        self.mottak_inn = await self.channel.get_exchange(MOTTAK_INN)
        self.queue = await self.channel.declare_queue(self.queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        for key in LISTENS_TO:
            await self.queue.bind(self.exchange, key)
        # aiohttp rather than httpx here: the simulator makes thousands of calls a second
        # and httpx's per-request overhead made it the demo's bottleneck (py-spy).
        self.http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10), connector=aiohttp.TCPConnector(limit=20)
        )
        # Other parties (IMDi's identity register, NAV, a kommune reading competence data)
        # have connections of their own: they must not queue the case work behind them.
        self.partar = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), connector=aiohttp.TCPConnector(limit=10))
        self.by_sak = {h.sak_id: h for h in self.households}
        self.imdi = self.environment.token("imdi:sim-caseworker")
        self._consumer_tag = await self.queue.consume(self._on_message)
        return self

    async def __aexit__(self, *exc) -> None:
        for task in self._later:
            task.cancel()
        await self.queue.cancel(self._consumer_tag)
        await self.http.close()
        await self.partar.close()
        await self.connection.close()

    # --- set-up and arrivals -------------------------------------------------------------

    async def decide_capacity(self, kommunar: list[tuple[str, int, bool]], year: int) -> None:
        """IMDi asks every kommune for places (anmodning); each kommune decides its places
        per group (vedtak); a few report that they cannot take new allocations now."""
        places = capacity(kommunar, self.households)
        # Places already used this year stay used: a kommune that settled households in an
        # earlier run (the tests share one environment) decides enough for these ones on top.
        used = {k["kommunenummer"]: k.get("kapasitet") or {} for k in await self._get("bosetting", "/kommunar", self.imdi)}
        places = {
            knr: {g: n + (used.get(knr, {}).get(g) or {}).get("brukt", 0) for g, n in p.items()} for knr, p in places.items()
        }
        # IMDi asked for 38,000 places in 2023 and the kommunar decided 36,082 (DOMAIN.md).
        cells = {(knr, g): n for knr, p in places.items() for g, n in p.items()}
        requested = apportion(round(sum(cells.values()) * 38_000 / 36_082), cells)
        asked = {knr: {g: requested[(knr, g)] for g in p} for knr, p in places.items()}
        self.counts["oppmoda"] += sum(sum(p.values()) for p in asked.values())
        self.oppmoding |= {(year, knr): p for knr, p in asked.items()}
        await self._call("PUT", "bosetting", f"/anmodningar/{year}", {"kommunar": asked}, token=self.imdi)
        await asyncio.gather(*(
            self._call("PUT", "bosetting", f"/kommunar/{knr}/vedtak/{year}", p, token=self._kommune(knr))
            for knr, p in places.items()
        ))
        for knr, _, _ in kommunar:
            if stops_taking(knr):  # as an event on the bus, as a kommune's system would
                report = KapasitetRapportert(kommunenummer=knr, dato=klokke.idag(), tek_imot=False, ledige_bustader=0)
                await publish_envelope(self.exchange, envelope_for(report, f"kommune-{knr}", f"urn:no:kommune:{knr}", 1))
                self.counts["stopp"] += 1

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

    async def publish_aar(self) -> None:
        """A compressed year: each decision is published when the business clock
        (shared/klokke.py) reaches its date, so vedtaksdato is the day it arrives."""
        due = 0
        while due < len(self.households):
            idag = klokke.idag()
            until = due
            while until < len(self.households) and self.households[until].vedtak.vedtaksdato <= idag:
                until += 1
            await asyncio.gather(*(self._arrive(h) for h in self.households[due:until]))
            due = until
            await asyncio.sleep(0.1)

    async def _vent(self, dagar: float) -> None:
        """Wait `dagar` of business time: nothing under the real clock (the tests), the
        compressed equivalent under a simulated one."""
        if fart := klokke.fart():
            await asyncio.sleep(dagar * 86400 / fart)

    async def _arrive(self, h: Household) -> None:
        self.published_at[h.sak_id] = time.monotonic()
        await publish_envelope(self.exchange, envelope_for(h.vedtak, h.sak_id, UDI, 1))
        if h.vedtak.mottak_id:
            status = MottakStatusEndret(mottak_id=h.vedtak.mottak_id, status="innkvartert", dato=h.vedtak.vedtaksdato)
            # as a mottak system does: on its intake exchange, which kartlegging validates
            await publish_envelope(self.mottak_inn, envelope_for(status, h.sak_id, f"urn:no:mottak:{h.vedtak.mottak_id}", 1))
        if (korrigert := correction(h)) is not None:
            self._later.append(asyncio.create_task(self._correct(h, korrigert)))
        self.counts["vedtak"] += 1
        # IMDi links each pseudonym to its (synthetic) fødselsnummer in kompetanse, which
        # keeps it encrypted; consumers may then look persons up by it.
        await asyncio.gather(*(
            self._call("PUT", "kompetanse", f"/identitetar/{p.person_id}",
                       {"fodselsnummer": syntetisk_fodselsnummer(p.person_id, p.fodselsar), "skjerma": p.skjerma},
                       token=self.imdi, session=self.partar)
            for p in h.vedtak.personar
        ))

    async def _correct(self, h: Household, korrigert) -> None:
        """UDI corrects the household a little later, wherever its case is by then."""
        await asyncio.sleep(1.5)
        await publish_envelope(self.exchange, envelope_for(korrigert, h.sak_id, UDI, 2))
        self.counts["korrigert"] += 1

    # --- the caseworker ----------------------------------------------------------------

    async def caseworker(self, interval: float = 0.5, places_every: float = 4.0) -> None:
        """IMDi's caseworker: confirms the optimiser's proposals in batches, overrides a few
        to the best alternative (with a reason), withdraws cases that have left, and asks
        kommunar for more places when a waiting household fits nowhere."""
        places_checked = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                proposals = await self._get("bosetting", "/forslag?status=open&limit=1000", self.imdi)
            except (aiohttp.ClientError, TimeoutError):
                continue  # bosetting is restarting: look again next time
            try:
                await self._review(proposals)
                if time.monotonic() - places_checked > places_every:
                    places_checked = time.monotonic()
                    await self._ask_for_places()
            except aiohttp.ClientResponseError as exc:
                if exc.status != 503:  # 503: "try again" (its database restarting): next round
                    self._caseworker_error(exc)
            except (aiohttp.ClientConnectionError, TimeoutError):
                continue  # bosetting is restarting: look again next time
            except Exception as exc:
                self._caseworker_error(exc)

    def _caseworker_error(self, exc: Exception) -> None:
        """A finding of the run, not a reason to stop reviewing."""
        self.counts["errors"] += 1
        self.errors.append(f"caseworker: {exc}"[:300])

    async def _ask_for_places(self) -> None:
        """IMDi's extra request (tilleggsoppmoding): decided places are only 7% above the
        year's need, so late in a run a large household may fit in no kommune's free places;
        the kommune asked decides more (sim/workload.py: tilleggsplassar). Only households
        still waiting since the last look count: one the allocator is placing right now
        would be counted both as waiting and in the places it takes."""
        kommunar = await self._get("bosetting", "/kommunar", self.imdi)
        waiting: dict[str, tuple[str, int, list[str]]] = {}
        offset = 0
        while True:
            rows = await self._get("bosetting", f"/saker?status=fordelingsklar&limit=1000&offset={offset}", self.imdi)
            waiting |= {r["sak_id"]: (r["kategori"], r["tal_personar"], r["avslatt_av"]) for r in rows if r["sak_id"] in self.by_sak}
            if len(rows) < 1000:
                break
            offset += len(rows)
        still = [w for sak, w in waiting.items() if sak in self._waiting_before]
        self._waiting_before = set(waiting)
        decided = {k["kommunenummer"]: {g: c["plassar"] for g, c in k["kapasitet"].items()} for k in kommunar}
        # This business year's decision: past the year's end (the last households of a
        # compressed year) the places come from next year's.
        year = klokke.idag().year
        for knr, places in tilleggsplassar(still, kommunar).items():
            # IMDi raises its request by what it asks for (in 2023 from 35,000 to 38,000),
            # then the kommune decides.
            extra = {g: n - decided[knr].get(g, 0) for g, n in places.items()}
            request = self.oppmoding.get((year, knr), {})
            self.oppmoding[(year, knr)] = {g: request.get(g, 0) + extra[g] for g in places}
            await self._call("PUT", "bosetting", f"/anmodningar/{year}", {"kommunar": {knr: self.oppmoding[(year, knr)]}}, token=self.imdi)
            await self._call("PUT", "bosetting", f"/kommunar/{knr}/vedtak/{year}", places, token=self._kommune(knr))
            self.counts["tilleggsoppmoding"] += 1
            self.counts["tilleggsplassar"] += sum(extra.values())

    async def _review(self, proposals: list[dict]) -> None:
        confirm = []
        for p in proposals:
            sak = p["sak_id"]
            if sak not in self.by_sak:
                continue
            if withdrawn(sak):
                await self._call("POST", "bosetting", f"/saker/{sak}/trekking",
                                 {"arsak": "utreist", "grunn": "left Norway before settlement"}, token=self.imdi)
            elif caseworker_overrides(sak) and p["alternativ"] and await self._override(sak, p["alternativ"][0]):
                self.counts["overstyrt"] += 1
            else:
                confirm.append(sak)
        for batch in (confirm[i:i + 200] for i in range(0, len(confirm), 200)):
            await self._call("POST", "bosetting", "/forslag/stadfesting", {"sak_ids": batch}, token=self.imdi)
            self.counts["stadfesta"] += len(batch)

    async def _override(self, sak: str, alternative: dict) -> bool:
        body = {"kommunenummer": alternative["kommunenummer"], "grunn": "the family's network lives there"}
        status = await self._call("POST", "bosetting", f"/saker/{sak}/overstyring", body, token=self.imdi)
        return status < 300

    # --- consumers of competence data --------------------------------------------------

    async def konsument(self, org: str, formal: str) -> None:
        """An authorised consumer (NAV, a kommune): notify, then pull. It reads its own
        notification queue and fetches each notified person through the kompetanse API
        with its Maskinporten token; the read is audited there. Runs until cancelled."""
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=20)
        queue = await channel.get_queue(f"kompetanse.varsel.{org.split(':')[1]}", ensure=True)
        token = {"t": self.environment.maskinporten_token(org, SCOPE[org]), "at": time.monotonic()}
        try:
            async with queue.iterator() as messages:
                async for message in messages:
                    person = parse_envelope(message.body).data["person_id"]
                    if time.monotonic() - token["at"] > 60:  # Maskinporten tokens live two minutes
                        token.update(t=self.environment.maskinporten_token(org, SCOPE[org]), at=time.monotonic())
                    url = f"{self.environment.url('kompetanse')}/personar/{person}/kompetanse?formal={formal}"
                    async with self.partar.get(url, headers={"Authorization": f"Bearer {token['t']}"}) as r:
                        self.counts[f"{org}:{r.status}"] += 1
                    self.counts[f"{org}:varsel"] += 1
                    await message.ack()
        finally:
            await channel.close()

    async def feeds_drained(self, *orgs: str) -> bool:
        """Have these consumers read every notification so far?"""
        channel = await self.connection.channel()
        try:
            for org in orgs:
                queue = await channel.declare_queue(f"kompetanse.varsel.{org.split(':')[1]}", passive=True)
                if queue.declaration_result.message_count:
                    return False
            return True
        finally:
            await channel.close()

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
                # The mottak maps its residents over some weeks (none under the real clock):
                # later, in a task of its own, so the actor queue keeps flowing.
                self._later.append(asyncio.create_task(self._kartlegg(household, data)))
            case "bosetting.fordelt":
                knr = data["kommunenummer"]
                self.counts["fordelt"] += 1
                if kommune_refuses(sak, knr):
                    body = {"svar": "avslatt", "grunn": "no suitable housing available"}
                else:
                    body = {"svar": "akseptert", "busetjingsdato": agreed_date(klokke.idag(), sak).isoformat()}
                await self._call("POST", "bosetting", f"/kommunar/{knr}/saker/{sak}/svar", body, token=self._kommune(knr))
            case "bosetting.avtale_inngatt":
                self.counts["avtale"] += 1
                knr = data["kommunenummer"]
                body = {"busetjingsdato": data["busetjingsdato"]}
                await self._call("POST", "bosetting", f"/kommunar/{knr}/saker/{sak}/busetjing", body, token=self._kommune(knr))
            case "bosetting.bosatt":
                if sak not in self.settled_at:
                    self.settled_at[sak] = time.monotonic()
                    self.counts["bosatt"] += 1
            case "bosetting.trukke":
                if sak not in self.withdrawn_cases:
                    self.withdrawn_cases.add(sak)
                    self.counts["trukke"] += 1
            case _:  # avslått, fordeling oppheva, frist nærmar / overskriden: counted
                self.counts[envelope.type.removeprefix("bosetting.")] += 1

    async def _kartlegg(self, household: Household, data: dict) -> None:
        sak = household.sak_id
        await self._vent(kartlegging_dagar(sak))
        try:
            for person in data["personar"]:
                body = mapping_for(person, self.kommunenummer, data["kartleggingstype"])
                path = f"/kartleggingar/{sak}/personar/{person}"
                if household.vedtak.privatbuande:  # no mottak: the person maps themself
                    token = self.environment.token(f"person:{person}")
                    await self._call("POST", "kartlegging", path + "/sjolvregistrering", body, token=token)
                else:  # the mottak's system, or IMDi for resettlement refugees mapped abroad
                    mottak = household.vedtak.mottak_id
                    token = self.environment.token(f"mottak:{mottak}" if mottak else "imdi:sim-caseworker")
                    await self._call("POST", "kartlegging", path, body, token=token)
                self.counts["kartlagde"] += 1
        except Exception as exc:  # a rejected call is a finding of the run
            self.counts["errors"] += 1
            self.errors.append(f"kartlegging: {exc}"[:300])

    def _kommune(self, knr: str) -> str:
        return self.environment.token(f"kommune:{knr}")

    async def _get(self, service: str, path: str, token: str):
        async with self.http.get(self.environment.url(service) + path, headers={"Authorization": f"Bearer {token}"}) as r:
            r.raise_for_status()
            return await r.json()

    async def _call(self, method: str, service: str, path: str, body: dict, token: str | None = None, session: aiohttp.ClientSession | None = None) -> int:
        """Call a service, retrying while it is unavailable (it may be restarting).
        Every call here is safe to repeat; 409 means the case has moved on already."""
        url = self.environment.url(service) + path
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for attempt in range(600):
            try:
                async with (session or self.http).request(method, url, json=body, headers=headers) as response:
                    status, text = response.status, await response.text()
            except (aiohttp.ClientError, TimeoutError):
                status, text = None, ""
            if status is not None and (status < 300 or status == 409):
                return status
            if status is not None and 400 <= status < 500:
                raise RuntimeError(f"{method} {path} -> {status}: {text[:300]}")
            await asyncio.sleep(min(0.1 * (attempt + 1), 1.0))
        raise TimeoutError(f"{method} {path}: service unavailable")

    # --- progress ------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Every case finished: settled, or withdrawn by the caseworker."""
        return len(self.settled_at) + len(self.withdrawn_cases) == len(self.households)

    def persons(self, kategori: Kategori | None = None) -> int:
        return sum(h.persons for h in self.households if kategori is None or h.vedtak.kategori == kategori)

    def latencies(self) -> list[float]:
        return sorted(self.settled_at[s] - self.published_at[s] for s in self.settled_at if s in self.published_at)
