"""The rollout's plain functions: the analysis's arithmetic and judgement, the durable record,
the targets' request builders, the mirror's comparison, the settings."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from monitoring.rollout import CHECKS
from rollout.analysis import BOUND_FIELDS, Side, bounds_from, histogram_bins, judge, psi
from rollout.controller import RolloutRequest, parse_duration, parse_steps
from rollout.helm import prepare_values, promote_values, rollback_values, upgrade_command
from rollout.kserve import version_of, with_version
from rollout.mirror import agreement, decisions_of
from rollout.state import RolloutBusy, RolloutError, RolloutState, RolloutStore
from vigil.errors import ConfigError
from vigil.settings import RolloutHelmSettings, RolloutSettings, load_settings

pytestmark = pytest.mark.unit

BOUNDS = bounds_from(RolloutSettings())
SCORE_LE = (0.1, 0.5, 1.0, math.inf)


def side(requests: float = 1_000, errors: float = 0, p99_ms: float | None = 20,
         transactions: float = 10_000, frauds: float = 100, degraded: float = 0,
         scores: tuple[float, ...] = (9_000, 600, 400, 0)) -> Side:
    return Side(window_s=60, requests=requests, server_errors=errors,
                p99_s=None if p99_ms is None else p99_ms / 1e3, transactions=transactions,
                frauds=frauds, degraded=degraded, score_bounds=SCORE_LE, score_counts=scores)


def failed(checks) -> set[str]:
    return {c.name for c in checks if not c.passed}


# ------------------------------------------------------------------------------ analysis


def test_psi_of_equal_shares_is_zero_and_grows_with_the_shift():
    assert psi([900, 60, 40], [900, 60, 40]) == 0.0
    assert psi([900, 60, 40], [90, 6, 4]) < 1e-3  # equal shares; only the smoothing differs
    # By hand, without smoothing: shares (0.5, 0.5) against (0.9, 0.1).
    expected = (0.9 - 0.5) * math.log(0.9 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)
    assert psi([5e8, 5e8], [9e8, 1e8]) == pytest.approx(expected, rel=1e-6)
    assert psi([500, 500], [900, 100]) > psi([500, 500], [600, 400]) > 0
    with pytest.raises(ValueError, match="different bins"):
        psi([1, 2], [1, 2, 3])


def test_histogram_bins_from_cumulative_buckets():
    bounds, counts = histogram_bins({"+Inf": 10.0, "0.5": 7.0, "0.1": 5.0, "1.0": 9.5})
    assert bounds == (0.1, 0.5, 1.0, math.inf)
    assert counts == (5.0, 2.0, 2.5, 0.5)
    # increase() extrapolation can make a bucket dip below the previous one: no negative bin.
    assert histogram_bins({"0.1": 5.0, "0.5": 4.9, "+Inf": 6.0})[1] == (5.0, 0.0, 1.0)


def test_a_canary_like_its_primary_passes_every_check():
    checks = judge(side(), side(), BOUNDS, agreement=(10_000, 0))
    assert [c.name for c in checks] == ["evidence", "success_rate", "p99_latency",
                                        "p99_vs_primary", "degraded_share", "score_psi",
                                        "decision_rate", "decision_agreement"]
    assert tuple(c.name for c in checks) == CHECKS  # the metric's label values
    assert failed(checks) == set()


@pytest.mark.parametrize(("canary", "defect"), [
    (side(requests=5), {"evidence"}),
    (side(errors=11), {"success_rate"}),  # 98.9% < 99%
    (side(p99_ms=600, requests=1_000), {"p99_latency", "p99_vs_primary"}),
    (side(p99_ms=41), {"p99_vs_primary"}),  # > 20 * 1.5 + 10
    (side(degraded=200), {"degraded_share"}),  # +2 points
    (side(scores=(2_000, 3_000, 5_000, 0)), {"score_psi"}),
    (side(frauds=400), {"decision_rate"}),  # 4% against 1%
    (side(p99_ms=None), {"p99_latency", "p99_vs_primary"}),
])
def test_each_defect_fails_its_check(canary, defect):
    assert failed(judge(canary, side(), BOUNDS)) == defect


def test_the_bounds_are_inclusive_and_relative_latency_uses_the_primary():
    assert not failed(judge(side(errors=10, p99_ms=40), side(), BOUNDS))  # 99.0%, 40 ms
    slower_primary = side(p99_ms=100)
    assert not failed(judge(side(p99_ms=160), slower_primary, BOUNDS))
    assert failed(judge(side(p99_ms=161), slower_primary, BOUNDS)) == {"p99_vs_primary"}


def test_against_a_baseline_from_another_window_latency_is_only_judged_absolutely():
    checks = judge(side(p99_ms=300), side(p99_ms=20), BOUNDS, same_window=False)
    assert "p99_vs_primary" not in {c.name for c in checks}
    assert not failed(checks)
    assert failed(judge(side(p99_ms=600), side(), BOUNDS, same_window=False)) == {
        "p99_latency"}


def test_too_few_transactions_is_no_evidence_for_the_score_checks():
    checks = judge(side(transactions=50, frauds=1), side(), BOUNDS)
    assert failed(checks) == {"degraded_share", "score_psi", "decision_rate"}
    assert all("no evidence" in c.detail for c in checks if not c.passed)


def test_decision_agreement_in_shadow_mode():
    assert not failed(judge(side(), side(), BOUNDS, agreement=(9_800, 200)))
    assert failed(judge(side(), side(), BOUNDS, agreement=(9_000, 1_000))) == {
        "decision_agreement"}
    assert failed(judge(side(), side(), BOUNDS, agreement=(0, 0))) == {"decision_agreement"}
    assert failed(judge(side(), side(), BOUNDS, agreement=(50, 0))) == {"decision_agreement"}


def test_bounds_come_from_the_settings():
    settings = load_settings(env={"VIGIL_ROLLOUT__MAX_SCORE_PSI": "0.1",
                                  "VIGIL_ROLLOUT__MIN_SUCCESS_RATE": "0.995"})
    bounds = bounds_from(settings.rollout)
    assert set(bounds) == set(BOUND_FIELDS)
    assert bounds["max_score_psi"] == 0.1 and bounds["min_success_rate"] == 0.995


# ------------------------------------------------------------------------------ plan


def test_durations_and_steps():
    assert parse_duration("60s") == 60 and parse_duration("1.5m") == 90
    assert parse_duration("500ms") == 0.5 and parse_duration("2") == 2
    assert parse_steps("10,25,50,100") == (10, 25, 50, 100)
    for bad in ("soon", "-3s", "0s"):
        with pytest.raises(RolloutError):
            parse_duration(bad)
    with pytest.raises(RolloutError, match="strictly increasing"):
        parse_steps("50,10")
    with pytest.raises(RolloutError, match=r"within 1\.\.100"):
        parse_steps("10,150")


def test_rollout_settings_from_the_environment():
    settings = load_settings(env={
        "VIGIL_ROLLOUT__STEPS": "5,50", "VIGIL_ROLLOUT__INTERVAL_S": "30",
        "VIGIL_ROLLOUT__TARGET": "kserve", "VIGIL_ROLLOUT__KSERVE__MODE": "Knative",
        "VIGIL_ROLLOUT__LOCAL__PORT": "9000", "VIGIL_ROLLOUT__HELM__RELEASE": "prod",
    })
    r = settings.rollout
    assert (r.steps, r.interval_s, r.target) == ((5, 50), 30.0, "kserve")
    assert (r.kserve.mode, r.local.port, r.helm.release) == ("Knative", 9000, "prod")
    request = RolloutRequest.from_settings(settings, 3, threshold=5)
    assert (request.steps, request.target, request.threshold, request.version) == (
        (5, 50), "kserve", 5, 3)
    with pytest.raises(ConfigError, match=r"VIGIL_ROLLOUT__KSERVE__MODE: rollout\.kserve\.mode"):
        load_settings(env={"VIGIL_ROLLOUT__KSERVE__MODE": "Serverless"})
    with pytest.raises(ConfigError, match=r"VIGIL_ROLLOUT__STEPS: rollout\.steps"):
        load_settings(env={"VIGIL_ROLLOUT__STEPS": "[]"})
    with pytest.raises(ConfigError, match="rollout has no field 'steps_'"):
        load_settings(env={"VIGIL_ROLLOUT__STEPS_": "10"})


# ------------------------------------------------------------------------------ the record


def state(**fields) -> RolloutState:
    values = dict(id="fraud-v2-x", model_name="fraud", version=2, primary_version=1,
                  target={"kind": "local"}, steps=[10, 100], interval_s=60, threshold=3,
                  shadow=False, shadow_intervals=3, bounds=BOUNDS,
                  prometheus_url="http://p", pushgateway_url=None)
    values.update(fields)
    return RolloutState(**values)


def test_state_round_trips_and_is_replaced_atomically(tmp_path: Path):
    store = RolloutStore(tmp_path, "fraud")
    assert store.load() is None
    current = state()
    store.save(current)
    current.phase, current.step, current.failed_analyses = "progressing", 1, 2
    store.save(current)
    assert store.load() == current
    assert sorted(p.name for p in store.dir.iterdir()) == ["state.json"]  # no leftovers
    (store.dir / "state.json").write_text(json.dumps({**current.to_dict(), "extra": 1}))
    with pytest.raises(RolloutError, match="unknown fields"):
        store.load()


def test_history_is_appended_and_survives_a_torn_last_line(tmp_path: Path):
    store = RolloutStore(tmp_path, "fraud")
    first, second = state(), state(id="fraud-v3-y", version=3)
    store.append(first, "started", "go")
    store.append(second, "started")
    store.append(first, "analysis", "step 1", passed=False, analysis={"checks": []})
    with open(store.dir / "history.jsonl", "a") as f:
        f.write('{"time": 1, "rollout_id": "fraud-v2-x", "eve')  # killed mid-write
    assert [e["event"] for e in store.events(first.id)] == ["started", "analysis"]
    assert [e["event"] for e in store.events()] == ["started", "started", "analysis"]
    assert store.events(first.id)[1]["passed"] is False


def test_one_controller_at_a_time(tmp_path: Path):
    store = RolloutStore(tmp_path, "fraud")
    assert not store.controller_running()
    with store.controller_lock():
        assert store.controller_running()
        assert store.controller_pid() == os.getpid()
        with pytest.raises(RolloutBusy, match=f"pid {os.getpid()}"), store.controller_lock():
            pass
    assert not store.controller_running()


def test_operator_requests_are_taken_once_and_only_by_their_rollout(tmp_path: Path):
    store = RolloutStore(tmp_path, "fraud")
    assert store.take_request("a") is None
    store.request("abort", "a")
    assert store.take_request("a") == "abort"
    assert store.take_request("a") is None
    store.request("promote", "old")
    assert store.take_request("a") is None  # meant for another rollout: dropped
    with pytest.raises(RolloutError, match="unknown request"):
        store.request("pause", "a")


# ------------------------------------------------------------------------------ targets


def test_the_candidate_version_goes_into_the_container_args_and_labels():
    predictor = {"labels": {"team": "fraud"}, "containers": [
        {"name": "sidecar", "args": ["--x"]},
        {"name": "kserve-container", "args": ["serve", "fraud", "--version", "1"]}]}
    out = with_version(predictor, 7, "kserve-container")
    assert out["containers"][1]["args"] == ["serve", "fraud", "--version", "7"]
    assert out["containers"][0] == {"name": "sidecar", "args": ["--x"]}
    assert out["labels"] == {"team": "fraud", "vigil.io/model-version": "7",
                             "vigil.io/track": "canary"}
    assert predictor["containers"][1]["args"][-1] == "1"  # a copy
    assert version_of(out, "kserve-container") == 7
    assert with_version({"containers": [{"args": ["serve", "--version=2"]}]}, 3)[
        "containers"][0]["args"] == ["serve", "--version", "3"]
    assert version_of({"containers": [{"args": ["serve", "--version=4"]}]}) == 4
    assert version_of({"labels": {"vigil.io/model-version": "5"}, "containers": []}) == 5
    assert version_of({"containers": [{"args": ["serve"]}]}) is None
    with pytest.raises(RolloutError, match="no container 'vigil'"):
        with_version(predictor, 2, "vigil")
    with pytest.raises(RolloutError, match="no containers"):
        with_version({}, 2)


def test_helm_commands():
    config = RolloutHelmSettings(release="prod", chart="./charts/vigil", namespace="ml")
    assert upgrade_command(config, prepare_values(4), wait=True) == [
        "helm", "upgrade", "prod", "./charts/vigil", "--reuse-values", "--namespace", "ml",
        "--set", "canary.enabled=true", "--set", "canary.modelVersion=4",
        "--set", "canary.trafficPercent=0", "--wait", "--timeout", "900s"]
    assert upgrade_command(RolloutHelmSettings(), promote_values(4))[-6:] == [
        "--set", "model.version=4", "--set", "canary.enabled=false",
        "--set", "canary.trafficPercent=0"]
    assert upgrade_command(RolloutHelmSettings(), rollback_values())[5:] == [
        "--set", "canary.trafficPercent=0", "--set", "canary.enabled=false"]


# ------------------------------------------------------------------------------ mirror


def test_the_mirror_compares_decisions_of_v1_and_v2_answers():
    v1 = json.dumps({"predictions": [{"decision": "fraud"}, {"decision": "legit"}]}).encode()
    v2 = json.dumps({"outputs": [{"name": "score", "data": [0.9, 0.1]},
                                 {"name": "decision", "data": ["legit", "legit"]}]}).encode()
    assert decisions_of(v1) == ["fraud", "legit"]
    assert decisions_of(v2) == ["legit", "legit"]
    assert decisions_of(b"not json") is None and decisions_of(b'{"error": "x"}') is None
    assert agreement(["fraud", "legit"], ["legit", "legit"]) == (1, 1)
    assert agreement(["fraud"], ["fraud", "legit"]) is None
