"""The pure parts of bench/chain.py: percentiles, goals, the results table, hop joins,
throughput and the profile summary. No chain, no timings."""

from bench.chain import (
    Goal,
    collapsed_summary,
    distribution,
    hop_latencies,
    producer_of,
    row,
    table,
    take_persons,
    throughput,
    timeline,
    window_rate,
)


def test_distribution_uses_nearest_rank_percentiles():
    d = distribution([float(x) for x in range(100, 0, -1)])  # 1..100, unsorted
    assert d == {"n": 100, "p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0, "mean": 50.5}
    assert distribution([7.0])["p99"] == 7.0
    assert distribution([]) == {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}


def test_goals_on_value_or_ratio_and_reported_only():
    at_least = Goal("value >= 280", "value", ">=", 280.0)
    assert at_least.met(281, None) is True
    assert at_least.met(279.9, 10.0) is False
    assert at_least.met(None, None) is False
    under = Goal("p99 < 25 ms", "value", "<=", 25.0)
    assert under.met(24.9, None) is True and under.met(25.1, None) is False
    by_ratio = Goal("ratio >= 0.9", "ratio", ">=", 0.9)
    assert by_ratio.met(1, 0.95) is True and by_ratio.met(100, 0.5) is False
    assert Goal("report").met(1, 1) is None


def test_row_computes_ratio_and_met():
    r = row("persons/s", 140.0, "raw", 280.0, Goal("value >= 280", "value", ">=", 280.0))
    assert r["ratio"] == 0.5 and r["met"] is False
    assert row("x", 1, "none", 0)["ratio"] is None  # no division by zero
    assert row("x", "yes")["ratio"] is None


def test_table_has_the_hop_md_columns():
    rows = [row("a", 2.0, "b", 4.0, Goal("ratio >= 0.5", "ratio", ">=", 0.5)), row("c", 3, "d", 3)]
    lines = table(rows).splitlines()
    assert lines[0] == "| figure | value | baseline | baseline value | ratio | goal | met |"
    assert lines[1] == "|---|---|---|---|---|---|---|"
    assert lines[2] == "| a | 2.0 | b | 4.0 | 0.5 | ratio >= 0.5 | yes |"
    assert lines[3] == "| c | 3 | d | 3 | 1.0 | report | n/a (reported) |"


def test_hops_join_inbox_rows_to_their_producers():
    produced = {"e1": 100.0, "e2": 100.5, "e3": 101.0}
    consumed = [
        ("bosetting", "urn:chain:kartlegging", "e1", 100.010),
        ("kompetanse", "urn:chain:kartlegging", "e1", 100.030),
        ("kartlegging", "urn:no:udi", "e2", 100.504),
        ("bosetting", "urn:no:kommune:0301", "e9", 105.0),  # not produced in the window: skipped
    ]
    edges = hop_latencies(produced, consumed)
    assert set(edges) == {"kartlegging -> bosetting", "kartlegging -> kompetanse", "udi -> kartlegging"}
    assert round(edges["kartlegging -> bosetting"][0], 3) == 10.0
    assert round(edges["udi -> kartlegging"][0], 3) == 4.0
    assert producer_of("urn:no:mottak:mottak-01") == "mottak"


def test_throughput_over_the_whole_run_and_the_middle():
    persons = {f"s{i}": 2 for i in range(10)}
    finished = {f"s{i}": 10.0 + i for i in range(10)}  # one household a second from t=10
    tp = throughput(0.0, finished, persons)
    assert tp["persons"] == 20 and tp["seconds"] == 19.0
    assert tp["persons_per_second"] == round(20 / 19, 1)
    assert tp["steady_persons_per_second"] == 2.0  # 10% at t=10, 90% at t=18: 16 persons in 8 s
    assert throughput(0.0, {}, persons)["persons"] == 0
    assert timeline(0.0, finished, persons, 5.0) == [0, 0, 10, 10]
    assert window_rate(finished, persons, 10.0, 14.0) == 2.5  # 5 households of 2 in 4 s
    assert window_rate(finished, persons, 14.0, 14.0) is None


def test_take_persons_stops_once_enough():
    class H:
        def __init__(self, n):
            self.persons = n

    hh = [H(3), H(1), H(4), H(2)]
    assert take_persons(hh, 4) == hh[:2]
    assert take_persons(hh, 5) == hh[:3]
    assert take_persons(hh, 100) == hh


def test_collapsed_profile_summary():
    root = "process 12 (python -m x);<module> (services/x/app.py:1);serve (shared/service.py:9)"
    text = (
        f"{root};River._apply (shared/river.py:90);save (services/x/store.py:5);Connection.execute (asyncpg/connection.py:300) 30\n"
        f"{root};River._apply (shared/river.py:90);parse (shared/envelope.py:40) 10\n"
        f"{root};EpollSelector.select (selectors.py:468) 60\n"
    )
    s = collapsed_summary(text, top=2)
    assert s["samples"] == 100
    assert s["self"] == [("EpollSelector.select (selectors.py)", 0.6), ("Connection.execute (asyncpg/connection.py)", 0.3)]
    assert s["self_by_package"] == [("selectors", 0.6), ("asyncpg", 0.3)]
    # the project's frames on the stack, without those under which everything runs
    assert s["total"] == [("River._apply (shared/river.py)", 0.4), ("save (services/x/store.py)", 0.3)]
    assert collapsed_summary("") == {"samples": 0, "self": [], "self_by_package": [], "total": []}
