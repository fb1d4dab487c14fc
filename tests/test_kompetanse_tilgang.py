"""Kompetanse's authorised access (issue 5), in-process against a real PostgreSQL database
and, for the notification feeds, the real RabbitMQ: Maskinporten tokens refused for each
reason, each consumer policy (NAV, kommune, fylke), protected identity never served,
fødselsnummer encrypted at rest and found by keyed hash, every read audited, and each
consumer's queue receiving only what it may know."""

import asyncio
import contextlib
import json
import random
from pathlib import Path

import aio_pika
import asyncpg
import pytest
from aiormq.exceptions import ChannelAccessRefused, ChannelClosed

from services.kompetanse import api, handlers, identitet, innsyn, revisjon, store, varsel
from services.kompetanse.policy import last
from shared import maskinporten
from shared.catalogue import (
    Arbeidserfaring,
    Avslatt,
    Bosatt,
    Fordelt,
    Karriererettleiing,
    KartleggingFullfort,
    Kartleggingstype,
    Kategori,
    SaerlegeBehovFlagga,
    Sprak,
    Utdanning,
    VedtakPerson,
)
from shared.outbox import Relay, unit_of_work
from shared.publish import envelope_for
from sim.tilgang import legg_til_konsument
from tests.conftest import eventually
from tests.events import new_person_id, new_sak_id, vedtak
from tests.harness import in_process_service

NAV, OSLO, BERGEN, VESTLAND = "0192:889640782", "0192:958935420", "0192:964338531", "0192:821311632"
SCOPE = {
    NAV: "imdi:kompetanse/nav",
    OSLO: "imdi:kompetanse/kommune",
    BERGEN: "imdi:kompetanse/kommune",
    VESTLAND: "imdi:kompetanse/fylke",
}
FORMAL = {NAV: "arbeidsretta_oppfolging", OSLO: "busetting", BERGEN: "busetting", VESTLAND: "karriererettleiing"}
AUD = "https://kompetanse.chain.local"
UDI, KARTLEGGING, BOSETTING = "urn:no:udi", "urn:chain:kartlegging", "urn:chain:bosetting"


def fnr() -> str:
    while True:
        if (n := identitet.med_kontrollsiffer(f"{random.randint(1, 28):02d}{random.randint(1, 12):02d}{random.randint(50, 99)}{random.randint(100, 999)}")):
            return n


class Kompetanse:
    def __init__(self, rt, http, keys: Path) -> None:
        self.rt, self.http, self.keys = rt, http, keys
        self.seq: dict[tuple[str, str], int] = {}

    @property
    def pool(self) -> asyncpg.Pool:
        return self.rt.pool

    def token(self, org: str, scope: str | None = "", **extra) -> dict:
        """A token for `org` with its policy's scope, or `scope`; scope=None: no scope claim."""
        if scope is None:
            extra["scope"] = None
        scope = scope or SCOPE.get(org, "imdi:kompetanse/nav")
        t = maskinporten.lag_token(self.keys, scope=scope, org=org, klient_id=f"klient-{org[-3:]}", audience=AUD, extra=extra or None)
        return {"Authorization": f"Bearer {t}"}

    async def event(self, data, subject: str, source: str) -> None:
        """Apply one event as the river would hand it to the handler."""
        n = self.seq[(source, subject)] = self.seq.get((source, subject), 0) + 1
        envelope = envelope_for(data, subject, source, n)
        async with unit_of_work(self.pool, self.rt.source, envelope) as uow:
            await handlers.EVENT_HANDLERS[envelope.type](uow, envelope, data)

    async def mapped_household(self, kommune: str | None = None, *, skjerma: bool = False, bosatt: bool = False) -> tuple[str, list[str]]:
        """A household of two adults, mapped; allocated to (and settled in) `kommune`."""
        sak = new_sak_id()
        v = vedtak(2, 0, Kategori.vaksen)
        if skjerma:
            v = v.model_copy(update={"personar": [VedtakPerson(**p.model_dump() | {"skjerma": True}) for p in v.personar]})
        await self.event(v, sak, UDI)
        ids = [p.person_id for p in v.personar]
        for pid in ids:
            await self.event(
                KartleggingFullfort(
                    person_id=pid,
                    kartleggingstype=Kartleggingstype.ordinaer,
                    utdanning=Utdanning(niva="bachelor", ar=15, fagfelt="sjukepleie"),
                    arbeid=[Arbeidserfaring(yrke="sjukepleiar", sektor="helse", ar=6)],
                    sprak=[Sprak(sprak="arabisk", niva="morsmal")],
                    saerlege_behov=["tilrettelagt_bustad"],
                    forerkort="B",
                    sak_komplett=pid == ids[-1],
                ),
                sak,
                KARTLEGGING,
            )
        if kommune:
            await self.event(Fordelt(reg_nummer=v.reg_nummer, kommunenummer=kommune, kategori=v.kategori, personar=ids), sak, BOSETTING)
        if bosatt:
            await self.event(
                Bosatt(kommunenummer=kommune, busetjingsdato=v.vedtaksdato, kategori=v.kategori, personar=ids, vedtaksdato=v.vedtaksdato),
                sak,
                BOSETTING,
            )
        return sak, ids

    async def get(self, org: str, person_id: str, formal: str | None = None, **token):
        return await self.http.get(
            f"/personar/{person_id}/kompetanse", params={"formal": formal or FORMAL[org]}, headers=self.token(org, **token)
        )

    async def revisjon(self) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return await store.revisjon_rader(conn, 0, 1_000_000)


