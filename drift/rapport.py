"""Situasjonsrapport busetjing: bosetting's monthly KPI report (`GET /kpi/rapport`, the dict
`services.bosetting.kpi.rapport` returns) as one HTML page and as CSV files. Pure rendering:
no network, no database.

The HTML page is self-contained (inline CSS, inline SVG charts, no JavaScript, no external
resources), so it opens from a file, can be mailed as an attachment and prints on A4.

Shares (`andel`, `bruk`, `vedtak_mot_oppmoding`, `dekning`) are fractions (0.834 = 83,4 %).
Numbers are written the Norwegian way: "1 234", "83,4 %", "4,5"; a share without a
denominator (`None`) is shown as "–".

The CSV files are for Excel in a Norwegian locale: `;` as separator and decimal comma (Excel
reads "0,834" as a number there, and "0.834" as text), UTF-8 with a byte order mark (without
it Excel guesses Windows-1252 and garbles æøå), a header row with the dict's keys, the raw
values (shares as fractions, no thousands separator) and an empty cell for `None`.
"""

import csv
import html as _html
import math
from collections.abc import Sequence
from pathlib import Path

MANADER = ["januar", "februar", "mars", "april", "mai", "juni", "juli", "august", "september", "oktober", "november", "desember"]

# IMDi's targets (tildelingsbrevet): 80 % of those with a 3-month deadline (einslege
# mindreårige, barnefamiliar) settled within it, 90 % of those with a 6-month deadline.
MAL = {3: 0.80, 6: 0.90}

GRUPPER = {
    "einsleg_mindrearig": "Einslege mindreårige",
    "barnefamilie_mottak": "Barnefamiliar frå mottak",
    "vaksen_mottak": "Vaksne utan barn frå mottak",
    "barnefamilie_fra_mottak": "Barnefamiliar frå mottak",
    "vaksen_fra_mottak": "Vaksne utan barn frå mottak",
    "overforing": "Overføringsflyktningar",
}
VENTANDE = {
    "under_kartlegging": "Under kartlegging",
    "fordelingsklar": "Fordelingsklare",
    "fordelt": "Fordelt til kommune",
    "sokt_ut": "Søkt ut til kommune",
}

# Kategori and sakstype (shared.catalogue) as labels in the waiting-time section.
VERDIAR = {
    "einsleg_mindrearig": "Einslege mindreårige",
    "barnefamilie": "Barnefamiliar",
    "vaksen": "Vaksne",
    "asyl": "Asyl",
    "overforing": "Overføringsflyktningar",
    "kollektivt_vern": "Kollektivt vern (Ukraina)",
    "familiesameining": "Familiesameining",
}

BLA, LYSEBLA, RAUD, GRA = "#1f5f8b", "#8fbfe0", "#c0392b", "#999999"
TOM = "–"  # a share without a denominator


# --- Norwegian numbers ------------------------------------------------------------------


def tal(x: float | None, desimalar: int = 0) -> str:
    """1234.5 -> "1 234,5" (space between thousands, decimal comma)."""
    if x is None:
        return TOM
    return f"{x:,.{desimalar}f}".replace(",", " ").replace(".", ",")


def prosent(andel: float | None) -> str:
    """0.834 -> "83,4 %"."""
    return TOM if andel is None else f"{tal(andel * 100, 1)} %"


def manader(x: float | None) -> str:
    return tal(x, 1)


def manad_namn(manad: str) -> str:
    """"2023-10" -> "oktober 2023"."""
    ar, mnd = manad.split("-")
    return f"{MANADER[int(mnd) - 1]} {ar}"


def _kort_manad(manad: str) -> str:
    """"2022-11" -> "nov 22", for chart axes."""
    ar, mnd = manad.split("-")
    return f"{MANADER[int(mnd) - 1][:3]} {ar[2:]}"


def gruppe_namn(gruppe: str) -> str:
    return GRUPPER.get(gruppe, gruppe.replace("_", " ").capitalize())


def _namn(verdi: str) -> str:
    """A category or case type as a label: "einsleg_mindrearig" -> "Einsleg mindrearig"."""
    return VERDIAR.get(verdi) or GRUPPER.get(verdi) or VENTANDE.get(verdi) or str(verdi).replace("_", " ").capitalize()


def _mal(rad: dict) -> float | None:
    return MAL.get(rad.get("mal_manader"))


