"""Reference data on Norway's kommunar (municipalities): codes, names, counties, population,
and what each kommune offers. Pure parsing; the only I/O is reading the files shipped in
``services/bosetting/data/`` (``default_kommunar``, ``default_tilbod``).

The shipped files
-----------------
``kommunar_klass131_2023.csv``
    The 356 kommunar valid in 2023 (the 2020-2023 numbering), as exported from Statistics
    Norway's classification database KLASS, classification 131 "Standard for
    kommuneinndeling" (``codesAt.csv?date=2023-01-01``): UTF-8, ``;``-separated, every field
    quoted, header ``"code";"parentCode";"level";"name";"shortName";"presentationName";
    "validFrom";"validTo";"notes"``. The classification has one level, so ``parentCode`` is
    empty and ``level`` is 1; ``validFrom``/``validTo`` are left empty as in a ``codesAt``
    export. Names are SSB's, with the Sami and Kven forms where the kommune has them
    (for example "Guovdageaidnu - Kautokeino"); the two Vålers are "Våler (Viken)" and
    "Våler (Innlandet)" as in KLASS for 2020-2023 (StatBank still writes "(Østfold)" and
    "(Hedmark)"; the files are joined on the code, never on the name).

``folketal_07459_2023.csv``
    Population per kommune on 1 January 2023 from SSB's StatBank table 07459 "Befolkning,
    etter region, statistikkvariabel og år", saved as StatBank's "semicolon separated with
    heading" CSV in the *wide* layout: a quoted title line, an empty line, then
    ``"region";"Personer 2023"`` and one row per kommune with the region written
    ``"K-0301 Oslo"``. The numbers are the sums over all one-year age groups of SSB's
    07459 export for 2023 (region x age, 2020-2023 kommune codes), so they equal SSB's
    published totals: 356 kommunar, 5,488,984 persons. Every number is for 1 January 2023;
    none is taken from a neighbouring year.

``tilbod.csv``
    What each kommune offers: ``kommunenummer;vidaregaande;sjukehus;mindrearig_teneste;
    sektorar`` with booleans as 1/0 and ``sektorar`` a comma-separated list from
    ``SEKTORAR``. This file is **illustrative data compiled for the project** from general
    knowledge of Norwegian hospital towns, upper-secondary schools and regional industries;
    it is not an official register. In production the kommunar report their offers over
    HTTP and this file only seeds a demo or a test.

The KLASS and StatBank files are official statistics from Statistics Norway (SSB), published
under the Norwegian Licence for Open Government Data (NLOD 2.0).

Formats the parsers accept
--------------------------
* KLASS (``parse_klass``): a UTF-8 BOM or none, ``;`` or ``,`` as separator, fields quoted
  or not; the columns ``code`` and ``name`` are found by name (``kode``/``navn`` work too).
  Rows whose code is not four digits (county rows, "9999 Uoppgitt" is four digits and is
  skipped by name) are ignored.
* StatBank (``parse_folketal``), both layouts StatBank offers for 07459:

  - wide: ``"region";"Personer 2023"`` (or ``"Persons 2023"``, or several year columns;
    the latest year is used unless ``aar`` is given), optionally with further dimension
    columns such as ``"alder"`` whose rows are summed per kommune;
  - long: ``"region";"statistikkvariabel";"år";"07459: Befolkning, ..."`` with one value
    per row (further dimension columns are summed the same way).

  A title line and empty lines may come before the header. The region is ``"0301 Oslo"``,
  ``"K-0301 Oslo"`` or just ``"0301"``; regions that are not kommunar (``"0 Hele landet"``,
  ``"F-46 Vestland"``) are skipped. StatBank's symbols ``.`` (not applicable, for example a
  code that did not exist that year), ``..`` (not available) and ``:`` (confidential) skip
  the row; ``-`` (nil) counts as 0. Thousands may be written with spaces.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from importlib import resources

__all__ = [
    "FYLKE",
    "SEKTORAR",
    "Kommune",
    "Referansefeil",
    "Tilbod",
    "default_kommunar",
    "default_tilbod",
    "kommunar",
    "parse_folketal",
    "parse_klass",
    "parse_tilbod",
]

KLASS_FIL = "kommunar_klass131_2023.csv"
FOLKETAL_FIL = "folketal_07459_2023.csv"
TILBOD_FIL = "tilbod.csv"

#: County (fylke) by the first two digits of the kommunenummer. 2020-2023 counties, plus the
#: counties of 1 January 2024 so that newer files can be read too.
FYLKE: dict[str, str] = {
    "03": "Oslo",
    "11": "Rogaland",
    "15": "Møre og Romsdal",
    "18": "Nordland",
    "30": "Viken",
    "34": "Innlandet",
    "38": "Vestfold og Telemark",
    "42": "Agder",
    "46": "Vestland",
    "50": "Trøndelag",
    "54": "Troms og Finnmark",
    # from 2024
    "31": "Østfold",
    "32": "Akershus",
    "33": "Buskerud",
    "39": "Vestfold",
    "40": "Telemark",
    "55": "Troms",
    "56": "Finnmark",
}

#: The fixed vocabulary of sectors in ``tilbod.csv``.
SEKTORAR: frozenset[str] = frozenset(
    {
        "helse",
        "undervisning",
        "bygg",
        "transport",
        "reiseliv",
        "industri",
        "varehandel",
        "landbruk",
        "havbruk",
        "olje_energi",
        "it",
        "offentleg",
    }
)

_KOMMUNENUMMER = re.compile(r"^\d{4}$")
_REGION = re.compile(r"^(?:K-)?(\d{4})(?:\s+.*)?$")
_AAR = re.compile(r"(\d{4})\s*$")
_TAL_UTAN_VERDI = {".", "..", "...", ":"}


class Referansefeil(ValueError):
    """A reference file could not be read. The message names the line and at most the
    offending kommunenummer, never the rest of the line."""


@dataclass(frozen=True)
class Kommune:
    kommunenummer: str  # 4 digits
    namn: str
    fylkesnummer: str  # 2 digits
    fylke: str  # county name (2020-2023 counties)
    innbyggjarar: int


@dataclass(frozen=True)
class Tilbod:
    kommunenummer: str
    vidaregaande: bool
    sjukehus: bool
    mindrearig_teneste: bool
    sektorar: frozenset[str]


# --- common ---------------------------------------------------------------------------


def _utan_bom(text: str) -> str:
    return text[1:] if text.startswith("\ufeff") else text


def _skiljeteikn(header: str) -> str:
    """The separator of a header line: the one of ``;``, tab and ``,`` it contains most of."""
    teljing = {s: header.count(s) for s in (";", "\t", ",")}
    best = max(teljing, key=lambda s: teljing[s])
    return best if teljing[best] else ";"


def _rader(text: str, skiljeteikn: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) for every non-empty line, fields stripped of spaces."""
    lesar = csv.reader(io.StringIO(text), delimiter=skiljeteikn, quotechar='"')
    ut: list[tuple[int, list[str]]] = []
    try:
        for felt in lesar:
            if not felt or all(not f.strip() for f in felt):
                continue
            ut.append((lesar.line_num, [f.strip() for f in felt]))
    except csv.Error as feil:
        raise Referansefeil(f"linje {lesar.line_num}: ugyldig CSV ({feil})") from None
    return ut


