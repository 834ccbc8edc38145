"""Retraining on alerts: an Alertmanager webhook receiver that starts the training pipeline.

Alertmanager posts its webhook JSON (version 4: ``status``, ``alerts[]`` with ``status`` and
``labels.alertname``...) to ``POST /alerts``. A firing alert named in ``alertnames`` (the drift
and live-performance alerts) starts one retrain; while it runs, further alerts are acknowledged
and recorded as ``busy``, never started (a lock). Resolved alerts, unknown alert names and alerts
for another model are recorded and ignored. A body that is not such JSON gets 400 naming what is
wrong. The retrain itself is a callable (:class:`CommandRetrain` runs ``vigil run fraud``, the
same code path as by hand); the gate in the pipeline decides whether a challenger is registered,
so a failed or refused retrain keeps the champion. Outcomes are counted in
``vigil_retrain_runs_total{result}``, served on ``GET /metrics`` (the ``VigilRetrainFailed``
rule alerts on ``failed``); ``GET /status`` lists the recorded decisions.

This module knows nothing of pipelines (it is below them): the command line wires the action.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

log = logging.getLogger(__name__)

#: Alerts that start a retrain (monitoring/rules/vigil-rules.yml).
RETRAIN_ALERTS: Final = frozenset({"VigilDriftDetected", "VigilLiveAPBelowEvaluated"})
#: ``result`` label of ``vigil_retrain_runs_total``: a challenger registered; the gate kept the
#: champion; the run was handed to Kubeflow Pipelines; the run failed (champion kept).
RESULTS: Final = ("registered", "champion_kept", "submitted", "failed")
#: ``action`` label of ``vigil_retrain_alerts_total``.
ACTIONS: Final = ("started", "busy", "resolved", "ignored")
MAX_BODY_BYTES: Final = 1 << 20
WEBHOOK_PATH: Final = "/alerts"


class BadNotification(ValueError):
    """The body is not an Alertmanager webhook notification (version 4)."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    result: str
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the webhook did with one alert of a notification."""

    at: str
    alertname: str
    status: str
    action: str
    reason: str


def parse_notification(body: bytes) -> list[tuple[str, str, Mapping[str, str]]]:
    """(alertname, status, labels) of each alert in an Alertmanager webhook body."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadNotification(f"body is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise BadNotification(f"expected a JSON object, got {type(data).__name__}")
    if str(data.get("version")) != "4":
        raise BadNotification(
            f"expected an Alertmanager webhook payload with version \"4\", got version "
            f"{data.get('version')!r}"
        )
    alerts = data.get("alerts")
    if not isinstance(alerts, list):
        raise BadNotification("\"alerts\" must be a list of alerts")
    out: list[tuple[str, str, Mapping[str, str]]] = []
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise BadNotification(f"alerts[{i}] is not an object")
        labels = alert.get("labels")
        if not isinstance(labels, dict) or not isinstance(labels.get("alertname"), str):
            raise BadNotification(f"alerts[{i}].labels.alertname is missing")
        status = alert.get("status")
        if status not in ("firing", "resolved"):
            raise BadNotification(
                f"alerts[{i}].status must be \"firing\" or \"resolved\", got {status!r}")
        out.append((labels["alertname"], status, {str(k): str(v) for k, v in labels.items()}))
    return out


