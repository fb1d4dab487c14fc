"""The chaos suite (sim/chaos.py) in a small configuration, inside the normal test run:
its own throwaway RabbitMQ node and PostgreSQL cluster (sim/sandbox.py), restarted and
then removed; the machine's shared broker and database are never touched. `make chaos`
runs the full size (10,000 persons).

One run (about two minutes) serves the tests below: each asserts one guarantee on its
report."""

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from sim import chaos
from sim.sandbox import Sandbox

# Ports of our own, beside the test environment's services (CHAIN_TEST_BASE_PORT .. +2):
# two test runs on one machine get two sandboxes.
BASE_PORT = int(os.environ.get("CHAIN_TEST_BASE_PORT", "8201")) + 70
SMALL = chaos.Config(persons=200, seed=7, fault_window=35.0, kills=1, rate=20.0, replica_persons=100, timeout=240.0, base_port=BASE_PORT)


@pytest.fixture(scope="module")
async def report(tmp_path_factory) -> dict:
    return await chaos.run(dataclasses.replace(SMALL, results=tmp_path_factory.mktemp("chaos")))


# --- the plan and its pure parts ----------------------------------------------------------------


def test_the_plan_follows_from_the_seed_alone():
    cfg = chaos.Config(kills=3, fault_window=100.0, seed=5)
    plan = chaos.schedule(cfg)
    assert [(f.at, f.kind, f.target) for f in plan] == [(f.at, f.kind, f.target) for f in chaos.schedule(cfg)]
    assert plan != chaos.schedule(chaos.Config(kills=3, fault_window=100.0, seed=6))
    kinds = [(f.kind, f.target) for f in plan]
    for process in ("kartlegging", "bosetting", "kompetanse", "kartlegging-relay", "bosetting-relay", "kompetanse-relay"):
        assert kinds.count(("sigkill", process)) == 3
    for service in ("kartlegging", "bosetting", "kompetanse"):
        assert kinds.count(("sigterm", service)) == 1
    assert kinds.count(("rabbitmq_restart", "rabbitmq")) == 1 and kinds.count(("postgres_restart", "postgresql")) == 1
    assert all(0 < f.at <= 100.0 for f in plan) and [f.at for f in plan] == sorted(f.at for f in plan)


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [("vedtak.fattet", "vedtak.fattet", True), ("bosetting.*", "bosetting.bosatt", True), ("bosetting.*", "bosetting", False),
     ("#", "a.b.c", True), ("mottak.#", "mottak", True), ("*.bosatt", "bosetting.bosatt", True), ("kartlegging.*", "bosetting.bosatt", False)],
)
def test_topic_patterns_match_as_the_broker_matches_them(pattern, key, matches):
    assert chaos.topic_matches(pattern, key) is matches


def test_a_sigterm_counts_as_graceful_only_with_exit_0_in_time():
    def stopped(result):
        return chaos.Fault(1.0, "sigterm", "bosetting", result=result)

    assert chaos.graceful([stopped("exit 0 after 2.1s")]) == []
    assert chaos.graceful([stopped("exit -15 after 0.2s")]) and chaos.graceful([stopped("exit None after 75.0s")])
    assert chaos.graceful([stopped("exit 0 after 50.0s")])


# --- one small run ---------------------------------------------------------------------------


async def test_faults_lose_nothing_and_settle_each_household_exactly_once(report):
    """SIGKILL of every service and relay, a RabbitMQ and a PostgreSQL restart, under load."""
    f = report["faults"]
    assert {k: n for k, n in f["faults_by_kind"].items()} == {"sigkill": 6, "sigterm": 3, "rabbitmq_restart": 1, "postgres_restart": 1}
    assert not f["faults_failed"], f["faults_failed"]
    assert f["drained"] and f["unfinished"] == 0, f["unfinished_examples"]
    assert f["lost"] == 0 and f["duplicated"] == 0, {k: c for k, c in f["checks"].items() if c["lost"] or c["duplicated"]}
    assert f["checks"]["bosetting: households settled (bosatt events)"]["actual"] == f["settled"] > 0
    assert f["dlq_depth"] == 0, f["dlq"]
    assert not f["simulator_errors"] and not f["crashed"]


async def test_sigterm_under_load_exits_0_within_the_graceful_timeout(report):
    """Nothing in hand is lost or half-applied (the checks above), and the process says it
    stopped cleanly: exit 0 in time."""
    stops = [f for f in report["faults"]["faults"] if f["kind"] == "sigterm"]
    assert len(stops) == 3
    assert chaos.graceful([chaos.Fault(**f) for f in stops]) == []


async def test_two_replicas_with_duplicated_and_reordered_deliveries_end_as_one_replica(report):
    r = report["replicas"]
    assert r["mangled_cases"] > 0 and r["driver_copies"] > 0 and sum(r["tapped_copies"].values()) > 0
    for run in (r["single"], r["replicas"]):
        assert run["unfinished"] == 0 and run["lost"] == 0 and run["duplicated"] == 0 and run["dlq_depth"] == 0
    applied = r["replicas"]["applied_per_process"]
    assert all(applied[name] > 0 for name in ("kartlegging", "kartlegging-2", "bosetting", "bosetting-2", "kompetanse", "kompetanse-2")), applied
    assert r["equal"], r["differences"]


async def test_the_report_is_written_and_the_sandbox_removed(report):
    results = Path(report["config"]["results"])
    assert (results / "chaos.json").exists() and "nothing lost" in (results / "chaos.md").read_text()
    assert report["passed"]
    assert not Path(report["sandbox"]["root"]).exists()
    ping = subprocess.run(Sandbox(SMALL.base_port)._ctl("ping"), capture_output=True, timeout=60)
    assert ping.returncode != 0  # the node is gone