def _kolonne(header: list[str], *namn: str) -> int | None:
    lage = [h.strip().lower() for h in header]
    for n in namn:
        if n in lage:
            return lage.index(n)
    return None


# --- KLASS -----------------------------------------------------------------------------


def parse_klass(text: str) -> dict[str, str]:
    """kommunenummer -> name from a KLASS export (classification 131)."""
    text = _utan_bom(text)
    forste = next((linje for linje in text.splitlines() if linje.strip()), "")
    rader = _rader(text, _skiljeteikn(forste))
    if not rader:
        raise Referansefeil("linje 1: tom KLASS-fil")
    header_linje, header = rader[0]
    kode_i = _kolonne(header, "code", "kode")
    namn_i = _kolonne(header, "name", "navn", "namn")
    if kode_i is None or namn_i is None:
        raise Referansefeil(f"linje {header_linje}: KLASS-fila manglar kolonnane code og name")
    ut: dict[str, str] = {}
    for linje, felt in rader[1:]:
        if len(felt) <= max(kode_i, namn_i):
            raise Referansefeil(f"linje {linje}: for få felt")
        kode = felt[kode_i]
        if not _KOMMUNENUMMER.match(kode) or kode == "9999":
            continue
        namn = felt[namn_i]
        if not namn:
            raise Referansefeil(f"linje {linje}: kommune {kode} manglar namn")
        if kode in ut:
            raise Referansefeil(f"linje {linje}: kommune {kode} står to gonger")
        ut[kode] = namn
    return ut


