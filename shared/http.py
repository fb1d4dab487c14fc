"""HTTP plumbing shared by the services: RFC 9457 problem details for every error, and
their place in each service's OpenAPI document (`problems`)."""

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter
from starlette.exceptions import HTTPException

PROBLEM = "application/problem+json"

# Free text that PostgreSQL can store: any character but NUL, which a text column refuses
# (a NUL in a body was a 500; found by tests/test_openapi_fuzz.py). `Field(pattern=TEKST)`.
TEKST = r"^[^\x00]*$"


def nul_i(value) -> list[tuple]:
    """The paths of the strings in a decoded JSON value that hold a NUL (a key with one
    counts as "(key)"). Iterative: a body nested as deep as the JSON parser allows must not
    overflow the stack here."""
    found, stack = [], [((), value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str) and "\x00" in v:
            found.append(path)
        elif isinstance(v, dict):
            for k, item in v.items():
                if "\x00" in k:
                    found.append((*path, "(key)"))
                else:
                    stack.append(((*path, k), item))
        elif isinstance(v, list):
            stack.extend(((*path, i), item) for i, item in enumerate(v))
    return sorted(found, key=str)


# The body of every error answer (see problem_response). `errors` lists the fields in
# error of a 422, by location and error type, never with the submitted values.
PROBLEM_SCHEMA = {
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "type", "message"],
                "properties": {"field": {"type": "string"}, "type": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_MEANING = {
    400: "The body could not be read",
    401: "No valid bearer token",
    403: "The caller may not do this",
    404: "No such resource (or not the caller's to see)",
    409: "Not possible in the resource's current state",
    422: "Invalid request: the fields in error, never their values",
    503: "Not ready",
}


def problems(*statuses: int) -> dict[int, dict]:
    """The `responses` of a route for the problem+json answers it may give, e.g.
    `@router.get(..., responses=problems(401, 403, 404))`. Every route with parameters
    or a body documents 422 (and, with a body, 400) on its own (install_problem_handlers)."""
    return {s: {"description": _MEANING[s], "content": {PROBLEM: {"schema": _PROBLEM_REF}}} for s in statuses}


class Problem(Exception):
    """Raise from an endpoint to answer with problem+json."""

    def __init__(self, status: int, title: str, detail: str | None = None, **extra):
        super().__init__(title)
        self.status, self.title, self.detail, self.extra = status, title, detail, extra


def problem_response(status: int, title: str, detail: str | None = None, **extra) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_req: Request, exc: Problem):
        return problem_response(exc.status, exc.title, exc.detail, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError):
        # Field locations and error types only: never echo submitted values (personal data).
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "type": e["type"], "message": e["msg"]}
            for e in exc.errors()
        ]
        return problem_response(422, "Invalid request", f"{len(errors)} field(s) invalid", errors=errors)

    @app.exception_handler(HTTPException)
    async def _http(_req: Request, exc: HTTPException):
        return problem_response(exc.status_code, str(exc.detail))

    for transient in DATABASE_UNAVAILABLE:
        app.add_exception_handler(transient, _unavailable)

    _document(app)


# The database restarting or unreachable, or a transaction chosen as a deadlock's victim:
# nothing was committed, and the same request a moment later succeeds. A 500 said "our
# bug" and clients gave up (found by sim/chaos.py restarting PostgreSQL under load); a 503
# with Retry-After says "try again", which is true.
DATABASE_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,  # the connection was lost mid-request
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, not yet accepting connections
    asyncpg.exceptions.TransactionRollbackError,  # deadlock victim, serialization failure
    asyncpg.InterfaceError,  # the pool's connection was closed under it (only that: see below)
    ConnectionError,  # the server refuses connections while it restarts
)


async def _unavailable(_req: Request, exc: Exception):
    if isinstance(exc, asyncpg.InterfaceError) and "closed" not in str(exc):
        raise exc  # misuse of a connection is our bug: a 500, with its traceback in the log
    response = problem_response(503, "Service unavailable", "The database is unavailable for a moment; try again")
    response.headers["Retry-After"] = "1"
    return response


def json_body(adapter: TypeAdapter) -> dict:
    """`openapi_extra` for a route that takes its body as a plain dict and validates it
    itself (so that its 422 can name fields its own way): the body's real schema, for
    the document. Its definitions go to the document's components (see _document)."""
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _document(app: FastAPI) -> None:
    """Make the OpenAPI document say what the handlers above answer: FastAPI documents a
    422 as its own `HTTPValidationError` in application/json, which we never send; a body
    that cannot be read is a 400. Both are problem+json, as is every other error. And the
    bodies documented with `json_body` get their definitions into the components."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = generate()
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = PROBLEM_SCHEMA
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            for item in spec.get("paths", {}).values():
                for operation in item.values():
                    responses = operation.get("responses", {})
                    if "422" in responses:
                        responses["422"] = problems(422)[422]
                    if "requestBody" in operation:
                        responses.setdefault("400", problems(400)[400])
                        for media in operation["requestBody"].get("content", {}).values():
                            media["schema"] = dict(media.get("schema", {}))  # json_body's own stays whole
                            for name, definition in media["schema"].pop("$defs", {}).items():
                                if schemas.setdefault(name, definition) != definition:
                                    raise ValueError(f"two request body schemas named {name}")
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi
