"""Schemathesis against each running service's OpenAPI document (issue 9, bad input):
generated requests, valid by the schema and deliberately invalid, with each kind of caller
the service knows (and none): no answer is a 5xx, every answer's status code, content
type and body are what the document says.

Each request's caller is drawn too: half the time one who may make most of the service's
requests, else anyone (no token included). Path parameters are now and then pinned to a
household, kommune and mottak of this module's own, with tokens that match, so that
requests get past the 404s and 403s into the commands. A command's kommune and year are
always pinned: Utsira and 2099, which no other test allocates to, so what the fuzzing
writes there changes nobody else's results.

Generation is random unless CI=true (then the same examples each run); more examples with
CHAIN_FUZZ_EXAMPLES (per operation and mode; 12 by default).

The regression tests at the end keep each bug the fuzzing found fixed."""

import os
from collections import Counter
from collections.abc import Iterable

import aio_pika
import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.http import PROBLEM
from shared.publish import envelope_for, publish_envelope
from shared.topology import EVENTS
from tests.conftest import eventually
from tests.events import UDI, new_sak_id, vedtak

pytestmark = pytest.mark.usefixtures("chain")

NAV = "0192:889640782"  # NAV's registration in services/kompetanse/policy.toml
KOMMUNE = "1151"  # Utsira: a real kommune, so its routes answer, that no other test uses
MOTTAK = "mottak-fuzz"
AR = 2099
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
# Examples per operation and generation mode; each draws its caller at random.
EXAMPLES = int(os.environ.get("CHAIN_FUZZ_EXAMPLES", "12"))
# Not fuzzed: every valid report the mottak intake accepts is an event on the bus about a
# made-up resident, which the other tests sharing the chain would see. Its answers are
# documented (test_the_mottak_intake_documents_its_refusals) and tested in test_mottak_intake.py.
INTAKE = "POST /mottak/{mottak_id}/hendingar"


@pytest.fixture(scope="module")
async def household(env) -> dict:
    """A privately living household (so self-registration answers too), known to all three."""
    v = vedtak(n_adults=2, n_children=0, privatbuande=True, bustadkommune=KOMMUNE, mottak_id=None)
    sak_id = new_sak_id()
    connection = await aio_pika.connect(env.settings().amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await publish_envelope(await channel.get_exchange(EVENTS), envelope_for(v, sak_id, UDI, 1))
    imdi = {"Authorization": f"Bearer {env.token('imdi:fuzz')}"}

    async def known(service: str, path: str) -> bool:
        async with httpx.AsyncClient(base_url=env.url(service), headers=imdi) as http:
            return (await http.get(path)).status_code == 200

    await eventually(lambda: known("bosetting", f"/saker/{sak_id}"))
    await eventually(lambda: known("kartlegging", f"/kartleggingar/{sak_id}"))
    # The fuzzing maps the first person (and may complete the mapping); the second is the regression tests'.
    pinned = {"sak_id": sak_id, "person_id": v.personar[0].person_id, "kommunenummer": KOMMUNE, "mottak_id": MOTTAK, "ar": AR}
    return pinned | {"other_person_id": v.personar[1].person_id}


# Who may make most of each service's requests: half of the requests come from one of them.
MAY = {"kartlegging": ["imdi", "mottak", "person"], "bosetting": ["imdi", "kommune"], "kompetanse": ["imdi", "nav", "person"]}


def callers(env, service: str, household: dict) -> dict[str, str | None]:
    """Who may call the service, and who may not: each a bearer token (None: no token)."""
    person = f"person:{household['person_id']}"
    common = {"none": None, "imdi": env.token("imdi:fuzz")}
    if service == "bosetting":
        return common | {"kommune": env.token(f"kommune:{KOMMUNE}")}
    if service == "kartlegging":
        return common | {
            "kommune": env.token(f"kommune:{KOMMUNE}"),
            "mottak": env.token(f"mottak:{MOTTAK}"),
            "fylke": env.token("fylke:46"),
            "person": env.token(person),
        }
    return common | {"nav": env.maskinporten_token(NAV, "imdi:kompetanse/nav"), "person": env.token(person)}


def fuzz(env, service: str, household: dict, exclude: Iterable[str] = ()) -> tuple[list[str], Counter]:
    """Run every operation of the service's document; the failures found (the first per
    operation, caller and kind), and the status codes of the answers."""
    schema = schemathesis.openapi.from_url(f"{env.url(service)}/openapi.json")
    tokens = callers(env, service, household)
    failures: dict[tuple, str] = {}
    statuses: Counter = Counter()
    with requests.Session() as session:
        session.hooks["response"].append(lambda r, *_, **__: statuses.update([r.status_code]))
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.label in exclude:
                continue
            names = {p.name for p in operation.path_parameters}
            pinned = {k: v for k, v in household.items() if k in names}
            # A command never writes to another kommune or year than ours (see the module's doc).
            always = {k: v for k, v in pinned.items() if k in ("kommunenummer", "ar")} if operation.method.upper() != "GET" else {}
            has_input = any(len(parameters) for parameters in (operation.path_parameters, operation.query, operation.headers, operation.body))
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_input else (GenerationMode.POSITIVE,):
                cases = operation.as_strategy(generation_mode=mode, path_parameters=always or None)
                if pinned != always:
                    cases = st.one_of(cases, operation.as_strategy(generation_mode=mode, path_parameters=pinned))

                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    phases=[Phase.explicit, Phase.generate],
                    derandomize=os.environ.get("CI") == "true",
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=cases, caller=st.one_of(st.sampled_from(MAY[service]), st.sampled_from(sorted(tokens))))
                def run(case, caller):
                    token = tokens[caller]
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    try:
                        case.call_and_validate(session=session, headers=headers, checks=CHECKS, timeout=30)
                    except (AssertionError, BaseExceptionGroup) as exc:  # a failed check, or a group of them
                        _record(failures, operation.label, caller, mode, exc, case, headers)

                try:
                    run()
                except Unsatisfiable:
                    pass  # nothing to negate in this operation (e.g. only an optional header)
    return [f"{op} as {caller} ({mode}): {kind}\n    {curl}" for (op, caller, mode, kind), curl in sorted(failures.items())], statuses


