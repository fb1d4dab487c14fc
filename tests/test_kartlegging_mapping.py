"""Kartlegging's mapping commands, in-process against a real PostgreSQL database of its
own: the vedtak through the handler (as the river would call it), and the HTTP API
through an ASGI transport with real bearer tokens. What goes on the bus is read from the
outbox table."""

import json
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from services.kartlegging import handlers
from services.kartlegging.api import router
from services.kartlegging.skjema import FORENKLA_V1, ORDINAER_V1
from shared import tokens
from shared.catalogue import Sakstype
from shared.outbox import unit_of_work
from shared.publish import envelope_for
from shared.service import Runtime
from tests.harness import in_process_service
from tests.events import UDI, new_sak_id, vedtak

PROBLEM = "application/problem+json"
SECRET = "Kari Nordmann 01019912345"
TABLES = "kartleggingsversjon, karriererettleiing, kartlegging, kartleggingssak, outbox, outbox_sequence, inbox, inbox_sequence"

ORDINAER = {
    "schema": ORDINAER_V1,
    "heimel": "integreringslova_6",
    "utdanning": {"niva": "bachelor", "fagfelt": "sjukepleie", "ar": 15, "dokumentert": True},
    "arbeid": [{"yrke": "sjukepleiar", "sektor": "helse", "ar": 6}],
    "sprak": {"norsk": "A2", "engelsk": "B2", "andre": [{"sprak": "arabisk", "niva": "morsmal"}]},
    "digitale_ferdigheiter": "gode",
    "forerkort": "B",
    "bil": True,
    "helse": {"indikatorar": ["psykisk_helse_oppfolging", "nedsett_funksjonsevne"]},
    "nettverk_kommunar": ["4601"],
    "onske": {"arbeid": ["sjukepleiar"], "utdanning": ["norskkurs"]},
}
FORENKLA = {
    "schema": FORENKLA_V1,
    "heimel": "integreringslova_6",
    "utdanning": {"niva": "vidaregaande", "ar": 12},
    "sprak": {"norsk": "ingen", "engelsk": "B1"},
}


@dataclass
class Kartlegging:
    rt: Runtime
    http: httpx.AsyncClient

    @property
    def pool(self) -> asyncpg.Pool:
        return self.rt.pool

    def token(self, subject: str) -> dict:
        return {"Authorization": f"Bearer {tokens.issue(self.rt.settings.token_secret, subject)}"}

    async def ny_sak(self, **extra) -> tuple[str, list[str]]:
        """A household of two adults and a child; the adults are to be mapped."""
        v = vedtak(**extra)
        sak_id = new_sak_id()
        envelope = envelope_for(v, sak_id, UDI, 1)
        async with unit_of_work(self.pool, self.rt.source, cause=envelope) as uow:
            await handlers.vedtak_fattet(uow, envelope, v)
        return sak_id, [p.person_id for p in v.personar if p.fodselsar < 2000]

    async def outbox(self, sak_id: str, type_: str | None = None) -> list[tuple[str, dict]]:
        rows = await self.pool.fetch(
            "SELECT type, body FROM outbox WHERE subject = $1 AND ($2::text IS NULL OR type = $2) ORDER BY sequence",
            sak_id,
            type_,
        )
        return [(r["type"], json.loads(r["body"])["data"]) for r in rows]


@pytest.fixture(scope="module")
async def service(env):
    cfg = env.settings()
    # The mottak's system maps by default; tests that need another party pass its token.
    mottak = {"Authorization": f"Bearer {tokens.issue(cfg.token_secret, 'mottak:mottak-01')}"}
    async with in_process_service(
        cfg, "kartlegging", "mapping_kartlegging", handlers.EVENT_HANDLERS, [router], headers=mottak
    ) as (rt, http):
        yield Kartlegging(rt, http)


@pytest.fixture
async def k(service) -> Kartlegging:
    await service.pool.execute(f"TRUNCATE {TABLES} CASCADE")
    return service


