"""Canary rollouts on the local stack: real ``vigil serve`` processes, HAProxy, Prometheus and a
Pushgateway on 127.0.0.1; the controller decides from Prometheus alone.

One stack serves the whole module (its primary changes as candidates are promoted). Steps are
short (2 s, threshold 2) so that the module stays bounded; every candidate's defect is its
model's own (``rollout_env``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from rollout_env import RolloutEnv, build

from inference.client import free_port
from rollout.analysis import Prometheus
from rollout.controller import RolloutRequest, history, request_action, rollout, store_for
from rollout.local import Stack, load_stack, stack_down, stack_up
from rollout.traffic import Traffic, versions
from vigil.registry import CHAMPION, Registry

pytestmark = pytest.mark.integration

INTERVAL_S = 3.0
THRESHOLD = 2
CLIENTS = 2
PAUSE_S = 0.02
#: Requests in flight when the weights change may still reach the old side this long after.
SWITCH_S = 0.5


@pytest.fixture(scope="module")
def env(serving_model, online_store, tmp_path_factory) -> RolloutEnv:
    store = online_store()
    home = tmp_path_factory.mktemp("rollout_home")
    ports = {"frontend": free_port(), "prometheus": free_port(), "pushgateway": free_port()}
    return build(home, redis_url=store.redis_url, project=store.project,
                 champion=serving_model.booster, features=serving_model.features,
                 cutoff=serving_model.cutoff, ports=ports)


@pytest.fixture(scope="module")
def stack(env: RolloutEnv) -> Iterator[Stack]:
    started = stack_up(env.settings, print)
    try:
        yield started
    finally:
        stack_down(env.settings)


@pytest.fixture
def traffic(env: RolloutEnv, stack: Stack) -> Iterator[Traffic]:
    with Traffic(stack.url, env.bodies, clients=CLIENTS, pause_s=PAUSE_S) as running:
        yield running


def champion(env: RolloutEnv) -> int:
    card = Registry.from_settings(env.settings).find("fraud", CHAMPION)
    assert card is not None
    return card.version


def request(env: RolloutEnv, name: str, **overrides) -> RolloutRequest:
    values = {"target": "local", "steps": (25, 50, 100), "interval_s": INTERVAL_S,
              "threshold": THRESHOLD, **overrides}
    return RolloutRequest.from_settings(env.settings, env.versions[name], **values)


def test_a_good_candidate_is_promoted_through_every_step(env, stack, traffic):
    before = champion(env)
    final = rollout(env.settings, request(env, "good"), print)
    assert final.phase == "promoted", final.reason
    assert champion(env) == env.versions["good"]
    assert Registry.from_settings(env.settings).champion_history("fraud")[-1] == before
    events = history(env.settings)
    traffic_steps = [e["traffic_percent"] for e in events if e["event"] == "traffic"]
    assert traffic_steps == [25, 50, 100]
    analyses = [e for e in events if e["event"] == "analysis"]
    assert sum(a["passed"] for a in analyses) == 3
    # Traffic ends at 100% on the candidate: every answer after the promotion is its own.
    promoted_at = next(e["time"] for e in events if e["event"] == "promoted")
    time.sleep(1.0)
    after = traffic.answers(since=promoted_at + 0.5)
    assert after and versions(after) == {env.versions["good"]: len(after)}
    assert load_stack(env.settings).admin.weights()[final.target["canary_slot"]] == 100


def primary_version(env: RolloutEnv) -> int:
    stack = load_stack(env.settings)
    assert stack is not None
    version = stack.primary_version()
    assert version is not None
    return version


def good_candidate(env: RolloutEnv, *exclude: str) -> str:
    """A good model that does not serve now."""
    serving = primary_version(env)
    return next(name for name in ("champion", "good", "good_again")
                if env.versions[name] != serving and name not in exclude)


def zero_time(events: list[dict]) -> float:
    """When the canary's traffic went back to 0."""
    return next(e["time"] for e in events
                if e["event"] == "traffic" and e["traffic_percent"] == 0)


LATENCY = {"p99_latency", "p99_vs_primary"}