def e(tekst) -> str:
    """Every text that reaches the page goes through this (names come from reference data)."""
    return _html.escape("" if tekst is None else str(tekst))


def _fylke(rad: dict) -> str:
    """A county's name; bosetting leaves it None for a fylkesnummer it has no name for."""
    return rad.get("fylke") or f"Fylke {rad.get('fylkesnummer') or '?'}"


def _kommune(rad: dict) -> str:
    nr = rad.get("kommunenummer") or "?"
    return f"{rad['namn']} ({nr})" if rad.get("namn") else nr


# --- SVG charts -------------------------------------------------------------------------
# Each helper returns one <svg> string. Coordinates are in px of a viewBox; the chart
# scales down with the page (width 100 %, max its natural width).


def _svg(bredde: int, hogd: int, tittel: str, innhald: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {bredde} {hogd}" width="100%" '
        f'style="max-width:{bredde}px" role="img" aria-label="{e(tittel)}"><title>{e(tittel)}</title>'
        + "".join(innhald) + "</svg>"
    )


def _tekst(x: float, y: float, tekst: str, anker: str = "start", fylt: str = "#222", storleik: int = 11) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anker}" font-size="{storleik}" fill="{fylt}">'
            f"{e(tekst)}</text>")


def _strek(x1: float, y1: float, x2: float, y2: float, farge: str = GRA, stipla: bool = False, tjukk: float = 1) -> str:
    dash = ' stroke-dasharray="5 3"' if stipla else ""
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{farge}" stroke-width="{tjukk}"{dash}/>'


def _boks(x: float, y: float, b: float, h: float, farge: str) -> str:
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(b, 0):.1f}" height="{max(h, 0):.1f}" fill="{farge}"/>'


def _forklaring(x: float, y: float, seriar: list[tuple[str, str]]) -> list[str]:
    """A legend: a coloured square and the series name, side by side."""
    ut = []
    for namn, farge in seriar:
        ut += [_boks(x, y - 9, 10, 10, farge), _tekst(x + 14, y, namn)]
        x += 24 + 6.5 * len(namn)
    return ut


def svg_liggjande(
    rader: list[tuple[str, list[float | None]]],
    *,
    tittel: str,
    seriar: Sequence[str] = ("",),
    fmt=tal,
    maks: float | None = None,
    linje: float | None = None,
    linjetekst: str = "",
) -> str:
    """Horizontal bars, one group per row (one bar per series), value text after each bar,
    and an optional vertical reference line (e.g. 100 % use of the capacity)."""
    etikett_b, verdi_b, bredde = 190, 70, 640
    plot_b = bredde - etikett_b - verdi_b
    stolpe_h = 14 if len(seriar) == 1 else 11
    rad_h = stolpe_h * len(seriar) + 8
    topp = 22 if (len(seriar) > 1 or linje is not None) else 6
    hogd = topp + rad_h * max(len(rader), 1) + 6
    verdiar = [v for _, vs in rader for v in vs if v is not None]
    maks = maks or max(verdiar + [linje or 0], default=0) or 1
    fargar = [BLA, LYSEBLA, GRA]
    ut = []
    if len(seriar) > 1:
        ut += _forklaring(etikett_b, 13, list(zip(seriar, fargar)))
    for i, (etikett, vs) in enumerate(rader):
        y = topp + i * rad_h
        ut.append(_tekst(etikett_b - 6, y + rad_h / 2 + 1, etikett, "end"))
        for j, v in enumerate(vs):
            ys = y + 4 + j * stolpe_h
            lengd = 0 if v is None else plot_b * min(v, maks) / maks
            ut.append(_boks(etikett_b, ys, lengd, stolpe_h - 2, fargar[j % len(fargar)]))
            ut.append(_tekst(etikett_b + lengd + 4, ys + stolpe_h - 4, fmt(v), storleik=10))
    ut.append(_strek(etikett_b, topp, etikett_b, hogd - 6))
    if linje is not None:
        x = etikett_b + plot_b * min(linje, maks) / maks
        ut += [_strek(x, topp - 4, x, hogd - 6, RAUD, stipla=True, tjukk=1.5), _tekst(x, topp - 7, linjetekst, "middle", RAUD)]
    return _svg(bredde, hogd, tittel, ut)


