"""`chain report --month YYYY-MM`: fetch the month's KPI report from bosetting
(`GET /kpi/rapport`, as an IMDi caseworker) and write it as a self-contained HTML page and
CSV files (drift/rapport.py). Exit 2 with the reason when bosetting cannot be reached or
answers an error."""

import os
import re
from datetime import datetime
from pathlib import Path

import httpx
import typer

from drift import rapport
from shared import tokens
from shared.config import settings

MANAD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
SUBJEKT = "imdi:rapport"  # the report reads as an IMDi caseworker: the KPIs are IMDi's


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _problem(svar: httpx.Response) -> str:
    """An error answer as text: problem+json's title and detail, else the body."""
    try:
        body = svar.json()
    except ValueError:
        return svar.text.strip()[:500] or svar.reason_phrase
    if isinstance(body, dict) and ("title" in body or "detail" in body):
        return ": ".join(str(body[k]) for k in ("title", "detail") if body.get(k))
    return str(body)[:500]


def hent(url: str, manad: str) -> dict:
    token = tokens.issue(settings().token_secret, SUBJEKT)
    try:
        svar = httpx.get(f"{url.rstrip('/')}/kpi/rapport", params={"manad": manad},
                         headers={"Authorization": f"Bearer {token}"}, timeout=60)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach bosetting at {url}: {type(exc).__name__}: {exc}")
    if svar.status_code >= 400:
        _fail(f"bosetting answered {svar.status_code}: {_problem(svar)}")
    try:
        return svar.json()
    except ValueError:
        _fail(f"bosetting answered {svar.status_code} without JSON")


def report(
    month: str = typer.Option(..., "--month", help="YYYY-MM"),
    out: Path = typer.Option(Path("var/rapport"), "--out", help="directory for the HTML page and the CSV files"),
    bosetting_url: str = typer.Option(None, "--bosetting-url", help="default: http://127.0.0.1:$CHAIN_BOSETTING_PORT (8102)"),
) -> None:
    """Situasjonsrapport busetjing for a month: <out>/situasjonsrapport-<month>.html and the
    tables as CSV (`;`, decimal comma, for Excel) in <out>/<month>/."""
    if not MANAD.match(month):
        raise typer.BadParameter(f"{month!r} is not a month as YYYY-MM", param_hint="--month")
    url = bosetting_url or f"http://127.0.0.1:{os.environ.get('CHAIN_BOSETTING_PORT', '8102')}"
    data = hent(url, month)
    out.mkdir(parents=True, exist_ok=True)
    side = out / f"situasjonsrapport-{month}.html"
    side.write_text(rapport.html(data, laga=datetime.now().strftime("%d.%m.%Y %H:%M")), encoding="utf-8")
    for sti in [side, *rapport.csv_filer(data, out / month)]:
        typer.echo(str(sti))


def register(app: typer.Typer) -> None:
    app.command("report")(report)