@pytest.fixture(scope="module")
async def k(env, tmp_path_factory):
    keys = tmp_path_factory.mktemp("maskinporten")
    maskinporten.lag_nokkel(keys)
    cfg = env.settings()
    original = api.verifikator
    api.verifikator = lambda: V
    V = maskinporten.Verifikator({maskinporten.DEV_UTFERDAR: str(keys / "jwks.json")}, AUD)
    imdi = {"Authorization": f"Bearer {env.token('imdi:register')}"}
    try:
        async with in_process_service(cfg, "kompetanse", "tilgang_kompetanse", handlers.EVENT_HANDLERS, [api.router, innsyn.router]) as (rt, http):
            service = Kompetanse(rt, http, keys)
            service.imdi = imdi
            yield service
    finally:
        api.verifikator = original


def assert_problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    return r.json()


# --- tokens: each rejected kind ----------------------------------------------------------


async def test_a_valid_token_reads_and_each_broken_token_is_refused_with_its_reason(k, tmp_path):
    _, (pid, _) = await k.mapped_household()
    assert (await k.get(NAV, pid)).status_code == 200

    other = tmp_path / "other"
    maskinporten.lag_nokkel(other)
    forged = maskinporten.lag_token(other, scope=SCOPE[NAV], org=NAV, klient_id="x", audience=AUD)
    header = maskinporten._b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = k.token(NAV)["Authorization"].split(".")[1]
    cases = {
        "wrong issuer": (k.token(NAV, iss="https://maskinporten.no/"), "issuer is not trusted"),
        "wrong audience": (k.token(NAV, aud="https://other.api/"), "wrong audience"),
        "expired": (k.token(NAV, iat=1_700_000_000, exp=1_700_000_120), "token expired"),
        "unsigned (alg none)": ({"Authorization": f"Bearer {header}.{payload}."}, "algorithm none is not allowed"),
        "signed by an untrusted key": ({"Authorization": f"Bearer {forged}"}, None),
        "no consumer": (k.token(NAV, consumer=None), "missing or malformed consumer"),
        "no scope claim": (k.token(NAV, scope=None), "missing claim scope"),
    }
    for name, (headers, reason) in cases.items():
        r = await k.http.get(f"/personar/{pid}/kompetanse", params={"formal": FORMAL[NAV]}, headers=headers)
        body = assert_problem(r, 401)
        if reason:
            assert body["detail"] == reason, name
        assert "eyJ" not in r.text  # the token is never echoed

    # authenticated but not authorised: 403 with the reason
    missing_scope = assert_problem(await k.get(NAV, pid, scope="imdi:kompetanse/statistikk"), 403)
    assert missing_scope["detail"] == "the token lacks scope imdi:kompetanse/nav, required by this consumer's policy"
    unknown_consumer = assert_problem(await k.get("0192:999999999", pid, formal=FORMAL[NAV], scope=SCOPE[NAV]), 403)
    assert unknown_consumer["detail"] == "the consumer organisation is not registered for individual competence data"
    # a kommune holding NAV's scope is still a kommune: its own policy's scope is required
    assert_problem(await k.get(OSLO, pid, formal=FORMAL[NAV], scope=SCOPE[NAV]), 403)