def svg_soyler(
    rader: list[tuple[str, float | None]], *, tittel: str, fmt=prosent, maks: float = 1.0, mal: Sequence[float | None] = ()
) -> str:
    """Vertical columns with the value on top and, per column, its target as a dashed red
    line across the column's slot (the groups have different targets)."""
    bredde, hogd, venstre, hogre, topp, botn = 640, 250, 44, 20, 16, 36
    plot_b, plot_h = bredde - venstre - hogre, hogd - topp - botn
    spor = plot_b / max(len(rader), 1)
    y_av = lambda v: topp + plot_h * (1 - min(v, maks) / maks)  # noqa: E731
    ut = []
    for k in range(5):  # grid lines at 0, 25, 50, 75, 100 % of the scale
        v = maks * k / 4
        ut += [_strek(venstre, y_av(v), bredde - hogre, y_av(v), "#e3e3e3"), _tekst(venstre - 4, y_av(v) + 4, fmt(v), "end", GRA, 10)]
    for i, (etikett, v) in enumerate(rader):
        x = venstre + i * spor
        if v is not None:
            ut.append(_boks(x + spor * 0.3, y_av(v), spor * 0.4, topp + plot_h - y_av(v), BLA))
        ut.append(_tekst(x + spor / 2, (y_av(v) if v is not None else topp + plot_h) - 4, fmt(v), "middle"))
        ut.append(_tekst(x + spor / 2, hogd - botn + 16, etikett, "middle"))
        m = mal[i] if i < len(mal) else None
        if m is not None:
            # the label to the right of the column, clear of the value text above it
            ut += [_strek(x + spor * 0.1, y_av(m), x + spor * 0.9, y_av(m), RAUD, stipla=True, tjukk=2),
                   _tekst(x + spor * 0.7 + 2, y_av(m) - 3, f"mål {tal(m * 100)} %", "start", RAUD, 10)]
    ut.append(_strek(venstre, topp + plot_h, bredde - hogre, topp + plot_h))
    return _svg(bredde, hogd, tittel, ut)


def _rund_opp(x: float) -> float:
    """A round axis maximum at or above x whose quarters are round too: 5118 -> 6000."""
    if x <= 0:
        return 1
    steg = 10 ** math.floor(math.log10(x))
    return next(steg * f for f in (1, 2, 4, 6, 8, 10) if steg * f >= x)


def svg_trend(rader: list[dict], *, tittel: str) -> str:
    """Settled per month as columns (left scale) and the share within target as a line
    (right scale, 0–100 %)."""
    bredde, hogd, venstre, hogre, topp, botn = 640, 230, 44, 44, 26, 30
    plot_b, plot_h = bredde - venstre - hogre, hogd - topp - botn
    spor = plot_b / max(len(rader), 1)
    # Columns scaled to 1.5 × the highest month: they keep to the lower part of the chart
    # and the share line (typically 80–90 %) runs above them.
    maks = _rund_opp(1.5 * max((r.get("bosette") or 0 for r in rader), default=0))
    ut = _forklaring(venstre, 13, [("Busette", LYSEBLA), ("Del innan frist", BLA)])
    for k in range(5):
        y = topp + plot_h * (1 - k / 4)
        ut += [_strek(venstre, y, bredde - hogre, y, "#e3e3e3"),
               _tekst(venstre - 4, y + 4, tal(maks * k / 4), "end", GRA, 10),
               _tekst(bredde - hogre + 4, y + 4, prosent(k / 4), "start", GRA, 10)]
    punkt = []
    for i, r in enumerate(rader):
        x = venstre + i * spor
        b = r.get("bosette") or 0
        h = plot_h * b / maks
        ut += [_boks(x + spor * 0.2, topp + plot_h - h, spor * 0.6, h, LYSEBLA),
               _tekst(x + spor / 2, hogd - botn + 14, _kort_manad(r["manad"]), "middle", "#444", 10)]
        if r.get("andel_innan_frist") is not None:
            punkt.append((x + spor / 2, topp + plot_h * (1 - min(r["andel_innan_frist"], 1))))
    if len(punkt) > 1:
        ut.append(f'<polyline fill="none" stroke="{BLA}" stroke-width="2" points="'
                  + " ".join(f"{x:.1f},{y:.1f}" for x, y in punkt) + '"/>')
    ut += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{BLA}"/>' for x, y in punkt]
    ut.append(_strek(venstre, topp + plot_h, bredde - hogre, topp + plot_h))
    return _svg(bredde, hogd, tittel, ut)