def _record(failures: dict, label: str, caller: str, mode, exc: BaseException, case, headers: dict) -> None:
    kinds = [getattr(f, "title", type(f).__name__) for f in getattr(exc, "exceptions", [exc])]
    for kind in kinds:
        failures.setdefault((label, caller, mode.value, kind), case.as_curl_command(headers=headers)[:500])


async def _still_ready(env) -> None:
    async with httpx.AsyncClient() as http:
        for service in ("kartlegging", "bosetting", "kompetanse"):
            assert (await http.get(f"{env.url(service)}/health/ready")).status_code == 200, service


@pytest.mark.parametrize("service", ["kartlegging", "bosetting", "kompetanse"])
async def test_generated_requests_get_documented_answers_and_never_a_5xx(env, chain, household, service):
    failures, statuses = fuzz(env, service, household, exclude=[INTAKE] if service == "kartlegging" else [])
    print(f"\n{service}: {statuses.total()} requests, answers {dict(sorted(statuses.items()))}")
    assert statuses[200] and statuses[422] and statuses[401]  # past the checks, and stopped at them
    assert not failures, f"{len(failures)} failure(s) in {statuses.total()} requests:\n" + "\n".join(failures)
    for name, proc in chain.procs.items():
        assert proc.poll() is None, f"{name} exited"
    await _still_ready(env)


async def test_the_mottak_intake_documents_its_refusals(env, household):
    async with httpx.AsyncClient(base_url=env.url("kartlegging")) as http:
        spec = (await http.get("/openapi.json")).json()
    responses = spec["paths"]["/mottak/{mottak_id}/hendingar"]["post"]["responses"]
    assert {"401", "403", "422"} <= set(responses)
    assert all(PROBLEM in responses[s]["content"] for s in ("401", "403", "422"))


# --- regressions: the bugs the fuzzing found ---------------------------------------------


@pytest.mark.parametrize("service", ["kartlegging", "bosetting", "kompetanse"])
async def test_every_error_answer_is_documented_as_problem_json(env, service):
    """Bug: each service's document declared its 422 as FastAPI's HTTPValidationError in
    application/json (the services answer problem+json), and no 401, 403, 404 or 409 at all."""
    async with httpx.AsyncClient(base_url=env.url(service)) as http:
        spec = (await http.get("/openapi.json")).json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert set(spec["components"]["schemas"]["Problem"]["required"]) == {"type", "title", "status"}
    documented = set()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert list(response["content"]) == [PROBLEM], (method, path, status)
                    documented.add(status)
            if operation.get("parameters") or "requestBody" in operation:
                assert "422" in operation["responses"], (method, path)
    assert {"401", "403", "404", "422"} <= documented