# --- the policies ------------------------------------------------------------------------


async def test_nav_sees_education_work_languages_and_the_guidance_note_only(k):
    sak, (pid, _) = await k.mapped_household("4601")
    await k.event(Karriererettleiing(person_id=pid, fylkesnummer="46", dato="2024-05-02", notat="vil tilbake til sjukepleie"), sak, KARTLEGGING)
    body = (await k.get(NAV, pid)).json()
    assert set(body) == {"person_id", "utdanning", "arbeid", "sprak", "karriererettleiing"}
    assert body["utdanning"]["niva"] == "bachelor" and body["arbeid"][0]["yrke"] == "sjukepleiar"
    assert body["karriererettleiing"]["notat"] == "vil tilbake til sjukepleie"
    purpose = assert_problem(await k.get(NAV, pid, formal="busetting"), 403)
    assert purpose["detail"].startswith("purpose 'busetting' is not permitted")


async def test_a_kommune_sees_its_own_allocated_and_settled_persons_with_adaptation_needs(k):
    f = fnr()
    sak, (pid, _) = await k.mapped_household("4601")
    assert (await k.http.put(f"/identitetar/{pid}", json={"fodselsnummer": f}, headers=k.imdi)).status_code == 204
    await k.event(SaerlegeBehovFlagga(mottak_id="mottak-01", person_id=pid, behov=["oppfolging_helse"], dato="2024-01-02"), sak, KARTLEGGING)

    body = (await k.get(BERGEN, pid)).json()
    assert set(body) == {"person_id", *last().policy["kommune"].felt}
    assert body["saerlege_behov"] == ["oppfolging_helse", "tilrettelagt_bustad"]
    assert body["fodselsnummer"] == f and body["kommunenummer"] == "4601" and body["bosatt"] is False
    oslo = assert_problem(await k.get(OSLO, pid), 403)
    assert oslo["detail"] == "the person is not allocated to or settled in kommune 0301"

    # refused by Bergen: Bergen loses access; allocated to and settled in Oslo: Oslo has it
    await k.event(Avslatt(kommunenummer="4601", grunn="ingen bustad"), sak, BOSETTING)
    assert_problem(await k.get(BERGEN, pid), 403)
    v_personar = [pid]
    await k.event(Fordelt(reg_nummer="REG-ABCD1234", kommunenummer="0301", kategori=Kategori.vaksen, personar=v_personar), sak, BOSETTING)
    await k.event(
        Bosatt(kommunenummer="0301", busetjingsdato="2024-02-01", kategori=Kategori.vaksen, personar=v_personar, vedtaksdato="2023-03-01"),
        sak,
        BOSETTING,
    )
    assert (await k.get(OSLO, pid)).json()["bosatt"] is True
    assert_problem(await k.get(BERGEN, pid), 403)