# --- HTML -------------------------------------------------------------------------------

CSS = """
@page { size: A4; margin: 14mm; }
* { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font-family: "Segoe UI", Arial, Helvetica, sans-serif; color: #222; max-width: 60rem; margin: 1.5rem auto; padding: 0 1rem; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.15rem; margin: 1.8rem 0 .5rem; border-bottom: 2px solid #1f5f8b; padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 1rem 0 .3rem; }
.samandrag { font-size: 1.05rem; background: #eef5fb; border-left: 4px solid #1f5f8b; padding: .6rem .9rem; }
table { border-collapse: collapse; margin: .4rem 0 .8rem; font-size: .9rem; }
th, td { padding: .2rem .6rem; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.tal, th.tal { text-align: right; white-space: nowrap; }
.under { color: #c0392b; font-weight: 600; }
.merknad, footer { color: #666; font-size: .85rem; }
section { break-inside: avoid; page-break-inside: avoid; }
svg { display: block; margin: .3rem 0 .8rem; font-family: inherit; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; } }
"""


def _tabell(hovud: list[str], rader: list[list[str]], tal_fra: int = 1, klassar: list[list[str]] | None = None) -> str:
    """A table of already formatted texts; columns from `tal_fra` on are numbers (right-aligned)."""
    def celle(tag: str, j: int, tekst: str, klasse: str = "") -> str:
        k = " ".join(filter(None, ["tal" if j >= tal_fra else "", klasse]))
        attr = f' class="{k}"' if k else ""
        return f"<{tag}{attr}>{e(tekst)}</{tag}>"

    th = "".join(celle("th", j, h) for j, h in enumerate(hovud))
    trs = []
    for i, rad in enumerate(rader):
        ks = klassar[i] if klassar else [""] * len(rad)
        trs.append("<tr>" + "".join(celle("td", j, t, ks[j]) for j, t in enumerate(rad)) + "</tr>")
    if not rader:
        trs.append(f'<tr><td colspan="{len(hovud)}">Ingen data</td></tr>')
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(trs)}</tbody></table>"


def _seksjon(tittel: str, *delar: str) -> str:
    return f"<section><h2>{e(tittel)}</h2>{''.join(delar)}</section>"


def _p(tekst: str, klasse: str = "") -> str:
    attr = f' class="{klasse}"' if klasse else ""
    return f"<p{attr}>{e(tekst)}</p>"


def _samla(rapport: dict) -> tuple[int, float | None]:
    """Settled in the month and the share within target: the month's trend row if there is
    one (it is what the trend chart shows), else the sum over the groups."""
    for r in rapport.get("trend", []):
        if r.get("manad") == rapport["manad"]:
            return r.get("bosette") or 0, r.get("andel_innan_frist")
    grupper = rapport.get("innan_frist", [])
    bosette = sum(g["bosette"] for g in grupper)
    return bosette, (sum(g["innan_frist"] for g in grupper) / bosette if bosette else None)


def _innan_frist(grupper: list[dict]) -> str:
    rader, klassar = [], []
    for g in grupper:
        mal, andel = _mal(g), g.get("andel")
        rader.append([gruppe_namn(g["gruppe"]), f"{g.get('mal_manader', TOM)} mnd", tal(g["bosette"]),
                      tal(g["innan_frist"]), prosent(andel), prosent(mal)])
        under = mal is not None and andel is not None and andel < mal
        klassar.append(["", "", "", "", "under" if under else "", ""])
    tabell = _tabell(["Gruppe", "Frist", "Busette", "Innan frist", "Del innan frist", "Mål"], rader, 1, klassar)
    graf = svg_soyler([(gruppe_namn(g["gruppe"]), g.get("andel")) for g in grupper],
                      tittel="Del busette innan frist, mot målet", mal=[_mal(g) for g in grupper])
    return _seksjon("Busette innan frist", tabell, graf,
                    _p("Mål: 80 % innan 3 månader (einslege mindreårige, barnefamiliar), 90 % innan 6 månader. "
                       "Raudt tal: under målet. Fristen reknast frå vedtaket (for overføringsflyktningar frå innreiseløyvet).", "merknad"))