@pytest.mark.parametrize(("candidate", "defect"), [
    # the defect: checks of which at least one fails in every analysis, and no other may
    ("failing", ({"success_rate"}, None)),
    # the champion's scores: only latency can fail (and, as slow answers hold closed-loop
    # clients back, the canary may get too few requests for evidence)
    ("slow", (LATENCY, {*LATENCY, "evidence"})),
    ("absurd", ({"score_psi"}, None)),
])
def test_a_bad_candidate_is_rolled_back_automatically(env, stack, traffic, candidate, defect):
    before, serving = champion(env), primary_version(env)
    final = rollout(env.settings, request(env, candidate), print)
    assert final.phase == "rolled_back"
    assert champion(env) == before, "the champion alias moved"
    events = history(env.settings)
    analyses = [e for e in events if e["event"] == "analysis"]
    # Exactly `threshold` analyses, all failed, each naming the defect; then straight back.
    assert [a["passed"] for a in analyses] == [False] * THRESHOLD
    some, only = defect
    for analysis in analyses:
        failed = {c["name"] for c in analysis["analysis"]["checks"] if not c["passed"]}
        assert failed & some, failed
        assert only is None or failed <= only, failed
    assert [e["traffic_percent"] for e in events if e["event"] == "traffic"] == [25, 0]
    first = next(e["time"] for e in events if e["event"] == "traffic")
    assert zero_time(events) - first <= INTERVAL_S * THRESHOLD + INTERVAL_S
    # After the rollback no request reaches the candidate and none fails.
    time.sleep(1.5)
    after = traffic.answers(since=zero_time(events) + SWITCH_S)
    assert after and versions(after) == {serving: len(after)}
    stack_now = load_stack(env.settings)
    assert stack_now.slots[final.target["canary_slot"]] is None
    assert stack_now.admin.weights() == {final.target["primary_slot"]: 100,
                                         final.target["canary_slot"]: 0}


def test_split_accuracy_at_10_percent_then_abort(env, stack):
    """1,000 requests from keep-alive clients at 10%: the canary answers 10% +- 3 points.
    Then an operator aborts; the controller rolls back at once."""
    name = good_candidate(env)
    before, serving = champion(env), primary_version(env)
    outcome: dict[str, object] = {}
    long = request(env, name, steps=(10, 100), interval_s=120.0)
    thread = threading.Thread(
        target=lambda: outcome.update(final=rollout(env.settings, long, print)), daemon=True)
    thread.start()
    store = store_for(env.settings)
    deadline = time.monotonic() + 120
    while True:
        state = store.load()
        if (state is not None and state.version == env.versions[name]
                and state.traffic_percent == 10):
            break
        assert time.monotonic() < deadline and thread.is_alive(), outcome
        time.sleep(0.2)
    time.sleep(1.0)  # past the uneven split right after a weight change
    counted = Traffic(stack.url, env.bodies[:50], clients=4, total=1_000).start()
    counted.join(timeout_s=300)
    answers = counted.answers()
    assert len(answers) == 1_000 and all(a.status == 200 for a in answers)
    share = versions(answers)[env.versions[name]] / 1_000
    print(f"split at 10%: the canary answered {share:.1%} of 1,000 keep-alive requests")
    assert 0.07 <= share <= 0.13, share
    final = request_action(env.settings, "abort", print, wait_s=120)
    thread.join(timeout=120)
    assert final.phase == "rolled_back" and final.reason == "aborted by an operator"
    assert outcome["final"].phase == "rolled_back"
    assert champion(env) == before and primary_version(env) == serving
    assert [e["event"] for e in history(env.settings)][-3:] == ["request", "traffic",
                                                                 "rolled_back"]


def test_no_promotion_without_evidence_when_prometheus_is_unreachable(env, stack, traffic):
    nowhere = f"http://127.0.0.1:{free_port()}"
    settings = env.settings.model_copy(update={"rollout": env.settings.rollout.model_copy(
        update={"prometheus_url": nowhere})})
    before = champion(env)
    name = good_candidate(env)
    final = rollout(settings, RolloutRequest.from_settings(
        settings, env.versions[name], target="local", steps=(25, 100), interval_s=1.0,
        threshold=THRESHOLD), print)
    assert final.phase == "rolled_back"
    assert champion(env) == before
    analyses = [e for e in history(env.settings) if e["event"] == "analysis"]
    assert len(analyses) == THRESHOLD
    for analysis in analyses:
        (check,) = analysis["analysis"]["checks"]
        assert check["name"] == "evidence" and not check["passed"]
        assert "unreachable" in check["detail"]