class Retrainer:
    """Starts ``action`` in a background thread for retrain alerts, one run at a time."""

    def __init__(
        self,
        action: Callable[[], Outcome],
        *,
        model_name: str,
        alertnames: frozenset[str] = RETRAIN_ALERTS,
        history: int = 200,
    ) -> None:
        self._action = action
        self.model_name = model_name
        self.alertnames = alertnames
        self._lock = threading.Lock()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self.decisions: collections.deque[Decision] = collections.deque(maxlen=history)
        self.outcomes: collections.deque[dict[str, Any]] = collections.deque(maxlen=history)
        self.registry = CollectorRegistry()
        self.runs = Counter("vigil_retrain_runs", "Retrains the webhook started, by result",
                            ["model_name", "result"], registry=self.registry)
        self.alerts = Counter("vigil_retrain_alerts",
                              "Alerts the retrain webhook received, by what it did",
                              ["model_name", "action"], registry=self.registry)
        self.running = Gauge("vigil_retrain_running", "1 while a retrain runs",
                             ["model_name"], registry=self.registry)
        self.last_finished = Gauge("vigil_retrain_last_finished_timestamp_seconds",
                                   "When the last retrain ended, by result",
                                   ["model_name", "result"], registry=self.registry)
        for result in RESULTS:
            self.runs.labels(model_name, result)
        for action_name in ACTIONS:
            self.alerts.labels(model_name, action_name)
        self.running.labels(model_name).set(0)

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def handle(self, body: bytes) -> list[Decision]:
        """Decide on each alert of a webhook body (:class:`BadNotification` if malformed)."""
        decisions = []
        for alertname, status, labels in parse_notification(body):
            model = labels.get("model_name")
            if status == "resolved":
                action, reason = "resolved", "resolved alerts start nothing"
            elif alertname not in self.alertnames:
                action, reason = "ignored", f"{alertname} does not start a retrain"
            elif model is not None and model != self.model_name:
                action, reason = "ignored", f"model {model}, not {self.model_name}"
            elif self._start(alertname):
                action, reason = "started", "retrain started"
            else:
                action, reason = "busy", "a retrain is running; not started again"
            decision = Decision(datetime.now(UTC).isoformat(), alertname, status, action, reason)
            log.info("alert %s (%s): %s, %s", alertname, status, action, reason)
            self.alerts.labels(self.model_name, action).inc()
            self.decisions.append(decision)
            decisions.append(decision)
        return decisions

    def _start(self, reason: str) -> bool:
        if not self._lock.acquire(blocking=False):
            return False
        self.running.labels(self.model_name).set(1)
        thread = threading.Thread(target=self._run, args=(reason,), name="retrain", daemon=True)
        with self._guard:
            self._thread = thread
        thread.start()
        return True

    def _run(self, reason: str) -> None:
        started = time.time()
        try:
            outcome = self._action()
        except Exception as e:
            log.exception("retrain failed")
            outcome = Outcome("failed", f"{type(e).__name__}: {e}")
        if outcome.result not in RESULTS:
            outcome = Outcome("failed", f"unknown result {outcome.result!r}: {outcome.detail}")
        ended = time.time()
        self.runs.labels(self.model_name, outcome.result).inc()
        self.last_finished.labels(self.model_name, outcome.result).set(ended)
        self.outcomes.append({"alert": reason, "result": outcome.result,
                              "detail": outcome.detail, "seconds": round(ended - started, 2),
                              "finished_at": datetime.fromtimestamp(ended, UTC).isoformat()})
        log.info("retrain %s in %.1f s: %s", outcome.result, ended - started, outcome.detail)
        self.running.labels(self.model_name).set(0)
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running retrain (if any); False if it is still running."""
        with self._guard:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.busy

    def status(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "running": self.busy,
                "alertnames": sorted(self.alertnames),
                "decisions": [dataclasses.asdict(d) for d in self.decisions],
                "retrains": list(self.outcomes)}


class CommandRetrain:
    """A retrain that runs a command (``vigil run fraud ...``) and reads its outcome.

    With ``summary_flag`` (``--json``) each run gets ``<out_dir>/<stamp>.json`` appended to the
    command; exit 0 with ``registration.registered`` true is ``registered``, false
    ``champion_kept``. Without it, exit 0 is ``submitted`` (a KFP run was created). Any other
    exit is ``failed``. The run's output goes to ``<out_dir>/<stamp>.log``.
    """

    def __init__(self, argv: Sequence[str], out_dir: Path, *, summary_flag: str | None = "--json",
                 env: Mapping[str, str] | None = None) -> None:
        if not argv:
            raise ValueError("the retrain command is empty")
        self.argv = list(argv)
        self.out_dir = out_dir
        self.summary_flag = summary_flag
        self.env = dict(env) if env is not None else None

    def __call__(self) -> Outcome:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        summary = self.out_dir / f"{stamp}.json"
        logfile = self.out_dir / f"{stamp}.log"
        argv = self.argv + ([self.summary_flag, str(summary)] if self.summary_flag else [])
        with logfile.open("w") as out:
            code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False,
                                  env=self.env).returncode
        if code != 0:
            tail = " | ".join(logfile.read_text(errors="replace").strip().splitlines()[-3:])
            return Outcome("failed", f"exit {code} (log {logfile}): {tail}")
        if not self.summary_flag:
            return Outcome("submitted", f"log {logfile}")
        try:
            registration = json.loads(summary.read_text())["registration"]
        except (OSError, ValueError, KeyError) as e:
            return Outcome("failed", f"exit 0 but no summary in {summary}: {e}")
        result = "registered" if registration.get("registered") else "champion_kept"
        return Outcome(result, str(registration.get("reason", "")))


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode() + b"\n")

    def do_GET(self) -> None:
        retrainer = self.server.retrainer
        if self.path == "/metrics":
            self._send(200, generate_latest(retrainer.registry), CONTENT_TYPE_LATEST)
        elif self.path == "/status":
            self._json(200, retrainer.status())
        elif self.path == "/healthz":
            self._json(200, {"status": "ok"})
        else:
            self._json(404, {"error": f"no such path {self.path}; POST {WEBHOOK_PATH}, "
                                      "GET /metrics, /status, /healthz"})

    def do_POST(self) -> None:
        if self.path != WEBHOOK_PATH:
            self._json(404, {"error": f"POST alerts to {WEBHOOK_PATH}, not {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._json(411, {"error": "Content-Length is required"})
            return
        if length > MAX_BODY_BYTES:
            self._json(413, {"error": f"body of {length} bytes is over {MAX_BODY_BYTES}"})
            return
        body = self.rfile.read(length)
        try:
            decisions = self.server.retrainer.handle(body)
        except BadNotification as e:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            return
        self._json(200, {"decisions": [dataclasses.asdict(d) for d in decisions]})


class WebhookServer(ThreadingHTTPServer):
    """The webhook's HTTP server (``serve_forever`` to run, ``shutdown`` to stop)."""

    daemon_threads = True

    def __init__(self, retrainer: Retrainer, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.retrainer = retrainer

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"
