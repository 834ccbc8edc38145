"""A local HTTP server playing the Kubeflow Pipelines v2beta1 API for contract tests of kfp's
client: healthz, experiments filtered by display name, created experiments, runs and recurring
runs, each request recorded and checked the way the API server reads it."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

API = "/apis/v2beta1"


class KfpApi(http.server.ThreadingHTTPServer):
    """The KFP v2beta1 endpoints ``create_recurring_run`` and
    ``create_run_from_pipeline_package`` need; every request recorded."""

    daemon_threads = True

    def __init__(self, experiments: dict[str, str] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _KfpHandler)
        self.requests: list[tuple[str, str, Any]] = []
        #: display name -> experiment id
        self.experiments = dict(experiments or {})
        self.recurring_runs: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self.errors: list[str] = []
        #: Answer recurring runs 403, like an API server whose user may not create them.
        self.refuse_recurring_runs = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _KfpHandler(http.server.BaseHTTPRequestHandler):
    server: KfpApi

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, value: Any) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, status: int, message: str) -> None:
        self.server.errors.append(message)
        self._answer(status, {"code": 3, "message": message})

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        self.server.requests.append(("GET", url.path, urllib.parse.parse_qs(url.query)))
        if url.path == f"{API}/healthz":
            self._answer(200, {"commit_sha": "contract", "tag_name": "2.5.0",
                               "multi_user": False})
        elif url.path == f"{API}/experiments":
            query = urllib.parse.parse_qs(url.query)
            predicates = json.loads(query["filter"][0])["predicates"]
            # operation 1 is EQUALS (kfp's filter proto)
            if predicates[0]["key"] != "display_name" or predicates[0]["operation"] != 1:
                self._refuse(400, f"unexpected filter {predicates}")
                return
            name = predicates[0]["stringValue"]
            found = [{"experiment_id": self.server.experiments[name], "display_name": name}
                     ] if name in self.server.experiments else []
            self._answer(200, {"experiments": found, "total_size": len(found)}
                         if found else {})
        else:
            self._refuse(404, f"GET {url.path}: not a KFP v2beta1 endpoint this test plays")

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        self.server.requests.append(("POST", self.path, body))
        if self.path == f"{API}/experiments":
            name = body["display_name"]
            experiment_id = f"exp-{len(self.server.experiments) + 1}"
            self.server.experiments[name] = experiment_id
            self._answer(200, {"experiment_id": experiment_id, "display_name": name})
        elif self.path == f"{API}/recurringruns":
            if self.server.refuse_recurring_runs:
                self._answer(403, {"code": 7, "message": "permission denied"})
                return
            if body.get("experiment_id") not in self.server.experiments.values():
                self._refuse(404, f"experiment {body.get('experiment_id')} not found")
                return
            cron = body.get("trigger", {}).get("cron_schedule", {}).get("cron", "")
            if len(cron.split()) != 6:
                self._refuse(400, f"cron {cron!r}: the scheduler takes 6 fields")
                return
            run = {**body, "recurring_run_id": f"rr-{len(self.server.recurring_runs) + 1}",
                   "status": "ENABLED"}
            self.server.recurring_runs.append(run)
            self._answer(200, run)
        elif self.path == f"{API}/runs":
            if body.get("experiment_id") not in self.server.experiments.values():
                self._refuse(404, f"experiment {body.get('experiment_id')} not found")
                return
            run = {**body, "run_id": f"run-{len(self.server.runs) + 1}", "state": "PENDING"}
            self.server.runs.append(run)
            self._answer(200, run)
        else:
            self._refuse(404, f"POST {self.path}: not a KFP v2beta1 endpoint this test plays")


@contextlib.contextmanager
def running_kfp_api() -> Iterator[KfpApi]:
    server = KfpApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def committed_pipeline() -> dict[str, Any]:
    """The committed compiled pipeline as the KFP client sends it in a run's
    ``pipeline_spec``: the spec alone, or with the platform spec (the steps' volume,
    kfp-kubernetes) as ``{"pipeline_spec", "platform_spec"}``."""
    import yaml

    from pipelines.remote import PIPELINE_YAML

    spec, *platform = yaml.safe_load_all(PIPELINE_YAML.read_text())
    if not platform:
        return dict(spec)
    return {"pipeline_spec": spec, "platform_spec": platform[0]}
