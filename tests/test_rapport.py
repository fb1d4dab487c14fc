"""Situasjonsrapport busetjing: rendering a hand-written month (drift/rapport.py), and
`chain report` against a small real HTTP server standing in for bosetting's /kpi/rapport."""

import csv
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import typer
from typer.testing import CliRunner

from drift import rapport
from drift.rapport_cli import register
from shared import tokens
from shared.config import settings

FYLKE = {"03": "Oslo", "11": "Rogaland", "15": "Møre og Romsdal", "18": "Nordland", "30": "Viken", "34": "Innlandet",
         "38": "Vestfold og Telemark", "42": "Agder", "46": "Vestland", "50": "Trøndelag", "54": "Troms og Finnmark"}

# October 2023, shaped like services.bosetting.kpi.rapport's answer; numbers of a plausible
# month (about 2 000 settled, most of them with collective protection).
EKSEMPEL = {
    "manad": "2023-10",
    "innan_frist": [
        {"gruppe": "einsleg_mindrearig", "mal_manader": 3, "bosette": 38, "innan_frist": 27, "andel": 27 / 38},
        {"gruppe": "barnefamilie_mottak", "mal_manader": 3, "bosette": 1041, "innan_frist": 868, "andel": 868 / 1041},
        {"gruppe": "vaksen_mottak", "mal_manader": 6, "bosette": 712, "innan_frist": 655, "andel": 655 / 712},
        {"gruppe": "overforing", "mal_manader": 6, "bosette": 0, "innan_frist": 0, "andel": None},
    ],
    "ventetid": [
        {"dimensjon": "kategori", "verdi": "einsleg_mindrearig", "personar": 38, "snitt_manader": 2.9, "median_manader": 2.4},
        {"dimensjon": "kategori", "verdi": "barnefamilie", "personar": 1041, "snitt_manader": 2.1, "median_manader": 1.8},
        {"dimensjon": "kategori", "verdi": "vaksen", "personar": 712, "snitt_manader": 3.6, "median_manader": 3.1},
        {"dimensjon": "sakstype", "verdi": "kollektivt_vern", "personar": 1502, "snitt_manader": 2.2, "median_manader": 1.9},
        {"dimensjon": "sakstype", "verdi": "asyl", "personar": 289, "snitt_manader": 4.4, "median_manader": 3.7},
        {"dimensjon": "sakstype", "verdi": "overforing", "personar": 0, "snitt_manader": None, "median_manader": None},
    ],
    "ventande": {"under_kartlegging": 2315, "fordelingsklar": 1874, "fordelt": 956, "sokt_ut": 412},
    "bosette_per_fylke": [
        {"fylkesnummer": nr, "fylke": FYLKE[nr], "personar": n}
        for nr, n in [("03", 143), ("11", 162), ("15", 121), ("18", 118), ("30", 402), ("34", 176), ("38", 167),
                      ("42", 121), ("46", 214), ("50", 187), ("54", 80)]
    ],
    "kapasitet": [
        {"kommunenummer": "0301", "namn": "Oslo", "fylke": "Oslo", "oppmoda": 2700, "vedtaksplassar": 1900, "bosette": 1480, "bruk": 1480 / 1900, "vedtak_mot_oppmoding": 1900 / 2700},
        {"kommunenummer": "1103", "namn": "Stavanger", "fylke": "Rogaland", "oppmoda": 620, "vedtaksplassar": 620, "bosette": 571, "bruk": 571 / 620, "vedtak_mot_oppmoding": 1.0},
        {"kommunenummer": "4601", "namn": "Bergen", "fylke": "Vestland", "oppmoda": 1150, "vedtaksplassar": 1150, "bosette": 1212, "bruk": 1212 / 1150, "vedtak_mot_oppmoding": 1.0},
        {"kommunenummer": "5001", "namn": "Trondheim", "fylke": "Trøndelag", "oppmoda": 900, "vedtaksplassar": 850, "bosette": 703, "bruk": 703 / 850, "vedtak_mot_oppmoding": 850 / 900},
        {"kommunenummer": "1806", "namn": "Narvik", "fylke": "Nordland", "oppmoda": 110, "vedtaksplassar": 80, "bosette": 31, "bruk": 31 / 80, "vedtak_mot_oppmoding": 80 / 110},
        {"kommunenummer": "3401", "namn": "<b>x</b>", "fylke": "Innlandet", "oppmoda": 40, "vedtaksplassar": 35, "bosette": 9, "bruk": 9 / 35, "vedtak_mot_oppmoding": 35 / 40},
        {"kommunenummer": "5444", "namn": "Sør-Varanger", "fylke": "Troms og Finnmark", "oppmoda": 30, "vedtaksplassar": 0, "bosette": 0, "bruk": None, "vedtak_mot_oppmoding": 0.0},
    ],
    "kapasitet_fylke": [
        {"fylkesnummer": "03", "fylke": "Oslo", "oppmoda": 2700, "vedtaksplassar": 1900, "bosette": 1480, "bruk": 1480 / 1900, "vedtak_mot_oppmoding": 1900 / 2700},
        {"fylkesnummer": "11", "fylke": "Rogaland", "oppmoda": 2480, "vedtaksplassar": 2350, "bosette": 2011, "bruk": 2011 / 2350, "vedtak_mot_oppmoding": 2350 / 2480},
        {"fylkesnummer": "46", "fylke": "Vestland", "oppmoda": 3560, "vedtaksplassar": 3420, "bosette": 3488, "bruk": 3488 / 3420, "vedtak_mot_oppmoding": 3420 / 3560},
        {"fylkesnummer": "54", "fylke": "Troms og Finnmark", "oppmoda": 1380, "vedtaksplassar": 1234, "bosette": 1007, "bruk": 1007 / 1234, "vedtak_mot_oppmoding": 1234 / 1380},
    ],
    "kartlegging": {"bosette_personar": 1791, "skal_kartleggast": 1650, "kartlagde_for_busetjing": 1377, "dekning": 1377 / 1650},
    "trend": [
        {"manad": m, "bosette": b, "andel_innan_frist": a}
        for m, b, a in [("2022-11", 3412, 0.912), ("2022-12", 2987, 0.897), ("2023-01", 2140, 0.871), ("2023-02", 2456, 0.866),
                        ("2023-03", 2790, 0.858), ("2023-04", 2213, 0.843), ("2023-05", 2534, 0.851), ("2023-06", 2689, 0.839),
                        ("2023-07", 1298, 0.802), ("2023-08", 2104, 0.818), ("2023-09", 2245, 0.829), ("2023-10", 1791, 0.862)]
    ],
}