# --- StatBank 07459 --------------------------------------------------------------------


def _tal(verdi: str) -> int | None:
    """A StatBank number, None for a symbol meaning 'no value'; ValueError otherwise."""
    v = verdi.replace("\u00a0", "").replace("\u202f", "").replace(" ", "")
    if v in _TAL_UTAN_VERDI:
        return None
    if v == "-":
        return 0
    tal = int(v)
    if tal < 0:
        raise ValueError("negativt folketal")
    return tal


def _region(verdi: str) -> str | None:
    m = _REGION.match(verdi.strip())
    return m.group(1) if m else None


def parse_folketal(text: str, aar: int | None = None) -> dict[str, int]:
    """kommunenummer -> population from a StatBank export of table 07459, long or wide.

    With several years in the file the latest is used, or ``aar`` if given."""
    text = _utan_bom(text)
    linjer = text.splitlines()
    # The header is the first line whose first field is "region" (a title line may come first).
    header_i = None
    for i, linje in enumerate(linjer):
        felt0 = linje.split(_skiljeteikn(linje))[0].strip().strip('"').strip().lower()
        if felt0 in ("region", "område", "omrade"):
            header_i = i
            break
    if header_i is None:
        raise Referansefeil("linje 1: fann ingen header med kolonnen region")
    skilje = _skiljeteikn(linjer[header_i])
    rader = _rader("\n".join(linjer[header_i:]), skilje)
    forskyving = header_i  # line numbers in `rader` count from the header
    _, header = rader[0]
    aar_i = _kolonne(header, "år", "aar", "year", "tid")
    var_i = _kolonne(header, "statistikkvariabel", "contents", "statistical variable")

    if aar_i is not None:  # long layout: the value is the last column
        verdi_kolonner = {len(header) - 1: None}
    else:  # wide layout: value columns are those ending in a year ("Personer 2023")
        verdi_kolonner = {}
        for i, h in enumerate(header[1:], start=1):
            m = _AAR.search(h)
            if m:
                verdi_kolonner[i] = int(m.group(1))
        if not verdi_kolonner:
            raise Referansefeil(f"linje {header_i + 1}: fann ingen kolonne med årstal")
        aara = sorted(set(verdi_kolonner.values()))
        vald = aar if aar is not None else aara[-1]
        if vald not in aara:
            raise Referansefeil(f"linje {header_i + 1}: året {vald} finst ikkje i fila")
        verdi_kolonner = {i: a for i, a in verdi_kolonner.items() if a == vald}
        verdi_kolonner = dict(list(verdi_kolonner.items())[:1])

    # long layout: which year
    vald_aar: str | None = None
    if aar_i is not None:
        alle_aar = sorted({f[aar_i] for _, f in rader[1:] if len(f) > aar_i and f[aar_i]})
        if aar is not None:
            vald_aar = str(aar)
            if vald_aar not in alle_aar:
                raise Referansefeil(f"linje {header_i + 1}: året {aar} finst ikkje i fila")
        elif alle_aar:
            vald_aar = alle_aar[-1]
    if var_i is not None:
        variablar = {f[var_i] for _, f in rader[1:] if len(f) > var_i}
        if len(variablar) > 1:
            raise Referansefeil(
                f"linje {header_i + 1}: fila har fleire statistikkvariablar; ta ut berre Personer"
            )

    ut: dict[str, int] = {}
    for linje, felt in rader[1:]:
        linje += forskyving
        if len(felt) != len(header):
            raise Referansefeil(f"linje {linje}: {len(felt)} felt, venta {len(header)}")
        kode = _region(felt[0])
        if kode is None:
            continue  # the country, a county or another non-kommune region
        if vald_aar is not None and felt[aar_i] != vald_aar:
            continue
        for i in verdi_kolonner:
            try:
                tal = _tal(felt[i])
            except ValueError:
                raise Referansefeil(f"linje {linje}: ugyldig folketal for kommune {kode}") from None
            if tal is None:
                continue
            ut[kode] = ut.get(kode, 0) + tal
    return ut


