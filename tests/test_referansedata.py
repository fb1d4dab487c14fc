"""The kommune reference data: the shipped SSB files and the parsers (no database)."""

import re

import pytest

from services.bosetting.referansedata import (
    FYLKE,
    SEKTORAR,
    Referansefeil,
    default_kommunar,
    default_tilbod,
    kommunar,
    parse_folketal,
    parse_klass,
    parse_tilbod,
)

FYLKE_2023 = {
    "Oslo",
    "Rogaland",
    "Møre og Romsdal",
    "Nordland",
    "Viken",
    "Innlandet",
    "Vestfold og Telemark",
    "Agder",
    "Vestland",
    "Trøndelag",
    "Troms og Finnmark",
}


@pytest.fixture(scope="module")
def alle():
    return default_kommunar()


# --- the shipped data -----------------------------------------------------------------


def test_356_kommunar_with_unique_four_digit_codes(alle):
    kodar = [k.kommunenummer for k in alle]
    assert len(alle) == 356
    assert len(set(kodar)) == 356
    assert all(re.fullmatch(r"\d{4}", k) for k in kodar)
    assert kodar == sorted(kodar)
    assert all(k.namn and k.innbyggjarar > 0 for k in alle)


def test_all_eleven_counties_and_fylkesnummer(alle):
    assert {k.fylke for k in alle} == FYLKE_2023
    assert all(k.fylkesnummer == k.kommunenummer[:2] for k in alle)
    assert all(FYLKE[k.fylkesnummer] == k.fylke for k in alle)


def test_population_2023_matches_ssb(alle):
    total = sum(k.innbyggjarar for k in alle)
    assert abs(total - 5_488_984) <= 0.005 * 5_488_984
    per_kode = {k.kommunenummer: k for k in alle}
    assert 705_000 <= per_kode["0301"].innbyggjarar <= 713_000
    assert per_kode["0301"].namn == "Oslo"
    assert per_kode["4601"].namn == "Bergen"
    assert per_kode["5001"].namn == "Trondheim"
    assert per_kode["4647"].namn == "Sunnfjord"
    assert per_kode["3001"].fylke == "Viken"
    assert per_kode["5401"].fylke == "Troms og Finnmark"
    # the biggest and smallest, as SSB has them
    storst = max(alle, key=lambda k: k.innbyggjarar)
    minst = min(alle, key=lambda k: k.innbyggjarar)
    assert storst.kommunenummer == "0301"
    assert minst.innbyggjarar < 300


def test_every_kommune_has_an_offer(alle):
    tilbod = default_tilbod()
    assert set(tilbod) == {k.kommunenummer for k in alle}
    for t in tilbod.values():
        assert {"helse", "undervisning", "varehandel", "offentleg"} <= t.sektorar <= SEKTORAR
    sjukehus = sum(t.sjukehus for t in tilbod.values())
    assert 45 <= sjukehus <= 65
    per_kode = {k.kommunenummer: k for k in alle}
    for kode in ("0301", "4601", "5001", "1103", "5401"):
        assert tilbod[kode].sjukehus and tilbod[kode].vidaregaande
        assert tilbod[kode].mindrearig_teneste
    # services for unaccompanied minors only in larger kommunar
    assert all(
        per_kode[k].innbyggjarar > 5_000 for k, t in tilbod.items() if t.mindrearig_teneste
    )


# --- KLASS ----------------------------------------------------------------------------

KLASS = (
    '"code";"parentCode";"level";"name";"shortName";"presentationName";"validFrom";"validTo";"notes"\n'
    '"0301";"";"1";"Oslo";"";"";"";"";""\n'
    '"4647";"";"1";"Sunnfjord";"";"";"";"";""\n'
)


def test_klass_semicolon_quoted():
    assert parse_klass(KLASS) == {"0301": "Oslo", "4647": "Sunnfjord"}


def test_klass_bom_and_commas_unquoted():
    text = "\ufeffcode,parentCode,level,name\n0301,,1,Oslo\n5444,,1,Sør-Varanger\n"
    assert parse_klass(text) == {"0301": "Oslo", "5444": "Sør-Varanger"}


def test_klass_skips_codes_that_are_not_kommunar():
    text = KLASS + '"46";"";"1";"Vestland";"";"";"";"";""\n"9999";"";"1";"Uoppgitt";"";"";"";"";""\n'
    assert set(parse_klass(text)) == {"0301", "4647"}


def test_klass_errors_name_the_line():
    with pytest.raises(Referansefeil, match="linje 1"):
        parse_klass("kode_x;namn_y\n0301;Oslo\n")
    with pytest.raises(Referansefeil, match=r"linje 4: kommune 0301 står to gonger"):
        parse_klass(KLASS + '"0301";"";"1";"Oslo";"";"";"";"";""\n')