def les_csv(sti: Path) -> list[list[str]]:
    with sti.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f, delimiter=";"))


# --- rendering --------------------------------------------------------------------------


def test_norwegian_number_formatting():
    assert rapport.tal(1234) == "1 234" and rapport.tal(1234567.25, 1) == "1 234 567,2"
    assert rapport.prosent(0.834) == "83,4 %" and rapport.prosent(None) == "–"
    assert rapport.manad_namn("2023-10") == "oktober 2023" and rapport.manad_namn("2024-01") == "januar 2024"


def test_the_page_has_title_shares_charts_and_no_script():
    side = rapport.html(EKSEMPEL)
    assert "<title>Situasjonsrapport busetjing oktober 2023</title>" in side
    assert "<h1>Situasjonsrapport busetjing oktober 2023</h1>" in side
    for share in ("71,1 %", "83,4 %", "92,0 %"):  # 27/38, 868/1041, 655/712
        assert share in side
    assert "vart 1 791 personar busette, 86,2 % av dei innan fristen" in side
    assert "5 557 personar ventar" in side  # 2315 + 1874 + 956 + 412
    # innan frist, ventetid per kategori and per sakstype, ventande, per fylke, kapasitet per fylke, trend
    assert side.count("<svg") == 7
    assert "mål 80 %" in side and "mål 90 %" in side  # the target lines
    assert "<script" not in side.lower() and "http://" not in side.replace("http://www.w3.org/2000/svg", "")
    assert "Einslege mindreårige" in side and "Kollektivt vern (Ukraina)" in side