async def test_a_kommune_sees_an_unmapped_child_allocated_to_it_and_nav_does_not(k):
    sak, v = new_sak_id(), vedtak(1, 1, Kategori.barnefamilie)
    await k.event(v, sak, UDI)
    child = v.personar[1].person_id
    f = fnr()
    assert (await k.http.put(f"/identitetar/{child}", json={"fodselsnummer": f}, headers=k.imdi)).status_code == 204
    assert_problem(await k.get(BERGEN, child), 403)  # not Bergen's yet
    await k.event(Fordelt(reg_nummer=v.reg_nummer, kommunenummer="4601", kategori=v.kategori, personar=[p.person_id for p in v.personar]), sak, BOSETTING)
    body = (await k.get(BERGEN, child)).json()
    assert (body["fodselsnummer"], body["kategori"], body["utdanning"]) == (f, "barnefamilie", None)
    assert_problem(await k.get(NAV, child), 404)  # nothing NAV's policy grants has a value


async def test_a_county_sees_what_career_guidance_needs_in_its_own_kommunar(k):
    _, (i_vestland, _) = await k.mapped_household("4601", bosatt=True)
    _, (i_oslo, _) = await k.mapped_household("0301")
    _, (ikkje_fordelt, _) = await k.mapped_household()
    body = (await k.get(VESTLAND, i_vestland)).json()
    assert set(body) == {"person_id", *last().policy["fylke"].felt}
    assert "saerlege_behov" not in body and "fodselsnummer" not in body
    for pid in (i_oslo, ikkje_fordelt):
        assert assert_problem(await k.get(VESTLAND, pid), 403)["detail"] == "the person is not allocated to or settled in county 46"


async def test_protected_persons_are_never_served_to_anyone(k):
    _, (pid, _) = await k.mapped_household("4601", skjerma=True)  # a mapping that should never have happened
    for org in (NAV, BERGEN, VESTLAND):
        assert assert_problem(await k.get(org, pid), 404)["title"] == "No competence data for this person"
    # protection registered by IMDi later hides a person who was visible
    f = fnr()
    _, (synleg, _) = await k.mapped_household("4601")
    assert (await k.get(NAV, synleg)).status_code == 200
    r = await k.http.put(f"/identitetar/{synleg}", json={"fodselsnummer": f, "skjerma": True}, headers=k.imdi)
    assert r.status_code == 204
    assert_problem(await k.get(NAV, synleg), 404)
    lookup = await k.http.post("/personar/oppslag", json={"fodselsnummer": f, "formal": FORMAL[BERGEN]}, headers=k.token(BERGEN))
    assert_problem(lookup, 404)  # exactly like an unknown number


# --- fødselsnummer -----------------------------------------------------------------------


async def test_fodselsnummer_is_encrypted_at_rest_and_found_by_keyed_hash(k):
    f = fnr()
    _, (pid, _) = await k.mapped_household("4601")
    assert (await k.http.put(f"/identitetar/{pid}", json={"fodselsnummer": f}, headers=k.imdi)).status_code == 204
    assert (await k.http.put(f"/identitetar/{pid}", json={"fodselsnummer": f}, headers=k.imdi)).status_code == 204  # idempotent

    row = await k.pool.fetchrow("SELECT * FROM identitet WHERE person_id = $1", pid)
    dump = b"".join(bytes(v) if isinstance(v, bytes | bytearray) else str(v).encode() for v in row.values())
    assert f.encode() not in dump
    assert row["oppslag"] != __import__("hashlib").sha256(f.encode()).digest()  # keyed, not a plain hash
    everything = await k.pool.fetchval("SELECT string_agg(t::text, ' ') FROM (SELECT * FROM profil UNION ALL SELECT * FROM profil) t")
    assert f not in (everything or "")

    r = await k.http.post("/personar/oppslag", json={"fodselsnummer": f, "formal": FORMAL[NAV]}, headers=k.token(NAV))
    assert r.status_code == 200 and r.json()["person_id"] == pid
    assert_problem(await k.http.post("/personar/oppslag", json={"fodselsnummer": fnr(), "formal": FORMAL[NAV]}, headers=k.token(NAV)), 404)

    bad = await k.http.post("/personar/oppslag", json={"fodselsnummer": f[:-1] + str((int(f[-1]) + 1) % 10), "formal": FORMAL[NAV]}, headers=k.token(NAV))
    assert_problem(bad, 422)
    assert f[:-1] not in bad.text  # the submitted number is never echoed

    other_person = new_person_id()
    assert_problem(await k.http.put(f"/identitetar/{other_person}", json={"fodselsnummer": f}, headers=k.imdi), 409)
    assert_problem(await k.http.put(f"/identitetar/{pid}", json={"fodselsnummer": f}, headers=k.token(NAV)), 401)
    kommune = {"Authorization": f"Bearer {__import__('shared.tokens', fromlist=['issue']).issue(k.rt.settings.token_secret, 'kommune:4601')}"}
    assert_problem(await k.http.put(f"/identitetar/{pid}", json={"fodselsnummer": f}, headers=kommune), 403)

    # the ciphertext is bound to its person: copied to another row it does not decrypt
    n = handlers.nokkelsett()
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag
        identitet.dekrypter(n, bytes(row["kryptert"]), other_person)
    with pytest.raises(Exception):  # noqa: B017
        identitet.dekrypter(identitet.nokkelsett("b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXkhISE="), bytes(row["kryptert"]), pid)
    assert identitet.dekrypter(n, bytes(row["kryptert"]), pid) == f