def url(sak_id: str, person_id: str, tail: str = "") -> str:
    return f"/kartleggingar/{sak_id}/personar/{person_id}{tail}"


def assert_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    return r.json()


def fields(body: dict) -> list[str]:
    return [e["field"] for e in body["errors"]]


# --- draft, then complete ------------------------------------------------------------------


async def test_draft_any_number_of_times_then_complete(k):
    sak_id, (a, b) = await k.ny_sak()
    r = await k.http.put(url(sak_id, a, "/utkast"), json={"schema": ORDINAER_V1, "heimel": "integreringslova_6"})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "sak_id": sak_id,
        "person_id": a,
        "fullstendigheit": round(1 / 11, 4),
        "manglande_felt": ["utdanning", "utdanning.fagfelt", "arbeid", "sprak.norsk", "sprak.engelsk",
                           "digitale_ferdigheiter", "forerkort", "helse", "nettverk_kommunar", "onske"],
        "manglar_for_fullforing": ["utdanning", "arbeid", "sprak.norsk", "sprak.engelsk", "digitale_ferdigheiter", "helse"],
    }
    # completing an incomplete draft names every missing required field
    body = assert_problem(await k.http.post(url(sak_id, a, "/fullfor")), 422)
    assert fields(body) == ["utkast.utdanning", "utkast.arbeid", "utkast.sprak.norsk", "utkast.sprak.engelsk",
                            "utkast.digitale_ferdigheiter", "utkast.helse"]
    assert {e["type"] for e in body["errors"]} == {"missing"}

    r = await k.http.put(url(sak_id, a, "/utkast"), json=ORDINAER)
    assert r.json()["fullstendigheit"] == 1.0 and r.json()["manglar_for_fullforing"] == []
    assert await k.outbox(sak_id, "kartlegging.fullfort") == []  # drafts emit nothing
    assert (await k.http.get(f"/kartleggingar/{sak_id}")).json()["personar"][a] is False

    r = await k.http.post(url(sak_id, a, "/fullfor"))
    assert r.status_code == 200, r.text
    assert r.json() == {"sak_id": sak_id, "person_id": a, "versjon": 1, "sak_komplett": False,
                        "fullstendigheit": 1.0, "manglande_felt": []}
    again = await k.http.post(url(sak_id, a, "/fullfor"))  # no-op
    assert again.json()["versjon"] == 1
    assert [t for t, _ in await k.outbox(sak_id)] == ["kartlegging.startet", "kartlegging.fullfort"]
    # a draft after completion is refused: corrections are their own command
    assert_problem(await k.http.put(url(sak_id, a, "/utkast"), json=ORDINAER), 409)
    # the other adult has no draft
    assert_problem(await k.http.post(url(sak_id, b, "/fullfor")), 409)


async def test_the_fullfort_event_carries_competence_and_coarse_needs_only(k):
    sak_id, (a, b) = await k.ny_sak()
    assert (await k.http.post(url(sak_id, a), json=ORDINAER)).status_code == 200
    assert (await k.http.post(url(sak_id, b), json=ORDINAER | {"helse": {"indikatorar": []}})).status_code == 200
    (_, first), (_, second) = await k.outbox(sak_id, "kartlegging.fullfort")
    assert first == {
        "person_id": a,
        "kartleggingstype": "ordinaer",
        "utdanning": {"niva": "bachelor", "fagfelt": "sjukepleie", "ar": 15, "dokumentert": True},
        "arbeid": [{"yrke": "sjukepleiar", "sektor": "helse", "ar": 6}],
        "sprak": [{"sprak": "norsk", "niva": "A2"}, {"sprak": "engelsk", "niva": "B2"}, {"sprak": "arabisk", "niva": "morsmal"}],
        "saerlege_behov": ["oppfolging_helse"],
        "nettverk_kommunar": ["4601"],
        "digitale_ferdigheiter": "gode",
        "forerkort": "B",
        "heimel": "integreringslova_6",
        "fullstendigheit": 1.0,
        "manglande_felt": [],
        "sak_komplett": False,
    }
    assert second["sak_komplett"] is True and second["saerlege_behov"] == []
    raw = await k.pool.fetchval("SELECT string_agg(body, ' ') FROM outbox")
    for private in ("psykisk", "funksjonsevne", "norskkurs", '"onske":', '"bil":', '"helse":', '"indikatorar":'):
        assert private not in raw
    # ...but kartlegging keeps them
    stored = json.loads(await k.pool.fetchval("SELECT innhald FROM kartlegging WHERE person_id = $1", a))
    assert stored["helse"] == ORDINAER["helse"] and stored["onske"] == ORDINAER["onske"] and stored["bil"] is True