# --- StatBank 07459 -------------------------------------------------------------------

WIDE = (
    '"07459: Befolkning, etter region og år"\n'
    "\n"
    '"region";"Personer 2022";"Personer 2023"\n'
    '"0 Hele landet";5425270;5488984\n'
    '"K-0301 Oslo";699827;709037\n'
    '"K-4647 Sunnfjord";22116;22215\n'
    '"K-1401 Flora";.;.\n'
)

LONG = (
    '"07459: Befolkning, etter region, statistikkvariabel og år"\n'
    '"region";"statistikkvariabel";"år";"07459: Befolkning, etter region, statistikkvariabel og år"\n'
    '"0301 Oslo";"Personer";"2022";699827\n'
    '"0301 Oslo";"Personer";"2023";709037\n'
    '"4647 Sunnfjord";"Personer";"2023";22215\n'
    '"F-46 Vestland";"Personer";"2023";646205\n'
)


def test_folketal_wide_layout_takes_latest_year():
    assert parse_folketal(WIDE) == {"0301": 709037, "4647": 22215}
    assert parse_folketal(WIDE, aar=2022) == {"0301": 699827, "4647": 22116}


def test_folketal_long_layout():
    assert parse_folketal(LONG) == {"0301": 709037, "4647": 22215}
    assert parse_folketal(LONG, aar=2022) == {"0301": 699827}


def test_folketal_sums_other_dimensions_and_reads_bom_commas_spaces():
    text = (
        "\ufeff07459: Population by region, age and year\n"
        "region,age,Persons 2023\n"
        "K-1151 Utsira,0-66 years,150\n"
        "K-1151 Utsira,67 years or older,- \n"
        "0301,all ages,709 037\n"
    )
    assert parse_folketal(text) == {"1151": 150, "0301": 709037}


def test_folketal_bad_row_gives_line_number_and_only_the_code():
    text = WIDE.replace("22215", "tjuetotusen")
    with pytest.raises(Referansefeil) as feil:
        parse_folketal(text)
    assert str(feil.value) == "linje 6: ugyldig folketal for kommune 4647"
    with pytest.raises(Referansefeil, match="linje 5"):
        parse_folketal(WIDE.replace('"K-0301 Oslo";699827;709037', '"K-0301 Oslo";699827'))
    with pytest.raises(Referansefeil, match="region"):
        parse_folketal("kommune;innbyggjarar\n0301;709037\n")


def test_kommunar_joins_and_requires_population():
    assert [(k.kommunenummer, k.fylke, k.innbyggjarar) for k in kommunar(KLASS, WIDE)] == [
        ("0301", "Oslo", 709037),
        ("4647", "Vestland", 22215),
    ]
    utan_sunnfjord = WIDE.replace('"K-4647 Sunnfjord";22116;22215\n', "")
    with pytest.raises(Referansefeil, match="kommune 4647 manglar folketal"):
        kommunar(KLASS, utan_sunnfjord)


# --- tilbod ---------------------------------------------------------------------------

TILBOD = (
    "kommunenummer;vidaregaande;sjukehus;mindrearig_teneste;sektorar\n"
    "0301;1;1;1;helse,undervisning,varehandel,offentleg,it\n"
    "1151;0;0;0;helse,undervisning,varehandel,offentleg,havbruk\n"
)


def test_tilbod_parses():
    tilbod = parse_tilbod("\ufeff" + TILBOD)
    assert tilbod["0301"].sjukehus and "it" in tilbod["0301"].sektorar
    assert not tilbod["1151"].vidaregaande
    assert tilbod["1151"].sektorar == frozenset(
        {"helse", "undervisning", "varehandel", "offentleg", "havbruk"}
    )


@pytest.mark.parametrize(
    ("rad", "melding"),
    [
        ("1151;0;0;kanskje;helse", "linje 3: kommune 1151: mindrearig_teneste må vere 1 eller 0"),
        ("1151;0;0;0;helse,romfart", "linje 3: kommune 1151: ukjend sektor"),
        ("115;0;0;0;helse", "linje 3: ugyldig kommunenummer"),
        ("1151;0;0;0", "linje 3: 4 felt, venta 5"),
        ("0301;0;0;0;helse", "linje 3: kommune 0301 står to gonger"),
    ],
)
def test_tilbod_bad_row(rad, melding):
    text = TILBOD.splitlines()[0] + "\n" + TILBOD.splitlines()[1] + "\n" + rad + "\n"
    with pytest.raises(Referansefeil) as feil:
        parse_tilbod(text)
    assert str(feil.value) == melding
