"""The README's benchmark table is the one bench/summary.py renders from bench/results/."""

from pathlib import Path

from bench import summary

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_shows_the_latest_results_table():
    assert summary.render() in README.read_text(), "run `python -m bench.summary` and copy its table into the README"


def test_every_benchmark_with_a_goal_is_in_the_table():
    benches = {r["bench"] for r in summary.rows()}
    assert benches == {"hop", "chain", "replay", "allocation", "kompetanse"}
    assert all(r["met"] is not None for r in summary.rows() if r["goal"] != "report")