def test_strings_are_escaped_and_missing_shares_are_a_dash():
    side = rapport.html(EKSEMPEL)
    assert "<b>x</b>" not in side and "&lt;b&gt;x&lt;/b&gt;" in side
    assert "None" not in side
    # overføring had nobody settled: no share, shown as a dash in its row
    assert re.search(r"Overføringsflyktningar</td><td[^>]*>6 mnd</td><td[^>]*>0</td><td[^>]*>0</td><td[^>]*>–</td>", side)


def test_the_lowest_use_comes_first_and_a_kommune_without_vedtak_is_not_ranked():
    side = rapport.html(EKSEMPEL)
    lagast = side[side.index("lågast bruk"):]
    assert lagast.index("&lt;b&gt;x&lt;/b&gt;") < lagast.index("Narvik") < lagast.index("Oslo") < lagast.index("Bergen")
    assert "Sør-Varanger" not in lagast


def test_missing_names_and_an_unknown_group_still_render():
    # bosetting leaves fylke/namn None for a number its reference data does not know
    rar = EKSEMPEL | {
        "innan_frist": EKSEMPEL["innan_frist"] + [{"gruppe": "ny_gruppe", "mal_manader": 12, "bosette": 5, "innan_frist": 5, "andel": 1.0}],
        "bosette_per_fylke": [{"fylkesnummer": "99", "fylke": None, "personar": 3}],
        "kapasitet": [{"kommunenummer": "9999", "namn": None, "fylke": None, "oppmoda": 1, "vedtaksplassar": 2, "bosette": 1, "bruk": 0.5, "vedtak_mot_oppmoding": 2.0}],
    }
    side = rapport.html(rar)
    assert "Fylke 99" in side and "<td>9999</td>" in side and "Ny gruppe" in side and "None" not in side


def test_an_empty_month_renders():
    tom = {"manad": "2023-07", "innan_frist": [], "ventetid": [], "ventande": {}, "bosette_per_fylke": [], "kapasitet": [],
           "kapasitet_fylke": [], "kartlegging": {"bosette_personar": 0, "skal_kartleggast": 0, "kartlagde_for_busetjing": 0, "dekning": None},
           "trend": []}
    side = rapport.html(tom)
    assert "juli 2023" in side and "None" not in side and "vart 0 personar busette, – av dei" in side


def test_csv_files_have_headers_rows_and_decimal_comma(tmp_path):
    filer = rapport.csv_filer(EKSEMPEL, tmp_path / "2023-10")
    assert [f.name for f in filer] == ["innan_frist.csv", "ventetid.csv", "ventande.csv", "bosette_per_fylke.csv",
                                       "kapasitet_kommune.csv", "kapasitet_fylke.csv", "trend.csv"]
    assert all(f.exists() for f in filer)
    assert filer[0].read_bytes().startswith(b"\xef\xbb\xbf")  # the BOM that tells Excel it is UTF-8

    innan = les_csv(tmp_path / "2023-10" / "innan_frist.csv")
    assert innan[0] == ["gruppe", "mal_manader", "bosette", "innan_frist", "andel"]
    assert innan[2] == ["barnefamilie_mottak", "3", "1041", "868", "0,8338"]
    assert innan[4] == ["overforing", "6", "0", "0", ""]  # no share: an empty cell

    assert les_csv(tmp_path / "2023-10" / "ventande.csv") == [
        ["status", "personar"], ["under_kartlegging", "2315"], ["fordelingsklar", "1874"], ["fordelt", "956"], ["sokt_ut", "412"]]
    ventetid = les_csv(tmp_path / "2023-10" / "ventetid.csv")
    assert ventetid[0] == ["dimensjon", "verdi", "personar", "snitt_manader", "median_manader"]
    assert ventetid[1] == ["kategori", "einsleg_mindrearig", "38", "2,9", "2,4"]
    kommunar = les_csv(tmp_path / "2023-10" / "kapasitet_kommune.csv")
    assert kommunar[0] == ["kommunenummer", "namn", "fylke", "oppmoda", "vedtaksplassar", "bosette", "bruk", "vedtak_mot_oppmoding"]
    assert kommunar[6][:2] == ["3401", "<b>x</b>"] and len(kommunar) == 8  # CSV is data, not markup: kept as is
    assert les_csv(tmp_path / "2023-10" / "kapasitet_fylke.csv")[1] == ["03", "Oslo", "2700", "1900", "1480", "0,7789", "0,7037"]
    assert les_csv(tmp_path / "2023-10" / "bosette_per_fylke.csv")[1] == ["03", "Oslo", "143"]
    trend = les_csv(tmp_path / "2023-10" / "trend.csv")
    assert trend[0] == ["manad", "bosette", "andel_innan_frist"] and trend[-1] == ["2023-10", "1791", "0,862"] and len(trend) == 13