# --- the two schemas -----------------------------------------------------------------------


async def test_forenkla_requires_fewer_fields_than_ordinaer(k):
    sak_id, (a, b) = await k.ny_sak(sakstype=Sakstype.kollektivt_vern)
    r = await k.http.post(url(sak_id, a), json=FORENKLA)
    assert r.status_code == 200, r.text
    (_, event), = await k.outbox(sak_id, "kartlegging.fullfort")
    assert event["kartleggingstype"] == "forenkla"
    assert event["fullstendigheit"] == round(4 / 6, 4)
    assert event["manglande_felt"] == ["arbeid", "nettverk_kommunar"]
    assert event["sprak"] == [{"sprak": "norsk", "niva": "ingen"}, {"sprak": "engelsk", "niva": "B1"}]

    # the same answers under the ordinary schema are not enough to complete
    body = assert_problem(await k.http.post(url(sak_id, b), json=FORENKLA | {"schema": ORDINAER_V1}), 422)
    assert fields(body) == ["body.arbeid", "body.digitale_ferdigheiter", "body.helse"]
    # forenkla without heimel or languages
    body = assert_problem(await k.http.post(url(sak_id, b), json={"schema": FORENKLA_V1, "utdanning": {"niva": "ingen", "ar": 0}}), 422)
    assert fields(body) == ["body.heimel", "body.sprak.norsk", "body.sprak.engelsk"]


async def test_an_ordinary_case_refuses_the_simplified_schema(k):
    sak_id, (a, _) = await k.ny_sak()
    body = assert_problem(await k.http.post(url(sak_id, a), json=FORENKLA), 422)
    assert fields(body) == ["body.schema"]
    body = assert_problem(await k.http.put(url(sak_id, a, "/utkast"), json=FORENKLA), 422)
    assert fields(body) == ["body.schema"]


async def test_422_names_each_field_and_never_echoes_values(k):
    sak_id, (a, _) = await k.ny_sak()
    bad = {
        "schema": ORDINAER_V1,
        "heimel": SECRET,
        "utdanning": {"niva": SECRET, "ar": 99, "fagfelt": SECRET * 10},
        "sprak": {"norsk": SECRET},
        "helse": {"indikatorar": ["depresjon"]},
        "nettverk_kommunar": [SECRET],
        "namn": SECRET,
    }
    for method, path in (("POST", ""), ("PUT", "/utkast")):
        r = await k.http.request(method, url(sak_id, a, path), json=bad)
        body = assert_problem(r, 422)
        assert sorted(fields(body)) == sorted([
            "body.heimel", "body.utdanning.niva", "body.utdanning.ar", "body.utdanning.fagfelt", "body.sprak.norsk",
            "body.sprak.engelsk", "body.helse.indikatorar.0", "body.nettverk_kommunar.0", "body.namn",
        ])
        assert SECRET not in r.text and "01019912345" not in r.text and "depresjon" not in r.text
    for schema in (None, SECRET):
        r = await k.http.put(url(sak_id, a, "/utkast"), json={"schema": schema} if schema else {"heimel": "integreringslova_6"})
        body = assert_problem(r, 422)
        assert fields(body) == ["body.schema"] and SECRET not in r.text
    assert await k.pool.fetchval("SELECT count(*) FROM kartlegging WHERE utkast IS NOT NULL OR innhald IS NOT NULL") == 0


