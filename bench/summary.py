"""One table of every benchmark's latest result against its goal (`python -m bench.summary`):
read from bench/results/*.json, written to bench/results/summary.md and printed. The
README carries the same table (tests/test_bench_summary.py keeps the two equal), so it
always shows the figures the results directory holds, with the machine they ran on."""

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
HEADER = "| benchmark | figure | value | baseline | baseline value | ratio | goal | met |\n|---|---|---|---|---|---|---|---|"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _met(met: bool | None) -> str:
    return {True: "yes", False: "no", None: "n/a"}[met]


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.3g}"


def _row(bench: str, figure: str, value, baseline: str, baseline_value, ratio, goal: str, met: bool | None) -> dict:
    return {
        "bench": bench, "figure": figure, "value": value, "baseline": baseline,
        "baseline_value": baseline_value, "ratio": ratio, "goal": goal, "met": met,
    }


def _chain_row(chain: dict, prefix: str) -> dict | None:
    return next((r for r in chain["rows"] if r["figure"].startswith(prefix)), None)


def rows() -> list[dict]:
    out = []
    if hop := _load("hop"):
        out.append(_row("hop", "durable hop, msg/s", hop["value"], "raw aio-pika forward, msg/s", hop["baseline_value"], hop["ratio"], "ratio >= 0.5", hop["met"]))
    if chain := _load("chain"):
        for prefix, goal in (
            ("whole chain, persons/s (first", "value >= 280.8"),
            ("CPU per settled person", "value <= 7.1"),
            ("hop p99 ms, all hops", "value < 25"),
        ):
            if r := _chain_row(chain, prefix):
                out.append(_row("chain", r["figure"].split(" (")[0], r["value"], r["baseline"], r["baseline_value"], r["ratio"], goal, r["met"]))
        peaks = [r for r in chain["rows"] if r["figure"].startswith("peak RSS MiB")]
        if peaks:
            top = max(peaks, key=lambda r: r["value"])
            name = top["figure"].removeprefix("peak RSS MiB, ").split(" (")[0]
            out.append(_row("chain", f"peak RSS MiB, largest process ({name})", top["value"], top["baseline"], top["baseline_value"], top["ratio"], "report", None))
    if replay := _load("replay"):
        out.append(_row("replay", "replay, events/s", replay["value"], "bare read, events/s", replay["baseline_value"], replay["ratio"], "ratio >= 0.7", replay["met"]))
    if allocation := _load("allocation"):
        backlog = allocation["etterslep"]
        out.append(_row(
            "allocation", f"2023 backlog ({backlog['personar']:,} persons): optimiser score", backlog["optimer"]["objektiv"],
            "greedy score", backlog["gradig"]["objektiv"], backlog["score_ratio"], "ratio > 1", backlog["score_ratio"] > 1,
        ))
        out.append(_row(
            "allocation", "2023 backlog: optimiser solve, s", backlog["optimer"]["sekund"],
            "greedy solve, s", backlog["gradig"]["sekund"], backlog["optimer"]["sekund"] / backlog["gradig"]["sekund"], "report", None,
        ))
    if kompetanse := _load("kompetanse"):
        audited, bare = kompetanse["phases"]["audited"], kompetanse["phases"]["bare"]
        out.append(_row("kompetanse", "requests/s, audited", audited["requests_per_second"], "bare FastAPI, requests/s", bare["requests_per_second"], kompetanse["ratio"], "report", None))
        out.append(_row("kompetanse", "p99 ms, audited", audited["p99_ms"], "bare FastAPI p99 ms", bare["p99_ms"], audited["p99_ms"] / bare["p99_ms"], "report", None))
    return out


def machines() -> list[str]:
    """The machines the results ran on (a string, or a dict with a description)."""
    found = []
    for name in ("hop", "chain", "replay", "allocation", "kompetanse"):
        machine = (_load(name) or {}).get("machine")
        if isinstance(machine, dict):
            machine = f"{machine['description']}, Python {machine.get('python', '?')}"
        if machine and machine not in found:
            found.append(machine)
    return found


def render() -> str:
    lines = [HEADER]
    for r in rows():
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3g}"
        lines.append(
            f"| {r['bench']} | {r['figure']} | {_num(r['value'])} | {r['baseline']} | {_num(r['baseline_value'])} | {ratio} | {r['goal']} | {_met(r['met'])} |"
        )
    lines.append("")
    lines.append(f"Machine: {'; '.join(machines())}. Each row's details are in `bench/results/<benchmark>.md`.")
    return "\n".join(lines) + "\n"


def main() -> None:
    text = render()
    (RESULTS / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