def test_fodselsnummer_control_digits():
    assert identitet.gyldig("01010112345") is False
    for _ in range(200):
        f = fnr()
        assert identitet.gyldig(f)
        assert not identitet.gyldig(f[:10] + str((int(f[10]) + 1) % 10))
    assert not identitet.gyldig("0101011234") and not identitet.gyldig("0101011234x")


# --- audit -------------------------------------------------------------------------------


async def test_every_read_and_refusal_is_audited_with_consumer_client_fields_and_purpose(k):
    _, (pid, _) = await k.mapped_household("4601")
    before = len(await k.revisjon())
    await k.get(NAV, pid)
    await k.get(OSLO, pid)  # refused
    await k.get(NAV, new_person_id())  # unknown
    rows = (await k.revisjon())[before:]
    assert [(r["konsument_org"], r["person_id"] == pid, r["utfall"].split(":")[0]) for r in rows] == [
        (NAV, True, "served"),
        (OSLO, True, "refused"),
        (NAV, False, "not_found"),
    ]
    assert rows[0]["felt"] == list(last().policy["nav"].felt) and rows[1]["felt"] == []
    assert rows[0]["klient"] == "klient-782" and rows[0]["formal"] == FORMAL[NAV]
    async with k.pool.acquire() as conn:
        assert revisjon.verify(await store.revisjon_rader(conn, 0, 1_000_000), await store.revisjon_hode(conn)) is None


# --- aggregates --------------------------------------------------------------------------


async def test_statistics_are_open_to_any_consumer_and_suppress_small_cells(k):
    for _ in range(3):
        await k.mapped_household("5001")  # 6 persons in Trøndelag, all bachelor
    r = await k.http.get("/statistikk", headers=k.token(VESTLAND))
    assert r.status_code == 200, r.text
    body = r.json()
    rows = [row for row in body["tabell"] if row["fylke"] == "50"]
    assert rows and all(row["personar"] is None or row["personar"] >= 5 for row in body["tabell"])
    assert all(v is None or v == 0 or v >= 5 for row in body["tabell"] for v in row["utdanning"].values())
    assert "person_id" not in r.text
    assert (await k.http.get("/statistikk", headers=k.token(NAV, scope="imdi:kompetanse/statistikk"))).status_code == 200
    assert_problem(await k.http.get("/statistikk", headers=k.token("0192:999999999", scope="imdi:kompetanse/statistikk")), 403)
    assert_problem(await k.http.get("/statistikk", headers=k.token(NAV, scope="other:scope")), 403)
    assert_problem(await k.http.get("/statistikk"), 401)


