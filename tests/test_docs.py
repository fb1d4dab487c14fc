"""The event documentation is generated from the catalogue; a stale copy fails here."""

from sim.docs import generated


def test_generated_event_docs_are_up_to_date():
    stale = [str(path) for path, text in generated().items() if not path.exists() or path.read_text(encoding="utf-8") != text]
    assert not stale, f"run `python -m sim.docs` and commit: {stale}"