async def test_a_huge_offset_is_a_422_not_a_500(env):
    """Bug: bosetting's list offsets had no upper bound; past PostgreSQL's bigint the query
    failed with a 500."""
    async with httpx.AsyncClient(base_url=env.url("bosetting"), headers={"Authorization": f"Bearer {env.token('imdi:fuzz')}"}) as http:
        for path in ("/saker", "/forslag"):
            r = await http.get(path, params={"offset": 10**25})
            assert r.status_code == 422, (path, r.text)
            assert r.headers["content-type"] == PROBLEM
            assert [e["field"] for e in r.json()["errors"]] == ["query.offset"]
            assert (await http.get(path, params={"offset": 10})).status_code == 200


async def test_a_boolean_or_a_string_is_not_a_number_of_places(env):
    """Bug: pydantic's lax mode took `false` as 0 (and "30" as 30) for places the schema
    types as integers, so a schema-violating body was accepted."""
    imdi = {"Authorization": f"Bearer {env.token('imdi:fuzz')}"}
    async with httpx.AsyncClient(base_url=env.url("bosetting"), headers=imdi) as http:
        for body in ({"barnefamilie": False}, {"vaksen": "30"}, {"einsleg_mindrearig": 2.0}):
            r = await http.put(f"/kommunar/{KOMMUNE}/vedtak/2099", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.headers["content-type"] == PROBLEM
        r = await http.post(f"/kommunar/{KOMMUNE}/kapasitetsrapportar", json={"dato": "2099-01-01", "tek_imot": 1})
        assert r.status_code == 422, r.text
        assert (await http.put(f"/kommunar/{KOMMUNE}/vedtak/2099", json={"vaksen": 3})).status_code == 204


async def test_a_nul_character_in_bosetting_text_is_a_422_not_a_500(env, household):
    """Bug: a NUL in free text (a withdrawal's or override's `grunn`) reached PostgreSQL,
    which cannot store it: a 500, and the command half done up to there."""
    sak_id = household["sak_id"]
    imdi = {"Authorization": f"Bearer {env.token('imdi:fuzz')}"}
    async with httpx.AsyncClient(base_url=env.url("bosetting"), headers=imdi) as http:
        before = (await http.get(f"/saker/{sak_id}")).json()["status"]
        r = await http.post(f"/saker/{sak_id}/trekking", json={"arsak": "anna", "grunn": "01019012345\x00"})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == PROBLEM
        assert [e["field"] for e in r.json()["errors"]] == ["body.grunn"]
        assert "01019012345" not in r.text
        r = await http.post(f"/saker/{sak_id}/overstyring", json={"kommunenummer": KOMMUNE, "grunn": "\x00"})
        assert r.status_code == 422, r.text
        assert (await http.get(f"/saker/{sak_id}")).json()["status"] == before


async def test_a_nul_character_in_a_mapping_is_a_422_not_a_500(env, household):
    """Bug: a NUL anywhere in a mapping body (its schemas allow free text) reached
    PostgreSQL's jsonb: a 500. Now a 422 naming where, never what."""
    sak_id, person_id = household["sak_id"], household["other_person_id"]
    mottak = {"Authorization": f"Bearer {env.token('mottak:' + MOTTAK)}"}
    body = {
        "schema": "urn:chain:kartlegging:ordinaer:v1",
        "utdanning": {"niva": "bachelor", "ar": 15, "fagfelt": "Ola 01019012345\x00"},
        "onske": {"arbeid": ["ok", "\x00"]},
    }
    async with httpx.AsyncClient(base_url=env.url("kartlegging"), headers=mottak) as http:
        r = await http.put(f"/kartleggingar/{sak_id}/personar/{person_id}/utkast", json=body)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == PROBLEM
        assert sorted(e["field"] for e in r.json()["errors"]) == ["body.onske.arbeid.1", "body.utdanning.fagfelt"]
        assert "01019012345" not in r.text and "Ola" not in r.text
        r = await http.put(f"/kartleggingar/{sak_id}/personar/{person_id}/utkast", json={"schema\x00": 1})
        assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["body.(key)"]
        # the same body without the NUL is saved
        body["utdanning"]["fagfelt"], body["onske"]["arbeid"] = "Informatikk", ["ok"]
        r = await http.put(f"/kartleggingar/{sak_id}/personar/{person_id}/utkast", json=body)
        assert r.status_code == 200, r.text
