"""HTTP plumbing shared by the services: RFC 9457 problem details for every error."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

PROBLEM = "application/problem+json"


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
