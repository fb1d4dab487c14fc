"""The published event schemas (docs/schemas/) are a contract: within a version only
additive changes. Each event version's JSON Schema, regenerated from the catalogue, is
checked against the file in the working tree, the one committed at HEAD, and every
revision committed since this test was (contracts are published from that commit on): a
field removed, a type narrowed or changed, a new required field or an enum value removed
fails here; a new optional field passes. Then make it a new version instead.

The checker itself (`sim.docs.incompatibilities`) is tested on hand-made schemas below."""

import json
import shutil
import subprocess
from datetime import date
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from sim.docs import ROOT, event_schemas, incompatibilities, published_breaks
from shared.catalogue import CATALOGUE

SCHEMAS = "docs/schemas"


# --- the checker ----------------------------------------------------------------------------


def obj(properties: dict, required: list[str] = (), **extra) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), **extra}


BASE = obj(
    {
        "kommunenummer": {"type": "string", "pattern": "^[0-9]{4}$"},
        "dato": {"type": "string", "format": "date"},
        "tal": {"type": "integer", "minimum": 0},
        "arsak": {"type": "string", "enum": ["utreist", "busett_sjolv", "anna"]},
        "merknad": {"anyOf": [{"type": "string", "maxLength": 100}, {"type": "null"}], "default": None},
        "personar": {"type": "array", "items": {"$ref": "#/$defs/Person"}},
    },
    ["kommunenummer", "dato", "arsak", "personar"],
    **{"$defs": {"Person": obj({"person_id": {"type": "string", "pattern": "^p-[0-9a-f]{16}$"}, "fodselsar": {"type": "integer"}}, ["person_id"])}},
)


def changed(edit) -> dict:
    new = json.loads(json.dumps(BASE))
    edit(new)
    return new


def test_the_same_schema_is_compatible():
    assert incompatibilities(BASE, json.loads(json.dumps(BASE))) == []


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s["properties"].update(ny={"type": "string", "format": "date"}),  # a new optional field
        lambda s: s["properties"].update(valfri={"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}),
        lambda s: s["properties"]["arsak"]["enum"].append("vedtak_oppheva"),  # a new enum value
        lambda s: s["properties"]["tal"].update(description="Number of persons"),  # documentation
        lambda s: s.update(title="Trukke", description="Withdrawn"),
        lambda s: s["$defs"]["Person"]["properties"].update(kjonn={"type": "string", "enum": ["K", "M", "X"]}),  # nested, optional
    ],
    ids=["optional-field", "optional-nullable-field", "enum-value-added", "description", "title", "nested-optional-field"],
)
def test_additive_changes_pass(edit):
    assert incompatibilities(BASE, changed(edit)) == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s["properties"].pop("tal"), "tal: field removed"),
        (lambda s: s["properties"].pop("kommunenummer"), "kommunenummer: field removed"),
        (lambda s: s["$defs"]["Person"]["properties"].pop("fodselsar"), "personar[].fodselsar: field removed"),
        (lambda s: s["properties"]["tal"].update(type="string"), "tal: type changed from integer to string"),
        (lambda s: s["properties"]["merknad"].update(anyOf=[{"type": "string", "maxLength": 100}]), "merknad: type narrowed: null no longer allowed"),
        (lambda s: s["properties"]["tal"].update(type=["integer", "null"]), "tal: type widened: null now allowed"),
        (lambda s: s["$defs"]["Person"]["properties"]["fodselsar"].update(type="number"), "personar[].fodselsar: type changed"),
        (lambda s: s["properties"]["personar"].update(type="object"), "personar: type changed from array to object"),
        (lambda s: (s["properties"].update(ny={"type": "string"}), s["required"].append("ny")), "ny: new required field"),
        (lambda s: s["required"].append("tal"), "tal: field became required"),
        (lambda s: s["$defs"]["Person"]["required"].append("fodselsar"), "personar[].fodselsar: field became required"),
        (lambda s: s["required"].remove("dato"), "dato: no longer required"),
        (lambda s: s["properties"]["arsak"]["enum"].remove("anna"), "arsak: enum value removed: anna"),
        (lambda s: s["properties"]["arsak"].pop("enum"), "arsak: no longer restricted"),
        (lambda s: s["properties"]["kommunenummer"].update(pattern="^[0-9]{3}$"), "kommunenummer: pattern changed"),
        (lambda s: s["properties"]["merknad"]["anyOf"][0].update(maxLength=50), "merknad: maxLength changed from 100 to 50"),
        (lambda s: s["properties"]["tal"].update(minimum=1), "tal: minimum changed"),
        (lambda s: s["properties"]["dato"].update(format="date-time"), "dato: format changed"),
        (lambda s: s["properties"]["merknad"].update(default="ingen"), "merknad: default changed"),
        (lambda s: s.update(additionalProperties=False), "(root): additionalProperties changed"),
    ],
    ids=[
        "field-removed", "required-field-removed", "nested-field-removed", "type-changed", "type-narrowed",
        "type-widened", "nested-type-changed", "array-to-object", "new-required-field", "optional-became-required",
        "nested-became-required", "required-became-optional", "enum-value-removed", "enum-dropped", "pattern-changed",
        "max-length-narrowed", "minimum-changed", "format-changed", "default-changed", "closed-to-extra-fields",
    ],
)
def test_each_incompatible_kind_is_caught(edit, expected):
    problems = incompatibilities(BASE, changed(edit))
    assert any(p.startswith(expected) for p in problems), problems