async def test_the_original_body_still_submits_and_completes(k):
    sak_id, (a, b) = await k.ny_sak()
    r = await k.http.post(url(sak_id, a), json={"utdanning": {"niva": "bachelor", "ar": 15}})
    assert r.json() == {"sak_id": sak_id, "person_id": a, "sak_komplett": False}
    assert (await k.http.post(url(sak_id, a), json={"utdanning": {"niva": "bachelor", "ar": 15}})).status_code == 200
    assert_problem(await k.http.post(url(sak_id, a), json={"utdanning": {"niva": "master", "ar": 17}}), 409)
    (_, event), = await k.outbox(sak_id, "kartlegging.fullfort")
    assert event["fullstendigheit"] == round(1 / 11, 4)
    assert event["manglande_felt"][:3] == ["heimel", "utdanning.fagfelt", "arbeid"]
    assert_problem(await k.http.post(url(new_sak_id(), a), json={"utdanning": {"niva": "ingen", "ar": 0}}), 404)


# --- corrections ---------------------------------------------------------------------------


async def test_corrections_are_new_versions_and_history_is_kept(k):
    sak_id, (a, _) = await k.ny_sak()
    korr = {"innhald": ORDINAER | {"forerkort": "tyngre"}, "grunn": "licence class was wrong"}
    assert_problem(await k.http.post(url(sak_id, a, "/korrigering"), json=korr), 409)  # not complete yet
    await k.http.post(url(sak_id, a), json=ORDINAER)

    r = await k.http.post(url(sak_id, a, "/korrigering"), json=korr)
    assert r.status_code == 200, r.text
    assert r.json()["versjon"] == 2
    again = await k.http.post(url(sak_id, a, "/korrigering"), json=korr | {"grunn": "sent twice"})
    assert again.json()["versjon"] == 2  # identical content: no-op
    third = await k.http.post(url(sak_id, a, "/korrigering"), json={"innhald": ORDINAER | {"onske": None}, "grunn": "withdrew wishes"})
    assert third.json() | {"sak_komplett": None} == {
        "sak_id": sak_id, "person_id": a, "versjon": 3, "sak_komplett": None,
        "fullstendigheit": round(10 / 11, 4), "manglande_felt": ["onske"],
    }

    events = await k.outbox(sak_id, "kartlegging.korrigert")
    assert [(e["versjon"], e["grunn"], e["forerkort"]) for _, e in events] == [
        (2, "licence class was wrong", "tyngre"), (3, "withdrew wishes", "B")
    ]
    assert events[1][1]["manglande_felt"] == ["onske"] and events[1][1]["fullstendigheit"] == round(10 / 11, 4)
    assert "helse" not in events[0][1] and events[0][1]["saerlege_behov"] == ["oppfolging_helse"]

    # the history: every version, never overwritten; for a caseworker or the person only
    assert_problem(await k.http.get(url(sak_id, a, "/versjonar"), headers={"Authorization": ""}), 401)
    assert_problem(await k.http.get(url(sak_id, a, "/versjonar"), headers=k.token("kommune:0301")), 403)
    r = await k.http.get(url(sak_id, a, "/versjonar"), headers=k.token("imdi:test"))
    assert r.status_code == 200, r.text
    versjonar = r.json()
    assert [(v["versjon"], v["grunn"], v["kjelde"]) for v in versjonar] == [
        (1, None, "mottak"), (2, "licence class was wrong", "mottak"), (3, "withdrew wishes", "mottak")
    ]
    assert versjonar[0]["innhald"]["forerkort"] == "B" and versjonar[1]["innhald"]["forerkort"] == "tyngre"
    assert "onske" not in versjonar[2]["innhald"]
    assert [v["fullstendigheit"] for v in versjonar] == [1.0, 1.0, round(10 / 11, 4)]
    own = await k.http.get(url(sak_id, a, "/versjonar"), headers=k.token(f"person:{a}"))
    assert own.status_code == 200 and len(own.json()) == 3