# --- notification feeds ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def relay(env, database: str):
    cfg = env.settings()
    stop = asyncio.Event()
    task = asyncio.create_task(Relay(cfg.database_url(database), cfg.amqp_url, cfg.eventlog_max_age).run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def feed(channel, org: str, personar: set[str]) -> list[dict]:
    """What is in a consumer's queue about these persons (other tests' notifications skipped)."""
    konsument = last().konsument[org]
    queue = await channel.declare_queue(varsel.konsument_ko(konsument), passive=True)
    out = []
    while (m := await queue.get(fail=False, timeout=1)) is not None:
        await m.ack()
        envelope = json.loads(m.body)
        if envelope["data"]["person_id"] in personar:
            out.append(envelope["data"] | {"headers": dict(m.headers)})
    return out


async def test_each_consumer_is_notified_only_of_what_it_may_know(env, k):
    cfg = env.settings()
    await varsel.deklarer(cfg.amqp_url, last())
    async with relay(env, "tilgang_kompetanse"):
        sak, ids = await k.mapped_household("4601")
        _, ids_oslo = await k.mapped_household("0301")
        _, protected = await k.mapped_household("4601", skjerma=True)
        await k.event(Karriererettleiing(person_id=ids[0], fylkesnummer="46", dato="2024-05-02", notat="note"), sak, KARTLEGGING)
        everyone = set(ids) | set(ids_oslo) | set(protected)
        await eventually(lambda: _outbox_sent(k.pool), timeout=20)
        connection = await aio_pika.connect(cfg.amqp_url)
        async with connection:
            channel = await connection.channel()
            nav, bergen, oslo, vestland = [await feed(channel, org, everyone) for org in (NAV, BERGEN, OSLO, VESTLAND)]

    assert {n["person_id"] for n in nav} == set(ids) | set(ids_oslo)  # the mapped, unprotected persons
    assert all(set(n) == {"person_id", "policy", "endra", "headers"} and n["policy"] == "nav" for n in nav)
    assert {tuple(n["endra"]) for n in nav} == {("utdanning", "arbeid", "sprak"), ("karriererettleiing",)}
    assert {n["person_id"] for n in bergen} == set(ids)
    # allocated to Bergen: new to Bergen, every field it may see that has a value; then the note
    new = ["kategori", "kartleggingstype", "utdanning", "arbeid", "sprak", "saerlege_behov", "forerkort", "kommunenummer"]
    assert [n["endra"] for n in bergen] == [new, new, ["karriererettleiing"]]
    assert {n["person_id"] for n in oslo} == set(ids_oslo)
    assert {n["person_id"] for n in vestland} == set(ids)
    assert not everyone & {n["person_id"] for n in nav + bergen + oslo + vestland} & set(protected)
    assert all(n["headers"]["kommunenummer"] == "4601" for n in bergen + vestland)


async def _outbox_sent(pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def test_a_consumers_broker_user_reads_its_own_feed_and_nothing_else(env, k):
    cfg = env.settings()
    await varsel.deklarer(cfg.amqp_url, last())
    bergen = legg_til_konsument(cfg, BERGEN)
    assert bergen.queue == "kompetanse.varsel.964338531"
    connection = await aio_pika.connect(bergen.amqp_url)
    async with connection:
        channel = await connection.channel()
        own = await channel.get_queue(bergen.queue, ensure=False)
        await own.get(fail=False, no_ack=False, timeout=2)  # allowed (may be empty)
        async def read(ch, name):
            return await (await ch.get_queue(name, ensure=False)).get(fail=False)

        for attempt in (
            lambda ch: read(ch, "kompetanse.varsel.958935420"),  # Oslo's feed
            lambda ch: read(ch, "kompetanse"),  # the service's own queue
            lambda ch: ch.declare_queue("mine", durable=True),
            lambda ch: ch.default_exchange.publish(aio_pika.Message(b"x"), routing_key=bergen.queue),
        ):
            ch = await connection.channel(publisher_confirms=True)
            with pytest.raises((ChannelAccessRefused, ChannelClosed)) as refused:
                await attempt(ch)
                await ch.close()  # a refused publish surfaces when the channel closes
            assert "ACCESS_REFUSED" in str(refused.value) or isinstance(refused.value, ChannelAccessRefused)
