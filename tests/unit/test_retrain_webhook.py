"""The retrain webhook's decisions: Alertmanager's webhook JSON parsed or refused, one retrain at
a time, resolved and unknown alerts recorded and ignored, outcomes counted (monitoring.retrain).
The retrain here is a callable blocking on an event, so that "a retrain is running" is a state
the test controls; the real command runs in tests/integration/test_retrain_alertmanager.py."""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitoring.retrain import (
    BadNotification,
    CommandRetrain,
    Outcome,
    Retrainer,
    WebhookServer,
    parse_notification,
)

pytestmark = pytest.mark.unit


def notification(*alerts: tuple[str, str], model: str | None = "fraud") -> bytes:
    """An Alertmanager webhook body (version 4) with (alertname, status) alerts."""
    items = []
    for name, status in alerts:
        labels = {"alertname": name, "severity": "warning"}
        if model is not None:
            labels["model_name"] = model
        items.append({"status": status, "labels": labels, "annotations": {},
                      "startsAt": "2026-12-06T21:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                      "generatorURL": "", "fingerprint": "f"})
    return json.dumps({"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0,
                       "status": "firing", "receiver": "vigil-retrain", "groupLabels": {},
                       "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
                       "alerts": items}).encode()


class Gate:
    """A retrain action that runs until released."""

    def __init__(self, outcome: Outcome | Exception) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.outcome = outcome

    def __call__(self) -> Outcome:
        self.calls += 1
        assert self.release.wait(10)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def sample(retrainer: Retrainer, name: str, **labels: str) -> float:
    value = retrainer.registry.get_sample_value(name, {"model_name": "fraud", **labels})
    assert value is not None, (name, labels)
    return value


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "body is not JSON"),
    (b"[]", "expected a JSON object, got list"),
    (b'{"version": "3", "alerts": []}', 'version "4", got version \'3\''),
    (b'{"version": "4"}', '"alerts" must be a list'),
    (b'{"version": "4", "alerts": [{"status": "firing", "labels": {}}]}',
     "alerts[0].labels.alertname is missing"),
    (b'{"version": "4", "alerts": [{"status": "on", "labels": {"alertname": "A"}}]}',
     'alerts[0].status must be "firing" or "resolved"'),
])
def test_bad_bodies_are_refused_naming_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(BadNotification, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_notification(body)


def test_one_retrain_at_a_time_and_the_rest_recorded() -> None:
    gate = Gate(Outcome("registered", "beat the champion"))
    retrainer = Retrainer(gate, model_name="fraud")
    first = retrainer.handle(notification(("VigilDriftDetected", "firing")))
    assert [d.action for d in first] == ["started"]
    assert retrainer.busy
    second = retrainer.handle(notification(("VigilLiveAPBelowEvaluated", "firing"),
                                           ("VigilDriftDetected", "resolved"),
                                           ("VigilServingP99Latency", "firing"),
                                           ("VigilDriftDetected", "firing")))
    assert [d.action for d in second] == ["busy", "resolved", "ignored", "busy"]
    assert "does not start a retrain" in second[2].reason
    gate.release.set()
    assert retrainer.wait(10)
    assert gate.calls == 1
    assert sample(retrainer, "vigil_retrain_runs_total", result="registered") == 1
    assert sample(retrainer, "vigil_retrain_runs_total", result="failed") == 0
    assert sample(retrainer, "vigil_retrain_alerts_total", action="busy") == 2
    assert sample(retrainer, "vigil_retrain_running") == 0
    # Once it finished, the next alert starts the next retrain.
    assert [d.action for d in retrainer.handle(
        notification(("VigilDriftDetected", "firing")))] == ["started"]
    assert retrainer.wait(10)
    assert gate.calls == 2
    status = retrainer.status()
    assert [r["result"] for r in status["retrains"]] == ["registered", "registered"]
    assert len(status["decisions"]) == 6


def test_alerts_of_another_model_are_ignored() -> None:
    gate = Gate(Outcome("registered"))
    retrainer = Retrainer(gate, model_name="fraud")
    (decision,) = retrainer.handle(notification(("VigilDriftDetected", "firing"), model="churn"))
    assert decision.action == "ignored"
    assert "model churn, not fraud" in decision.reason
    assert not retrainer.busy


def test_a_failing_retrain_is_counted_and_releases_the_lock() -> None:
    gate = Gate(RuntimeError("step validate failed"))
    gate.release.set()
    retrainer = Retrainer(gate, model_name="fraud")
    retrainer.handle(notification(("VigilDriftDetected", "firing")))
    assert retrainer.wait(10)
    assert sample(retrainer, "vigil_retrain_runs_total", result="failed") == 1
    (outcome,) = retrainer.status()["retrains"]
    assert outcome["detail"] == "RuntimeError: step validate failed"
    assert not retrainer.busy


def test_command_retrain_reads_the_outcome(tmp_path: Path) -> None:
    script = ("import json, sys; json.dump({'registration': {'registered': %s, 'reason': 'r'}},"
              " open(sys.argv[-1], 'w'))")
    for registered, result in (("True", "registered"), ("False", "champion_kept")):
        action = CommandRetrain([sys.executable, "-c", script % registered], tmp_path)
        assert action() == Outcome(result, "r")
    failing = CommandRetrain([sys.executable, "-c", "import sys; print('boom'); sys.exit(1)"],
                             tmp_path)
    outcome = failing()
    assert outcome.result == "failed"
    assert outcome.detail.startswith("exit 1") and outcome.detail.endswith("boom")
    submitted = CommandRetrain([sys.executable, "-c", "pass"], tmp_path, summary_flag=None)
    assert submitted().result == "submitted"


@pytest.fixture
def server() -> Iterator[WebhookServer]:
    gate = Gate(Outcome("champion_kept"))
    srv = WebhookServer(Retrainer(gate, model_name="fraud"))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    gate.release.set()
    srv.retrainer.wait(10)
    srv.shutdown()
    srv.server_close()


def post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_http_server_answers_alertmanager(server: WebhookServer) -> None:
    status, answer = post(f"{server.url}/alerts", b"{oops")
    assert status == 400
    assert answer["error"].startswith("body is not JSON")
    status, answer = post(f"{server.url}/alerts",
                          notification(("VigilDriftDetected", "firing")))
    assert status == 200
    assert [d["action"] for d in answer["decisions"]] == ["started"]
    status, answer = post(f"{server.url}/elsewhere", b"{}")
    assert status == 404
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'vigil_retrain_running{model_name="fraud"} 1.0' in text
    assert 'vigil_retrain_runs_total{model_name="fraud",result="failed"} 0.0' in text