async def test_a_correction_must_be_complete_and_valid(k):
    sak_id, (a, _) = await k.ny_sak()
    await k.http.post(url(sak_id, a), json=ORDINAER)
    body = assert_problem(await k.http.post(url(sak_id, a, "/korrigering"), json={"innhald": ORDINAER | {"helse": None}, "grunn": "x"}), 422)
    assert fields(body) == ["body.innhald.helse"]
    body = assert_problem(await k.http.post(url(sak_id, a, "/korrigering"), json={"innhald": ORDINAER | {"forerkort": SECRET}}), 422)
    assert sorted(fields(body)) == ["body.grunn", "body.innhald.forerkort"] and SECRET not in str(body)
    assert await k.outbox(sak_id, "kartlegging.korrigert") == []


# --- career guidance (§ 11) ---------------------------------------------------------------


async def test_career_guidance_follows_a_completed_mapping_and_goes_to_kompetanse_only(k):
    sak_id, (a, _) = await k.ny_sak()
    note = {"fylkesnummer": "46", "dato": "2024-05-02", "notat": "wants to work as a nurse again"}
    fylke = k.token("fylke:46")
    assert_problem(await k.http.post(url(sak_id, a, "/karriererettleiing"), json=note, headers=fylke), 409)
    await k.http.post(url(sak_id, a), json=ORDINAER)
    assert_problem(await k.http.post(url(sak_id, a, "/karriererettleiing"), json=note), 403)  # a mottak may not
    r = await k.http.post(url(sak_id, a, "/karriererettleiing"), json=note, headers=fylke)
    assert r.status_code == 201, r.text
    assert await k.pool.fetchval("SELECT notat FROM karriererettleiing WHERE person_id = $1", a) == note["notat"]
    # sent to kompetanse in its own event, and in no other
    with_note = await k.pool.fetch("SELECT type, body FROM outbox WHERE body LIKE '%nurse%'")
    assert [r["type"] for r in with_note] == ["kartlegging.karriererettleiing"]
    assert json.loads(with_note[0]["body"])["data"] == {"person_id": a, "fylkesnummer": "46", "dato": "2024-05-02", "notat": note["notat"]}
    body = assert_problem(
        await k.http.post(url(sak_id, a, "/karriererettleiing"), json=note | {"dato": "2024-13-45"}, headers=fylke), 422
    )
    assert fields(body) == ["body.dato"]


# --- self-registration ---------------------------------------------------------------------


async def test_a_privately_living_person_maps_themself(k):
    sak_id, (a, b) = await k.ny_sak(privatbuande=True, mottak_id=None, bustadkommune="0301")
    kode = url(sak_id, a, "/sjolvregistrering/kode")
    assert_problem(await k.http.post(kode, headers={"Authorization": ""}), 401)
    assert_problem(await k.http.post(kode, headers=k.token(f"person:{a}")), 403)
    r = await k.http.post(kode, headers=k.token("imdi:test"))
    assert r.status_code == 200, r.text
    own = {"Authorization": f"Bearer {r.json()['token']}"}

    # another person's token, or none, may not submit for a
    assert_problem(await k.http.post(url(sak_id, a, "/sjolvregistrering"), json=ORDINAER, headers={"Authorization": ""}), 401)
    assert_problem(await k.http.post(url(sak_id, a, "/sjolvregistrering"), json=ORDINAER), 403)  # the mottak may not
    assert_problem(await k.http.post(url(sak_id, a, "/sjolvregistrering"), json=ORDINAER, headers=k.token(f"person:{b}")), 403)

    draft = await k.http.put(url(sak_id, a, "/sjolvregistrering/utkast"), json=FORENKLA | {"schema": ORDINAER_V1}, headers=own)
    assert draft.status_code == 200 and draft.json()["manglar_for_fullforing"] == ["arbeid", "digitale_ferdigheiter", "helse"]
    body = assert_problem(await k.http.post(url(sak_id, a, "/sjolvregistrering"), json={"schema": ORDINAER_V1}, headers=own), 422)
    assert "body.utdanning" in fields(body)
    r = await k.http.post(url(sak_id, a, "/sjolvregistrering"), json=ORDINAER, headers=own)
    assert r.status_code == 200, r.text
    assert r.json()["versjon"] == 1 and r.json()["fullstendigheit"] == 1.0
    (_, event), = await k.outbox(sak_id, "kartlegging.fullfort")
    assert event["person_id"] == a
    assert await k.pool.fetchval("SELECT kjelde FROM kartleggingsversjon WHERE person_id = $1", a) == "sjolvregistrering"


