"""Kompetanse's hash-chained audit log (issue 5), in-process against a real PostgreSQL
database of its own: reads through `handlers.les_profil` and the HTTP API, the chain
verified by the pure `revisjon.verify` and by `chain audit-verify` (a subprocess), the
database refusing changes, a superuser's tampering detected, and the person's innsyn."""

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import asyncpg
import httpx
import pytest

from services.kompetanse import handlers, innsyn, revisjon, store
from services.kompetanse.api import router as api_router
from services.kompetanse.policy import Konsument, Policy, Tilgang
from shared import tokens
from shared.maskinporten import Klient
from shared.service import Runtime
from tests.harness import in_process_service
from tests.events import new_person_id

NAV = "0192:889640782"
FORMAL = ("oppfolging", "tilsyn", "kvalifisering", "rettleiing", *(f"formal {i}" for i in range(50)))
DB_PREFIX = "revisjon_"  # the CLI finds the database as <prefix>kompetanse
CHAIN = Path(sys.executable).with_name("chain")


def tilgang(org: str, klient: str) -> Tilgang:
    """A consumer under a test policy that permits this module's purposes (the policies
    themselves are tested in test_kompetanse_tilgang.py)."""
    policy = Policy(
        namn="test", beskriving="test", scope="test", heimel="test", utval="alle", felt=("kartleggingstype", "utdanning"), formal=FORMAL
    )
    return Tilgang(Klient(org, klient, frozenset({"test"}), "test", None), Konsument(org=org, namn="test", policy="test"), policy)