def _ventetid(rader: list[dict]) -> str:
    def tabell(kolonne: str, utval: list[dict]) -> str:
        return _tabell([kolonne, "Busette personar", "Snitt (mnd)", "Median (mnd)"],
                       [[_namn(r["verdi"]), tal(r.get("personar")), manader(r.get("snitt_manader")),
                         manader(r.get("median_manader"))] for r in utval])

    delar = []
    kjende = [("kategori", "Kategori"), ("sakstype", "Sakstype")]
    # a dimension this renderer does not know yet still gets its table
    andre = sorted({str(r.get("dimensjon")) for r in rader} - {d for d, _ in kjende})
    for dimensjon, kolonne in kjende + [(d, d.replace("_", " ").capitalize()) for d in andre]:
        utval = [r for r in rader if str(r.get("dimensjon")) == dimensjon]
        if not utval:
            continue
        delar.append(f"<h3>Etter {e(kolonne.lower())}</h3>")
        delar.append(svg_liggjande([(_namn(r["verdi"]), [r.get("snitt_manader"), r.get("median_manader")]) for r in utval],
                                   tittel=f"Ventetid etter {kolonne.lower()} (månader)", seriar=["Snitt", "Median"], fmt=manader))
        delar.append(tabell(kolonne, utval))
    if not delar:
        delar.append(_p("Ingen busette i månaden."))
    return _seksjon("Ventetid frå vedtak til busetjing, busette i månaden", *delar)


def _ventande(ventande: dict) -> str:
    nokklar = [k for k in VENTANDE if k in ventande] + [k for k in ventande if k not in VENTANDE]
    rader = [(_namn(k), [ventande[k]]) for k in nokklar]
    totalt = sum(v or 0 for v in ventande.values())
    return _seksjon("Ventande ved utgangen av månaden",
                    _p(f"{tal(totalt)} personar ventar på busetjing, fordelt på status i saksgangen:"),
                    svg_liggjande(rader, tittel="Personar som ventar, etter status"))


def _bosette_per_fylke(fylke: list[dict]) -> str:
    sortert = sorted(fylke, key=lambda f: (-(f.get("personar") or 0), _fylke(f)))
    return _seksjon("Busette per fylke",
                    svg_liggjande([(_fylke(f), [f.get("personar")]) for f in sortert], tittel="Busette personar per fylke")
                    if sortert else _p("Ingen busette i månaden."))


def _kapasitet_rad(k: dict, namn: str) -> list[str]:
    return [namn, tal(k.get("oppmoda")), tal(k.get("vedtaksplassar")), tal(k.get("bosette")),
            prosent(k.get("bruk")), prosent(k.get("vedtak_mot_oppmoding"))]


KAPASITET_HOVUD = ["Oppmoda", "Vedtak (plassar)", "Busette", "Bruk av vedtak", "Vedtak mot oppmoding"]


def _kapasitet(fylke: list[dict], kommunar: list[dict]) -> str:
    fylke = sorted(fylke, key=lambda f: f.get("fylkesnummer", ""))
    graf = svg_liggjande([(_fylke(f), [f.get("bruk")]) for f in fylke], tittel="Bruk av vedtaksplassar per fylke",
                         fmt=prosent, maks=max([1.0] + [f["bruk"] for f in fylke if f.get("bruk") is not None]),
                         linje=1.0, linjetekst="100 %")
    # The 20 kommunar that have used the least of what they agreed to; a kommune without
    # vedtak has no use to rank.
    lagast = sorted((k for k in kommunar if k.get("bruk") is not None), key=lambda k: (k["bruk"], k.get("kommunenummer", "")))[:20]
    return _seksjon(
        "Kapasitet: oppmoding, vedtak og busetjing",
        _p("Bruk = busette / vedtaksplassar; vedtak mot oppmoding = vedtaksplassar / oppmoda plassar.", "merknad"),
        _tabell(["Fylke"] + KAPASITET_HOVUD, [_kapasitet_rad(f, _fylke(f)) for f in fylke]),
        graf,
        f"<h3>{e(f'Dei {len(lagast)} kommunane med lågast bruk av vedtaket')}</h3>",
        _tabell(["Kommune", "Fylke"] + KAPASITET_HOVUD,
                [[_kommune(k), k.get("fylke") or ""] + _kapasitet_rad(k, "")[1:] for k in lagast],
                tal_fra=2),
    )