async def test_self_registration_is_only_for_privately_living_persons(k):
    sak_id, (a, _) = await k.ny_sak()  # lives in a mottak
    assert_problem(await k.http.post(url(sak_id, a, "/sjolvregistrering/kode"), headers=k.token("imdi:test")), 409)
    r = await k.http.post(url(sak_id, a, "/sjolvregistrering"), json=ORDINAER, headers=k.token(f"person:{a}"))
    assert_problem(r, 403)
    assert await k.outbox(sak_id, "kartlegging.fullfort") == []


# --- coverage ------------------------------------------------------------------------------


async def test_coverage_with_completeness(k):
    s1, (a, b) = await k.ny_sak()
    s2, (c, d) = await k.ny_sak(sakstype=Sakstype.kollektivt_vern)
    await k.http.post(url(s1, a), json=ORDINAER)  # 1.0
    await k.http.post(url(s1, b), json={"utdanning": {"niva": "ingen", "ar": 0}})  # 1/10
    await k.http.post(url(s2, c), json=FORENKLA)  # 4/6
    await k.http.put(url(s2, d, "/utkast"), json=FORENKLA)
    await k.http.post(url(s1, a, "/korrigering"), json={"innhald": ORDINAER | {"bil": False}, "grunn": "sold the car"})
    r = await k.http.get("/dekning")
    assert r.json() == {
        "personar": 4,
        "kartlagde": 3,
        "utkast": 1,
        "korrigerte": 1,
        "fullstendigheit": {
            "snitt": round((1.0 + 0.1 + round(4 / 6, 4)) / 3, 4),
            "fullstendige": 1,
            "manglande_felt": {
                "arbeid": 2, "nettverk_kommunar": 2, "digitale_ferdigheiter": 1, "forerkort": 1, "heimel": 1,
                "helse": 1, "onske": 1, "sprak.engelsk": 1, "sprak.norsk": 1,
            },
        },
        "per_kartleggingstype": {
            "forenkla": {"personar": 2, "kartlagde": 1, "snitt_fullstendigheit": round(4 / 6, 4)},
            "ordinaer": {"personar": 2, "kartlagde": 2, "snitt_fullstendigheit": round(1.1 / 2, 4)},
        },
    }


async def test_only_mottak_kommunar_and_imdi_may_map(k):
    sak_id, (a, _) = await k.ny_sak()
    events = await k.pool.fetchval("SELECT count(*) FROM outbox")
    for path in ("", "/utkast"):
        method = k.http.put if path == "/utkast" else k.http.post
        assert_problem(await method(url(sak_id, a, path), json=ORDINAER, headers={"Authorization": ""}), 401)
        forged = {"Authorization": "Bearer mottak:mottak-01.AAAA"}
        assert_problem(await method(url(sak_id, a, path), json=ORDINAER, headers=forged), 401)
        assert_problem(await method(url(sak_id, a, path), json=ORDINAER, headers=k.token(f"person:{a}")), 403)
        assert_problem(await method(url(sak_id, a, path), json=ORDINAER, headers=k.token("fylke:46")), 403)
    assert await k.pool.fetchval("SELECT count(*) FROM outbox") == events  # nothing was applied
    assert await k.pool.fetchval("SELECT utkast FROM kartlegging WHERE person_id = $1", a) is None
    for who in ("kommune:0301", "imdi:test"):  # the settlement kommune (§ 10), IMDi (abroad)
        r = await k.http.put(url(sak_id, a, "/utkast"), json=ORDINAER, headers=k.token(who))
        assert r.status_code == 200, r.text