# --- tilbod ----------------------------------------------------------------------------

_TILBOD_KOLONNAR = ("kommunenummer", "vidaregaande", "sjukehus", "mindrearig_teneste", "sektorar")
_SANN = {"1": True, "0": False, "true": True, "false": False, "ja": True, "nei": False}


def parse_tilbod(text: str) -> dict[str, Tilbod]:
    """kommunenummer -> Tilbod from ``tilbod.csv`` (``;``-separated, booleans 1/0)."""
    text = _utan_bom(text)
    rader = _rader(text, ";")
    if not rader:
        raise Referansefeil("linje 1: tom tilbodsfil")
    header_linje, header = rader[0]
    lage = [h.lower() for h in header]
    if sorted(lage) != sorted(_TILBOD_KOLONNAR):
        raise Referansefeil(
            f"linje {header_linje}: venta kolonnane {';'.join(_TILBOD_KOLONNAR)}"
        )
    i = {namn: lage.index(namn) for namn in _TILBOD_KOLONNAR}
    ut: dict[str, Tilbod] = {}
    for linje, felt in rader[1:]:
        if len(felt) != len(header):
            raise Referansefeil(f"linje {linje}: {len(felt)} felt, venta {len(header)}")
        kode = felt[i["kommunenummer"]]
        if not _KOMMUNENUMMER.match(kode):
            raise Referansefeil(f"linje {linje}: ugyldig kommunenummer")
        if kode in ut:
            raise Referansefeil(f"linje {linje}: kommune {kode} står to gonger")
        flagg = {}
        for namn in ("vidaregaande", "sjukehus", "mindrearig_teneste"):
            verdi = felt[i[namn]].lower()
            if verdi not in _SANN:
                raise Referansefeil(f"linje {linje}: kommune {kode}: {namn} må vere 1 eller 0")
            flagg[namn] = _SANN[verdi]
        sektorar = frozenset(s.strip() for s in felt[i["sektorar"]].split(",") if s.strip())
        if not sektorar <= SEKTORAR:
            raise Referansefeil(f"linje {linje}: kommune {kode}: ukjend sektor")
        ut[kode] = Tilbod(kommunenummer=kode, sektorar=sektorar, **flagg)
    return ut


# --- joining ---------------------------------------------------------------------------


def kommunar(klass_text: str, folketal_text: str) -> list[Kommune]:
    """The kommunar of a KLASS export with their population, sorted by kommunenummer.

    Every kommune in the KLASS file must have a population; populations of regions that
    are not in the KLASS file are ignored."""
    namn = parse_klass(klass_text)
    folketal = parse_folketal(folketal_text)
    ut: list[Kommune] = []
    for kode in sorted(namn):
        fylkesnummer = kode[:2]
        if fylkesnummer not in FYLKE:
            raise Referansefeil(f"kommune {kode}: ukjent fylkesnummer")
        if kode not in folketal:
            raise Referansefeil(f"kommune {kode} manglar folketal")
        ut.append(
            Kommune(
                kommunenummer=kode,
                namn=namn[kode],
                fylkesnummer=fylkesnummer,
                fylke=FYLKE[fylkesnummer],
                innbyggjarar=folketal[kode],
            )
        )
    return ut


def _les(filnamn: str) -> str:
    return (
        resources.files("services.bosetting")
        .joinpath("data")
        .joinpath(filnamn)
        .read_text(encoding="utf-8")
    )


def default_kommunar() -> list[Kommune]:
    """The 356 kommunar of 2023 with their population on 1 January 2023 (shipped files)."""
    return kommunar(_les(KLASS_FIL), _les(FOLKETAL_FIL))


def default_tilbod() -> dict[str, Tilbod]:
    """The illustrative offers of every kommune (shipped ``tilbod.csv``)."""
    return parse_tilbod(_les(TILBOD_FIL))