class Kompetanse:
    def __init__(self, rt: Runtime, http: httpx.AsyncClient) -> None:
        self.rt, self.http = rt, http

    @property
    def pool(self) -> asyncpg.Pool:
        return self.rt.pool

    async def profil(self, person_id: str | None = None) -> str:
        person_id = person_id or new_person_id()
        await self.pool.execute(
            "INSERT INTO profil (person_id, kartleggingstype, utdanning) VALUES ($1, 'ordinaer', $2)",
            person_id,
            json.dumps({"niva": "bachelor"}),
        )
        return person_id

    async def les(self, person_id: str, formal: str = "oppfolging", *, konsument_org: str = NAV, klient: str = "dev"):
        return await handlers.les_profil(self.rt, tilgang(konsument_org, klient), person_id, formal, uuid4())

    async def rader(self) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return await store.revisjon_rader(conn, 0, 1_000_000)

    async def hode(self) -> tuple[int, str]:
        async with self.pool.acquire() as conn:
            return await store.revisjon_hode(conn)

    async def verify(self) -> int | None:
        return revisjon.verify(await self.rader(), await self.hode())

    async def superuser(self, sql: str, *args) -> None:
        """Tamper as a superuser: the append-only trigger disabled, the edit, enabled again."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("ALTER TABLE revisjonslogg DISABLE TRIGGER ALL")
            await conn.execute(sql, *args)
            await conn.execute("ALTER TABLE revisjonslogg ENABLE TRIGGER ALL")

    async def cli(self) -> tuple[int, str]:
        cfg = self.rt.settings
        environ = os.environ | {"CHAIN_PG_URL": cfg.pg_url, "CHAIN_DB_PREFIX": cfg.db_prefix + DB_PREFIX}
        proc = await asyncio.create_subprocess_exec(
            str(CHAIN), "audit-verify", env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        return proc.returncode, (out + err).decode().strip()


@pytest.fixture(scope="module")
async def service(env):
    cfg = env.settings()
    async with in_process_service(
        cfg, "kompetanse", DB_PREFIX + "kompetanse", handlers.EVENT_HANDLERS, [api_router, innsyn.router], pool_size=20
    ) as (rt, http):
        yield Kompetanse(rt, http)


@pytest.fixture
async def k(service) -> Kompetanse:
    """An empty log (reset as a superuser would) and no profiles."""
    await service.superuser("TRUNCATE revisjonslogg, profil, identitet")
    await service.pool.execute("UPDATE revisjonslogg_hode SET seq = 0, hash = $1", revisjon.GENESIS)
    return service


# --- the pure chain ---------------------------------------------------------------------


def _rad(**kw) -> dict:
    return {
        "tid": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        "konsument_org": "dev",
        "klient": "dev",
        "person_id": "p-0123456789abcdef",
        "felt": ["utdanning"],
        "formal": "oppfolging",
        "request_id": uuid4(),
        "utfall": "served",
    } | kw


def test_canonical_form_is_stable_and_covers_every_field():
    row = revisjon.chained(_rad(), 0, revisjon.GENESIS)
    assert row["seq"] == 1 and row["prev_hash"] == revisjon.GENESIS and len(row["hash"]) == 64
    assert revisjon.hash_of(row) == row["hash"]
    assert revisjon.hash_of(row | {"request_id": str(row["request_id"])}) == row["hash"]  # UUID or its string
    for key, other in [("formal", "x"), ("felt", []), ("klient", "y"), ("seq", 2), ("prev_hash", "1" * 64)]:
        assert revisjon.hash_of(row | {key: other}) != row["hash"], key
    with pytest.raises(ValueError):
        revisjon.canonical(row | {"tid": datetime(2026, 1, 1)})  # naive time is refused


def test_verify_pure():
    rows, seq, h = [], 0, revisjon.GENESIS
    for i in range(5):
        row = revisjon.chained(_rad(formal=f"formal {i}"), seq, h)
        rows.append(row)
        seq, h = row["seq"], row["hash"]
    assert revisjon.verify([]) is None and revisjon.verify([], (0, revisjon.GENESIS)) is None
    assert revisjon.verify(rows, (5, h)) is None
    assert revisjon.verify(rows[:2] + [rows[2] | {"formal": "x"}] + rows[3:]) == 3
    assert revisjon.verify(rows[:1] + rows[2:]) == 2
    assert revisjon.verify(rows[1:]) == 1
    assert revisjon.verify(rows[:4], (5, h)) == 5  # the end cut off
    assert revisjon.finn_brot(rows[:4], (5, h)).grunn.startswith("rows 5..5 are missing")


# --- against PostgreSQL -----------------------------------------------------------------


async def test_reads_are_chained_and_verify(k):
    person = await k.profil()
    assert (await k.les(person))["person_id"] == person
    assert await k.les(new_person_id(), "tilsyn") is None  # not found: logged too
    assert await k.les(person, konsument_org="0192:974760673", klient="nav-oppfolging") is not None
    assert await k.les(person, "rettleiing") is not None

    rows = await k.rader()
    assert [r["seq"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["prev_hash"] == revisjon.GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(rows, rows[1:], strict=False))
    assert [r["utfall"] for r in rows] == ["served", "not_found", "served", "served"]
    assert rows[0]["felt"] and rows[1]["felt"] == []
    assert (rows[0]["konsument_org"], rows[0]["klient"]) == (NAV, "dev")
    assert (rows[2]["konsument_org"], rows[2]["klient"]) == ("0192:974760673", "nav-oppfolging")
    assert rows[3]["formal"] == "rettleiing"
    assert all(a["tid"] <= b["tid"] for a, b in zip(rows, rows[1:], strict=False))
    assert await k.hode() == (4, rows[-1]["hash"])
    assert await k.verify() is None
    assert await k.cli() == (0, "audit log intact: 4 rows")
    # the 0001 view still shows the reads
    assert await k.pool.fetchval("SELECT count(*) FROM tilgangslogg WHERE person_id = $1", person) == 3


async def test_concurrent_reads_keep_one_unbroken_chain(k):
    personar = [await k.profil() for _ in range(5)]
    results = await asyncio.gather(*(k.les(personar[i % 5], f"formal {i}") for i in range(50)))
    assert all(p is not None for p in results)
    rows = await k.rader()
    assert [r["seq"] for r in rows] == list(range(1, 51))
    assert sorted(r["formal"] for r in rows) == sorted(f"formal {i}" for i in range(50))
    assert len({r["prev_hash"] for r in rows}) == 50  # no fork: every hash is followed once
    assert await k.verify() is None


async def test_concurrent_reads_share_commits(k, monkeypatch):
    batches = []
    real = store.log_accesses

    async def counted(conn, entries):
        batches.append(len(entries))
        return await real(conn, entries)

    monkeypatch.setattr(store, "log_accesses", counted)
    person = await k.profil()
    await asyncio.gather(*(k.les(person, f"formal {i}") for i in range(40)))
    assert sum(batches) == 40 and len(batches) < 40  # group commit, every entry written once
    assert await k.verify() is None


async def test_no_answer_when_the_audit_entry_cannot_be_committed(k, monkeypatch):
    person = await k.profil()

    async def broken(conn, entries):
        raise asyncpg.PostgresConnectionError("the database went away")

    monkeypatch.setattr(store, "log_accesses", broken)
    results = await asyncio.gather(*(k.les(person) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, asyncpg.PostgresConnectionError) for r in results)  # nothing served unlogged
    monkeypatch.undo()
    await k.les(person)
    assert [r["seq"] for r in await k.rader()] == [1]
    assert await k.verify() is None


async def test_a_read_that_rolls_back_leaves_no_entry_and_no_hole(k):
    person = await k.profil()
    await k.les(person)
    async with k.pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await store.log_access(conn, "dev", person, [], "oppfolging", uuid4(), "served")
                raise RuntimeError
    await k.les(person)
    assert [r["seq"] for r in await k.rader()] == [1, 2]
    assert await k.verify() is None


async def test_the_database_refuses_update_delete_and_truncate(k):
    await k.les(await k.profil())
    for sql in ("UPDATE revisjonslogg SET formal = 'x'", "DELETE FROM revisjonslogg", "TRUNCATE revisjonslogg"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await k.pool.execute(sql)
    assert len(await k.rader()) == 1
    assert await k.verify() is None


async def test_a_superusers_edit_is_detected_at_that_seq(k):
    person = await k.profil()
    for i in range(10):
        await k.les(person, f"formal {i}")
    await k.superuser("UPDATE revisjonslogg SET formal = 'rettleiing' WHERE seq = 7")
    assert await k.verify() == 7
    code, output = await k.cli()
    assert code == 1 and "broken at seq 7" in output and "altered" in output, output


async def test_a_superusers_edit_with_a_recomputed_hash_is_detected_at_the_next_seq(k):
    person = await k.profil()
    for _ in range(5):
        await k.les(person)
    row = dict((await k.rader())[2]) | {"konsument_org": "someone else"}
    await k.superuser("UPDATE revisjonslogg SET konsument_org = $1, hash = $2 WHERE seq = 3", row["konsument_org"], revisjon.hash_of(row))
    assert await k.verify() == 4


async def test_a_deleted_row_is_detected(k):
    person = await k.profil()
    for _ in range(6):
        await k.les(person)
    await k.superuser("DELETE FROM revisjonslogg WHERE seq = 4")
    assert await k.verify() == 4
    code, output = await k.cli()
    assert code == 1 and "broken at seq 4" in output and "missing" in output, output


async def test_a_cut_off_end_is_detected(k):
    person = await k.profil()
    for _ in range(4):
        await k.les(person)
    await k.superuser("DELETE FROM revisjonslogg WHERE seq >= 3")
    assert await k.verify() == 3
    assert (await k.cli())[0] == 1


# --- innsyn -----------------------------------------------------------------------------


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _person(k: Kompetanse, person_id: str) -> dict:
    return _bearer(tokens.issue(k.rt.settings.token_secret, f"person:{person_id}"))


async def test_innsyn_shows_the_persons_own_reads_only(k):
    meg, andre = await k.profil(), await k.profil()
    await k.les(meg, "oppfolging")
    await k.les(andre, "tilsyn")
    await k.les(meg, "kvalifisering", konsument_org="0192:974760673")
    r = await k.http.get(f"/innsyn/{meg}", headers=_person(k, meg))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["person_id"] == meg and body["avkorta"] is False
    assert [(t["konsument_org"], t["formal"]) for t in body["tilgangar"]] == [("0192:974760673", "kvalifisering"), (NAV, "oppfolging")]
    assert all(t["felt"] and t["utfall"] == "served" and t["tid"] for t in body["tilgangar"])
    assert set(body["tilgangar"][0]) == {"tid", "konsument_org", "konsument", "formal", "felt", "utfall"}  # no client, no request id
    assert body["tilgangar"][1]["konsument"] == "NAV (Arbeids- og velferdsetaten)"

    assert (await k.http.get(f"/innsyn/{andre}", headers=_person(k, andre))).json()["tilgangar"][0]["formal"] == "tilsyn"
    assert (await k.http.get(f"/innsyn/{new_person_id()}", headers=_person(k, meg))).status_code == 403


async def test_innsyn_refuses_other_tokens(k):
    meg = await k.profil()
    await k.les(meg)
    url = f"/innsyn/{meg}"
    assert (await k.http.get(url)).status_code == 401
    assert (await k.http.get(url, headers=_bearer("dev-token"))).status_code == 401  # not a signed token
    assert (await k.http.get(url, headers=_bearer(f"person:{meg}.forged"))).status_code == 401
    assert (await k.http.get(url, headers=_bearer(tokens.issue("another secret", f"person:{meg}")))).status_code == 401
    for subject in (f"person:{new_person_id()}", "imdi:sakshandsamar", "kommune:0301"):
        r = await k.http.get(url, headers=_bearer(tokens.issue(k.rt.settings.token_secret, subject)))
        assert r.status_code == 403, subject
        assert r.headers["content-type"] == "application/problem+json"
    assert (await k.http.get("/innsyn/01019912345", headers=_person(k, meg))).status_code in (401, 403, 422)