def test_a_controller_killed_mid_rollout_is_resumed_from_the_recorded_state(env, stack,
                                                                          traffic):
    name = good_candidate(env)
    command = [sys.executable, "-m", "vigil_cli", "--config", str(env.config), "rollout",
               "fraud", "--version", str(env.versions[name]), "--steps", "25,50,100",
               "--interval", f"{INTERVAL_S:g}s", "--threshold", str(THRESHOLD),
               "--target", "local"]
    store = store_for(env.settings)
    log = env.config.parent / "controller.log"
    with open(log, "wb") as out:
        controller = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                      env={**os.environ, "VIGIL_CONFIG": ""})
    try:
        deadline = time.monotonic() + 120
        while True:
            state = store.load()
            if (state is not None and state.version == env.versions[name]
                    and state.phase == "progressing" and state.step >= 1):
                break
            assert controller.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        controller.send_signal(signal.SIGKILL)
        controller.wait(timeout=30)
    finally:
        if controller.poll() is None:
            controller.kill()
            controller.wait(timeout=30)
    state = store.load()
    assert state.active and not store.controller_running()
    canary = load_stack(env.settings).slots[state.target["canary_slot"]]
    assert canary is not None and canary.proc.alive()  # traffic still split ...
    assert load_stack(env.settings).admin.weights()[state.target["canary_slot"]] > 0
    # ... until a controller takes over: the same command resumes from the recorded state.
    final = rollout(env.settings, request(env, name), print)
    assert final.phase == "promoted", final.reason
    assert final.id == state.id
    assert champion(env) == env.versions[name] == primary_version(env)
    events = history(env.settings)
    assert "resumed" in [e["event"] for e in events]
    assert load_stack(env.settings).slots[state.target["canary_slot"]].proc == canary.proc


def test_a_version_that_does_not_exist_is_refused_and_nothing_changes(env, stack, run_vigil):
    store = store_for(env.settings)
    state_before, events_before = store.load(), history(env.settings, everything=True)
    stack_before = load_stack(env.settings).to_dict()
    weights = load_stack(env.settings).admin.weights()
    result = run_vigil("--config", env.config, "rollout", "fraud", "--version", "999",
                       "--target", "local")
    assert result.exit_code == 2
    assert "model 'fraud' has no version 999" in result.stderr
    assert store.load() == state_before
    assert history(env.settings, everything=True) == events_before
    assert load_stack(env.settings).to_dict() == stack_before
    assert load_stack(env.settings).admin.weights() == weights


def test_status_and_history_commands(env, stack, run_vigil):
    status = run_vigil("--config", env.config, "rollout", "status")
    assert status.exit_code == 0, status.stderr
    state = store_for(env.settings).load()
    assert f"rollout {state.id}: {state.phase}" in status.stdout
    as_json = json.loads(run_vigil("--config", env.config, "rollout", "status",
                                   "--json").stdout)
    assert as_json["rollout"]["id"] == state.id and as_json["controller_running"] is False
    events = run_vigil("--config", env.config, "rollout", "history", "--json").stdout
    recorded = [json.loads(line) for line in events.splitlines()]
    assert recorded == history(env.settings)
    assert any(e["event"] == "analysis" and "checks" in e["analysis"] for e in recorded)


def test_shadow_mode_measures_a_candidate_no_client_ever_sees(env, stack, traffic):
    """The absurd model in shadow: mirrored traffic only, disagreement measured, rolled back
    before any client got one of its answers."""
    before, serving = champion(env), primary_version(env)
    since = time.time()
    final = rollout(env.settings, request(env, "absurd", shadow=True), print)
    assert final.phase == "rolled_back"
    assert champion(env) == before
    events = history(env.settings)
    assert not [e for e in events if e["event"] == "traffic" and e["traffic_percent"] > 0]
    analyses = [e["analysis"] for e in events if e["event"] == "analysis"]
    assert len(analyses) == THRESHOLD
    for analysis in analyses:
        assert analysis["shadow_agreement"] is not None
        checks = {c["name"]: c for c in analysis["checks"]}
        assert not checks["score_psi"]["passed"]
        assert checks["decision_agreement"]["value"] is not None
    time.sleep(0.5)
    seen = traffic.answers(since=since)
    assert seen and versions(seen) == {serving: len(seen)}
    assert load_stack(env.settings).mirror is None


def test_the_controllers_metrics_reach_prometheus(env, stack):
    """Pushed to the stack's Pushgateway after every decision, scraped by its Prometheus; the
    mirror's agreement counters scraped directly."""
    state = store_for(env.settings).load()
    prometheus = Prometheus(stack.prometheus_url)
    expected = {
        f'vigil_rollout_phase{{model_name="fraud",phase="{state.phase}"}}': 1.0,
        'vigil_rollout_traffic_percent{model_name="fraud"}': float(state.traffic_percent),
        'vigil_rollout_failed_analyses{model_name="fraud"}': float(state.failed_analyses),
    }
    deadline = time.monotonic() + 30
    while True:
        seen = {query: prometheus.scalar(query) for query in expected}
        if seen == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert seen == expected
    assert prometheus.scalar('sum(vigil_rollout_checks_total{result="failed"})') > 0
    assert prometheus.scalar('sum(vigil_rollout_checks_total{result="passed"})') > 0
    assert prometheus.query("last_over_time(vigil_rollout_shadow_transactions_total[1h])")