def test_save_an_example_to_look_at():
    """Not a check: var/rapport-eksempel.html, to open in a browser (var/ is not in git)."""
    sti = Path("var/rapport-eksempel.html")
    sti.parent.mkdir(exist_ok=True)
    sti.write_text(rapport.html(EKSEMPEL, laga="31.10.2023 08:00"), encoding="utf-8")


# --- chain report -----------------------------------------------------------------------


class Bosetting(BaseHTTPRequestHandler):
    """bosetting's GET /kpi/rapport, as far as the command needs it: IMDi tokens only."""

    kall: list[dict] = []

    def do_GET(self):
        url = urlparse(self.path)
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        subject = tokens.verify(settings().token_secret, token) if scheme.lower() == "bearer" else None
        manad = parse_qs(url.query).get("manad", [""])[0]
        Bosetting.kall.append({"path": url.path, "manad": manad, "subject": subject})
        if url.path != "/kpi/rapport":
            self._svar(404, {"title": "Not Found"})
        elif subject is None or not subject.startswith("imdi:"):
            self._svar(401 if subject is None else 403, {"title": "Only IMDi caseworkers may do this"})
        elif manad == "2019-01":
            self._svar(422, {"title": "Invalid request", "detail": "no data before 2020"})
        else:
            self._svar(200, EKSEMPEL | {"manad": manad}, "application/json")

    def _svar(self, status: int, body: dict, type_: str = "application/problem+json") -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", type_)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def bosetting_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Bosetting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def run():
    app = typer.Typer()
    register(app)
    app.command("noop", hidden=True)(lambda: None)  # two commands: `report` stays a subcommand
    return lambda *args: CliRunner().invoke(app, ["report", *args])


def test_report_fetches_as_imdi_and_writes_the_page_and_csvs(run, bosetting_url, tmp_path):
    Bosetting.kall.clear()
    result = run("--month", "2023-10", "--out", str(tmp_path), "--bosetting-url", bosetting_url)
    assert result.exit_code == 0, result.output
    assert Bosetting.kall == [{"path": "/kpi/rapport", "manad": "2023-10", "subject": "imdi:rapport"}]
    side = tmp_path / "situasjonsrapport-2023-10.html"
    assert "Situasjonsrapport busetjing oktober 2023" in side.read_text(encoding="utf-8")
    assert sorted(p.name for p in (tmp_path / "2023-10").iterdir()) == sorted(
        ["innan_frist.csv", "ventetid.csv", "ventande.csv", "bosette_per_fylke.csv", "kapasitet_kommune.csv",
         "kapasitet_fylke.csv", "trend.csv"])
    assert result.stdout.splitlines()[0] == str(side) and len(result.stdout.splitlines()) == 8


def test_an_error_answer_is_shown_with_its_problem_title_and_detail(run, bosetting_url, tmp_path):
    result = run("--month", "2019-01", "--out", str(tmp_path), "--bosetting-url", bosetting_url)
    assert result.exit_code == 2
    assert "bosetting answered 422: Invalid request: no data before 2020" in result.stderr
    assert not list(tmp_path.iterdir())


def test_unreachable_bosetting_exits_2_with_a_message(run, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run("--month", "2023-10", "--out", str(tmp_path), "--bosetting-url", f"http://127.0.0.1:{port}")
    assert result.exit_code == 2
    assert f"cannot reach bosetting at http://127.0.0.1:{port}" in result.stderr


def test_a_month_that_is_not_yyyy_mm_is_refused(run, tmp_path):
    result = run("--month", "2023-13", "--out", str(tmp_path), "--bosetting-url", "http://127.0.0.1:1")
    assert result.exit_code == 2 and "YYYY-MM" in result.output