def _kartlegging(k: dict) -> str:
    return _seksjon(
        "Kartlegging før busetjing",
        _tabell(["", "Personar"], [
            ["Busette i månaden", tal(k.get("bosette_personar"))],
            ["Av dei: skal kartleggjast", tal(k.get("skal_kartleggast"))],
            ["Av dei: kartlagde før busetjing", tal(k.get("kartlagde_for_busetjing"))],
            ["Dekning", prosent(k.get("dekning"))],
        ]),
        _p("Dekning = kartlagde før busetjing / dei som skal kartleggjast.", "merknad"),
    )


def _trend(trend: list[dict]) -> str:
    if not trend:
        return _seksjon("Utvikling siste 12 månader", _p("Ingen data."))
    return _seksjon(
        "Utvikling siste 12 månader",
        svg_trend(trend, tittel="Busette per månad og del innan frist"),
        _tabell(["Månad", "Busette", "Del innan frist"],
                [[manad_namn(r["manad"]), tal(r.get("bosette")), prosent(r.get("andel_innan_frist"))] for r in trend]),
    )


def html(rapport: dict, laga: str | None = None) -> str:
    """The report as one self-contained HTML page; `laga` (when it was made) goes in the footer."""
    manad = manad_namn(rapport["manad"])
    tittel = f"Situasjonsrapport busetjing {manad}"
    bosette, andel = _samla(rapport)
    ventar = sum(v or 0 for v in rapport.get("ventande", {}).values())
    samandrag = (f"I {manad} vart {tal(bosette)} personar busette, {prosent(andel)} av dei innan fristen for gruppa si. "
                 f"{tal(ventar)} personar venta på busetjing ved utgangen av månaden.")
    kjelde = "Kjelde: bosetting, /kpi/rapport" + (f", laga {laga}" if laga else "") + "."
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="nn"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(tittel)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{e(tittel)}</h1>{_p(samandrag, 'samandrag')}</header>",
        _innan_frist(rapport.get("innan_frist", [])),
        _ventetid(rapport.get("ventetid", [])),
        _ventande(rapport.get("ventande", {})),
        _bosette_per_fylke(rapport.get("bosette_per_fylke", [])),
        _kapasitet(rapport.get("kapasitet_fylke", []), rapport.get("kapasitet", [])),
        _kartlegging(rapport.get("kartlegging", {})),
        _trend(rapport.get("trend", [])),
        f"<footer>{e(kjelde)}</footer>",
        "</body></html>",
    ])


# --- CSV --------------------------------------------------------------------------------

CSV_KOLONNAR = {
    "innan_frist.csv": ("innan_frist", ["gruppe", "mal_manader", "bosette", "innan_frist", "andel"]),
    "ventetid.csv": ("ventetid", ["dimensjon", "verdi", "personar", "snitt_manader", "median_manader"]),
    "bosette_per_fylke.csv": ("bosette_per_fylke", ["fylkesnummer", "fylke", "personar"]),
    "kapasitet_kommune.csv": ("kapasitet", ["kommunenummer", "namn", "fylke", "oppmoda", "vedtaksplassar", "bosette", "bruk", "vedtak_mot_oppmoding"]),
    "kapasitet_fylke.csv": ("kapasitet_fylke", ["fylkesnummer", "fylke", "oppmoda", "vedtaksplassar", "bosette", "bruk", "vedtak_mot_oppmoding"]),
    "trend.csv": ("trend", ["manad", "bosette", "andel_innan_frist"]),
}


def _csv_verdi(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(round(v, 4)).replace(".", ",")  # raw value, decimal comma; 4 decimals is plenty
    return str(v)


def _skriv_csv(sti: Path, kolonnar: list[str], rader: list[dict]) -> Path:
    with sti.open("w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(kolonnar)
        w.writerows([_csv_verdi(r.get(k)) for k in kolonnar] for r in rader)
    return sti


def csv_filer(rapport: dict, katalog: Path) -> list[Path]:
    """One CSV per table of the report in `katalog` (created if missing); the paths written."""
    katalog.mkdir(parents=True, exist_ok=True)
    filer = [_skriv_csv(katalog / namn, kolonnar, rapport.get(nokkel, [])) for namn, (nokkel, kolonnar) in CSV_KOLONNAR.items()]
    ventande = [{"status": k, "personar": v} for k, v in rapport.get("ventande", {}).items()]
    filer.insert(2, _skriv_csv(katalog / "ventande.csv", ["status", "personar"], ventande))
    return filer