class V1(BaseModel):
    kommunenummer: str = Field(pattern=r"^[0-9]{4}$")
    busetjingsdato: date
    kategori: Literal["einsleg_mindrearig", "barnefamilie", "vaksen"]


class V1Additive(V1):
    tal_personar: int = Field(default=0, ge=0)
    kategori: Literal["einsleg_mindrearig", "barnefamilie", "vaksen", "overforing"]


class V1Broken(BaseModel):
    kommunenummer: int
    kategori: Literal["barnefamilie", "vaksen"]
    vedtaksdato: date


def test_pydantic_models_as_the_catalogue_writes_them():
    assert incompatibilities(V1.model_json_schema(), V1Additive.model_json_schema()) == []
    problems = incompatibilities(V1.model_json_schema(), V1Broken.model_json_schema())
    assert {p.split(":")[0] for p in problems} == {"busetjingsdato", "kommunenummer", "kategori", "vedtaksdato"}, problems


# --- the published schemas --------------------------------------------------------------------


def test_every_event_version_has_a_published_schema():
    missing = [name for name in event_schemas() if not (ROOT / SCHEMAS / name).exists()]
    assert not missing, f"run `chain docs` and commit: {missing}"


def test_the_catalogue_is_compatible_with_the_schemas_in_the_working_tree():
    assert published_breaks() == [], "an incompatible change within a version: make it a new version"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def _committed() -> list[tuple[str, str, dict]]:
    """(commit, file, schema): the event schemas at HEAD, and every revision of them
    committed since this test was first committed."""
    if not shutil.which("git") or subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout: only the working tree is checked")
    revisions = [("HEAD", line.rsplit("/", 1)[-1]) for line in _git("ls-tree", "--name-only", "HEAD", f"{SCHEMAS}/").split()]
    first = _git("log", "--diff-filter=A", "--format=%H", "--", "tests/test_schema_compat.py").split()
    if first:
        commit = None
        for line in _git("log", "--format=%H", "--name-only", "--diff-filter=AM", f"{first[-1]}^..HEAD", "--", f"{SCHEMAS}/*.json").splitlines():
            if len(line) == 40 and "/" not in line:
                commit = line
            elif line.count("/") == 2:  # docs/schemas/<file>, not docs/schemas/http/
                revisions.append((commit, line.rsplit("/", 1)[-1]))
    return [
        (commit, name, json.loads(_git("show", f"{commit}:{SCHEMAS}/{name}")))
        for commit, name in sorted(set(revisions), key=lambda r: (r[1], r[0])) if name.endswith(".json")
    ]


def test_the_catalogue_is_compatible_with_every_committed_revision():
    current = event_schemas()
    breaks = []
    for commit, name, schema in _committed():
        if name in current:
            breaks += [f"{name} (as of {commit[:10]}): {p}" for p in incompatibilities(schema, current[name])]
    assert not breaks, "an incompatible change within a published version: make it a new version\n" + "\n".join(breaks)


def test_a_published_version_is_retired_only_beside_a_newer_one():
    """A new version runs beside the old one until subscribers have moved; then the old one
    may leave the catalogue (its schema stays published). An event is never dropped outright."""
    latest: dict[str, int] = {}
    for et in CATALOGUE.values():
        latest[et.name] = max(latest.get(et.name, 0), et.version)
    orphans = []
    for _, name, _ in _committed():
        if name == "envelope.json" or name in event_schemas():
            continue
        event, version = name.removesuffix(".json").rsplit(".v", 1)
        if latest.get(event, 0) <= int(version):
            orphans.append(name)
    assert not orphans, f"published event versions gone without a newer version: {orphans}"


def test_the_docs_refuse_to_overwrite_a_published_schema_incompatibly(tmp_path, monkeypatch, capsys):
    import sim.docs as docs

    (tmp_path / "docs" / "schemas").mkdir(parents=True)
    name = "bosetting.trukke.v1.json"
    published = json.loads((ROOT / SCHEMAS / name).read_text(encoding="utf-8"))
    published["required"] = [*published.get("required", []), "kommunenummer"]  # as if it had been required
    (tmp_path / "docs" / "schemas" / name).write_text(json.dumps(published), encoding="utf-8")
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    assert docs.main() == 1
    assert "kommunenummer: no longer required" in capsys.readouterr().err
    assert json.loads((tmp_path / "docs" / "schemas" / name).read_text(encoding="utf-8")) == published  # untouched
    assert not (tmp_path / "docs" / "asyncapi.json").exists()
