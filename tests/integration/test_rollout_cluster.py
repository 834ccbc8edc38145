"""The cluster targets without a cluster.

**kserve** — a contract test: the ``kubernetes`` client talks to a local HTTP server that plays
the API server's part for one InferenceService and checks every request the way the API server
would: the method and path of the custom-objects API, the bearer token, the content type of a
JSON merge patch, ``fieldValidation=Strict``, and the patched object's ``spec`` against the
KServe v0.20 CRD's schema (``schemas/kserve/``) with unknown fields refused. A patch that
breaks any of it is answered 415/422 like the API server would, and the test fails. KServe's
own reconciliation is not played: the server marks the resource Ready after each accepted
patch.

**helm** — with no ``helm`` program the target prints the upgrade commands; the test reads
them.
"""

from __future__ import annotations

import copy
import functools
import http.server
import json
import shutil
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import jsonschema
import lightgbm as lgb
import numpy as np
import pytest
import yaml
from k8s_validation import chart, crd_schema

from components.deploy import deploy_candidate
from components.results import Deployment, Registration
from feature_store.transforms import DEFAULT_SPEC
from inference.client import free_port
from rollout.kserve import KServeTarget, version_of, with_version
from vigil.errors import ConfigError
from vigil.registry import Registry
from vigil.settings import Settings, load_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "schemas" / "kserve" / "serving.kserve.io_inferenceservices.yaml"
NAMESPACE, NAME, TOKEN = "vigil", "fraud", "contract-test-token"
PATH = f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/inferenceservices/{NAME}"
MERGE_PATCH = "application/merge-patch+json"


# ------------------------------------------------------------------------------ the schema


@pytest.fixture(scope="module")
def spec_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(crd_schema(CRD, "v1beta1")["properties"]["spec"])


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


@functools.cache
def _chart_predictor(version: int) -> str:
    values = chart().load_values(chart().CHART / "ci" / "manifests-values.yaml")
    values["model"] = {**values.get("model", {}), "version": version}
    (isvc,) = [d for d in chart().render(values, namespace=NAMESPACE)
               if d["kind"] == "InferenceService"]
    return json.dumps(isvc["spec"]["predictor"])


def predictor(version: int) -> dict[str, Any]:
    """The predictor as Vigil's chart renders it (Standard mode, the values of manifests/)."""
    predictor: dict[str, Any] = json.loads(_chart_predictor(version))
    return predictor


def inference_service(mode: str, version: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "generation": 1,
                     "annotations": {"serving.kserve.io/deploymentMode": mode}},
        "spec": {"predictor": predictor(version)},
        "status": {"observedGeneration": 1,
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


# ------------------------------------------------------------------------------ the server


class ApiServer:
    """One InferenceService behind the custom-objects API (see the module docstring)."""

    def __init__(self, obj: dict[str, Any], validator: jsonschema.Draft7Validator) -> None:
        self.obj = obj
        self.validator = validator
        self.requests: list[dict[str, Any]] = []
        self.refused: list[str] = []
        assert not list(validator.iter_errors(obj["spec"]))
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _check(self) -> tuple[str, dict[str, list[str]]] | None:
                url = urllib.parse.urlsplit(self.path)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._answer(401, {"kind": "Status", "reason": "Unauthorized"})
                    return None
                if url.path != PATH:
                    self._answer(404, {"kind": "Status", "reason": "NotFound"})
                    return None
                return url.path, urllib.parse.parse_qs(url.query)

            def do_GET(self) -> None:
                checked = self._check()
                server.requests.append({"method": "GET", "path": self.path})
                if checked is not None:
                    self._answer(200, server.obj)

            def do_PATCH(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                checked = self._check()
                record = {"method": "PATCH", "path": self.path,
                          "content_type": self.headers.get("Content-Type"),
                          "body": json.loads(raw or b"null")}
                server.requests.append(record)
                if checked is None:
                    return
                _, query = checked
                problem = server.patch(record["content_type"], query, record["body"])
                if problem is not None:
                    server.refused.append(problem[1])
                    self._answer(problem[0], {"kind": "Status", "message": problem[1]})
                    return
                self._answer(200, server.obj)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def patch(self, content_type: str | None, query: dict[str, list[str]],
              body: Any) -> tuple[int, str] | None:
        if content_type != MERGE_PATCH:
            return 415, f"content type {content_type}, expected {MERGE_PATCH}"
        if query.get("fieldValidation") != ["Strict"]:
            return 422, f"fieldValidation {query.get('fieldValidation')}, expected Strict"
        if not isinstance(body, dict) or set(body) - {"spec"}:
            return 422, f"the rollout may only patch spec, got {body}"
        patched = merge_patch(self.obj, body)
        errors = sorted(e.message for e in self.validator.iter_errors(patched["spec"]))
        if errors:
            return 422, "; ".join(errors)
        generation = self.obj["metadata"]["generation"] + 1
        patched["metadata"]["generation"] = generation
        patched["status"] = {"observedGeneration": generation,
                             "conditions": [{"type": "Ready", "status": "True"}]}
        self.obj = patched
        return None

    def patches(self) -> list[Any]:
        return [r["body"] for r in self.requests if r["method"] == "PATCH"]

    def __enter__(self) -> ApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def kubeconfig(tmp_path: Path):
    def write(url: str) -> Path:
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": url}}],
            "users": [{"name": "test", "user": {"token": TOKEN}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test",
                                                      "namespace": NAMESPACE}}],
        }))
        return path
    return write


def settings_for(tmp_path: Path, kubeconfig: Path, mode: str, **rollout: Any) -> Settings:
    return load_settings(env={
        "VIGIL_HOME": str(tmp_path / "home"),
        "VIGIL_ROLLOUT__KSERVE__KUBECONFIG": str(kubeconfig),
        "VIGIL_ROLLOUT__KSERVE__NAMESPACE": NAMESPACE,
        "VIGIL_ROLLOUT__KSERVE__MODE": mode,
        **{f"VIGIL_ROLLOUT__{k.upper()}": str(v) for k, v in rollout.items()},
    })


@pytest.fixture
def standard(spec_validator) -> Iterator[ApiServer]:
    with ApiServer(inference_service("Standard"), spec_validator) as server:
        yield server


@pytest.fixture
def knative(spec_validator) -> Iterator[ApiServer]:
    with ApiServer(inference_service("Knative"), spec_validator) as server:
        yield server


# ------------------------------------------------------------------------------ kserve


def test_the_contract_server_refuses_what_the_api_server_would(standard, kubeconfig,
                                                               tmp_path):
    """The checks bite: a canary entry with a field the CRD does not know (KServe 0.20's
    entries have only predictor and trafficPercent) is refused, as is a plain JSON body."""
    target = KServeTarget(settings_for(tmp_path, kubeconfig(standard.url), "Standard"),
                          poll_s=0.01)
    with pytest.raises(Exception, match="422") as unknown:
        target.patch({"spec": {"canary": [{"name": "canary", "trafficPercent": 5,
                                           "predictor": predictor(2)}]}})
    assert "Additional properties are not allowed ('name' was unexpected)" in str(unknown.value)
    with pytest.raises(Exception, match="422"):
        target.patch({"spec": {"canary": [{"predictor": predictor(2), "trafficPercent": 101}]}})
    assert len(standard.refused) == 2
    assert standard.obj["spec"] == {"predictor": predictor(1)}


def test_standard_mode_canary_steps_promotion(standard, kubeconfig, tmp_path):
    target = KServeTarget(settings_for(tmp_path, kubeconfig(standard.url), "Standard"),
                          poll_s=0.01)
    assert target.serving_version() == 1
    target.prepare(2)
    target.set_traffic(25)
    target.set_traffic(50)
    target.promote(2)
    assert not standard.refused
    assert {(r["method"], r["path"].split("?")[0]) for r in standard.requests} == {
        ("GET", PATH), ("PATCH", PATH)}
    assert all(r["content_type"] == MERGE_PATCH and r["path"].endswith("?fieldValidation=Strict")
               for r in standard.requests if r["method"] == "PATCH")
    canary = with_version(predictor(1), 2)
    assert canary["containers"][0]["args"] == ["serve", "fraud", "--version", "2"]
    assert canary["labels"]["vigil.io/model-version"] == "2"
    assert canary["labels"]["vigil.io/track"] == "canary"
    stable = with_version(predictor(1), 2, track="stable")
    assert standard.patches() == [
        {"spec": {"canary": [{"predictor": canary, "trafficPercent": 0}]}},
        {"spec": {"canary": [{"predictor": canary, "trafficPercent": 25}]}},
        {"spec": {"canary": [{"predictor": canary, "trafficPercent": 50}]}},
        {"spec": {"predictor": stable, "canary": [{"predictor": canary, "trafficPercent": 100}]}},
        {"spec": {"canary": None}},
    ]
    assert standard.obj["spec"] == {"predictor": stable}
    assert target.serving_version() == 2


def test_standard_mode_rollback_removes_the_canary(standard, kubeconfig, tmp_path):
    target = KServeTarget(settings_for(tmp_path, kubeconfig(standard.url), "Standard"),
                          poll_s=0.01)
    target.prepare(2)
    target.set_traffic(10)
    target.rollback(1)
    assert not standard.refused
    canary = with_version(predictor(1), 2)
    assert standard.patches()[-2:] == [
        {"spec": {"canary": [{"predictor": canary, "trafficPercent": 0}]}},
        {"spec": {"canary": None}},
    ]
    assert standard.obj["spec"] == {"predictor": predictor(1)}


def test_knative_mode_canary_traffic_percent(knative, kubeconfig, tmp_path):
    target = KServeTarget(settings_for(tmp_path, kubeconfig(knative.url), "Knative"),
                          poll_s=0.01)
    target.prepare(2)
    target.set_traffic(10)
    target.rollback(1)
    target.prepare(3)
    target.set_traffic(50)
    target.promote(3)
    assert not knative.refused
    two, three = with_version(predictor(1), 2), with_version(predictor(1), 3)
    back = with_version(two, 1, track="stable")
    assert knative.patches() == [
        {"spec": {"predictor": {**two, "canaryTrafficPercent": 0}}},
        {"spec": {"predictor": {"canaryTrafficPercent": 10}}},
        {"spec": {"predictor": {"canaryTrafficPercent": 0}}},
        {"spec": {"predictor": {**back, "canaryTrafficPercent": 0}}},
        {"spec": {"predictor": {"canaryTrafficPercent": None}}},
        {"spec": {"predictor": {**with_version(back, 3), "canaryTrafficPercent": 0}}},
        {"spec": {"predictor": {"canaryTrafficPercent": 50}}},
        {"spec": {"predictor": {"canaryTrafficPercent": None,
                                "labels": {"vigil.io/track": "stable"}}}},
    ]
    assert version_of(knative.obj["spec"]["predictor"]) == 3
    assert "canaryTrafficPercent" not in knative.obj["spec"]["predictor"]
    assert three["labels"]["vigil.io/model-version"] == "3"


# ------------------------------------------------------------------------------ end to end


@pytest.fixture
def registered(tmp_path: Path) -> Path:
    """A settings file and a registry with version 1 (champion) and 2 of ``fraud``."""
    home = tmp_path / "home"
    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump({"home": str(home)}))
    rng = np.random.default_rng(0)
    names = list(DEFAULT_SPEC.features)
    x, y = rng.normal(size=(400, len(names))), rng.random(400) < 0.2
    registry = Registry.from_settings(load_settings(config, env={}))
    for alias in ("champion", None):
        booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1},
                            lgb.Dataset(x, y.astype(int), feature_name=names), 5)
        registry.register_model(booster, name="fraud", threshold=0.5, feature_service="fraud_v1",
                                data_range=(date(2018, 4, 1), date(2018, 4, 30)), metrics={},
                                alias=alias)  # type: ignore[arg-type]
    return config


def test_a_kserve_rollout_without_evidence_rolls_back_through_patches(
        standard, kubeconfig, registered, run_vigil, monkeypatch):
    """The whole controller on the kserve target: Prometheus does not answer, so no step can
    pass; the canary is deployed, given 25%, taken back to 0% and removed."""
    monkeypatch.setenv("VIGIL_ROLLOUT__KSERVE__KUBECONFIG", str(kubeconfig(standard.url)))
    monkeypatch.setenv("VIGIL_ROLLOUT__KSERVE__NAMESPACE", NAMESPACE)
    monkeypatch.setenv("VIGIL_ROLLOUT__PROMETHEUS_URL", f"http://127.0.0.1:{free_port()}")
    result = run_vigil("--config", registered, "rollout", "fraud", "--version", "2",
                       "--target", "kserve", "--steps", "25,100", "--interval", "0.2s",
                       "--threshold", "2")
    assert result.exit_code == 1, result.stderr
    assert "rolled back" in result.stdout and "unreachable" in result.stdout
    assert not standard.refused
    canary = with_version(predictor(1), 2)
    assert standard.patches() == [
        {"spec": {"canary": [{"predictor": canary, "trafficPercent": 0}]}},
        {"spec": {"canary": [{"predictor": canary, "trafficPercent": 25}]}},
        {"spec": {"canary": [{"predictor": canary, "trafficPercent": 0}]}},
        {"spec": {"canary": None}},
    ]
    assert standard.obj["spec"] == {"predictor": predictor(1)}
    champion = Registry.from_settings(load_settings(registered, env={})).get_card("fraud")
    assert champion.version == 1


def test_shadow_mode_is_refused_on_cluster_targets(standard, kubeconfig, registered, run_vigil,
                                                   monkeypatch):
    monkeypatch.setenv("VIGIL_ROLLOUT__KSERVE__KUBECONFIG", str(kubeconfig(standard.url)))
    monkeypatch.setenv("VIGIL_ROLLOUT__KSERVE__NAMESPACE", NAMESPACE)
    monkeypatch.setenv("VIGIL_ROLLOUT__PROMETHEUS_URL", "http://127.0.0.1:1")
    before = copy.deepcopy(standard.obj)
    result = run_vigil("--config", registered, "rollout", "fraud", "--version", "2",
                       "--target", "kserve", "--shadow")
    assert result.exit_code == 2
    assert "shadow mode" in result.stderr and "local target" in result.stderr
    assert standard.obj == before and not standard.patches()


# ------------------------------------------------------------------------------ helm


def test_helm_target_prints_each_upgrade_when_helm_is_absent(registered, run_vigil,
                                                             monkeypatch):
    monkeypatch.setenv("VIGIL_ROLLOUT__HELM__BINARY", "helm-is-not-installed-here")
    monkeypatch.setenv("VIGIL_ROLLOUT__HELM__NAMESPACE", NAMESPACE)
    monkeypatch.setenv("VIGIL_ROLLOUT__PROMETHEUS_URL", f"http://127.0.0.1:{free_port()}")
    result = run_vigil("--config", registered, "rollout", "fraud", "--version", "2",
                       "--target", "helm", "--steps", "25,100", "--interval", "0.2s",
                       "--threshold", "1")
    assert result.exit_code == 1, result.stderr
    printed = [line.split("run: ", 1)[1] for line in result.stdout.splitlines()
               if line.startswith("helm is not installed; run: ")]
    base = ("helm-is-not-installed-here upgrade vigil charts/vigil --reuse-values "
            f"--namespace {NAMESPACE}")
    assert printed == [
        f"{base} --set canary.enabled=true --set canary.modelVersion=2 "
        "--set canary.trafficPercent=0 --wait --timeout 900s",
        f"{base} --set canary.trafficPercent=25",
        f"{base} --set canary.trafficPercent=0",
        f"{base} --set canary.trafficPercent=0 --set canary.enabled=false",
    ]


# ------------------------------------------------------------------------------ pipeline step


def test_the_deploy_step_rolls_a_challenger_out_and_skips_otherwise(standard, kubeconfig,
                                                                    registered, tmp_path):
    settings = load_settings(registered, env={
        "VIGIL_ROLLOUT__KSERVE__KUBECONFIG": str(kubeconfig(standard.url)),
        "VIGIL_ROLLOUT__KSERVE__NAMESPACE": NAMESPACE,
        "VIGIL_ROLLOUT__PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
        "VIGIL_ROLLOUT__STEPS": "50", "VIGIL_ROLLOUT__INTERVAL_S": "0.2",
        "VIGIL_ROLLOUT__THRESHOLD": "1",
    })
    challenger = Registration(registered=True, model_name="fraud", version=2,
                              alias="challenger", reason="better")
    for registration, target in [
        (challenger, "none"),
        (Registration(True, "fraud", 2, "champion", "first"), "kserve"),
        (Registration(False, "fraud", None, None, "not better"), "kserve"),
    ]:
        skipped = deploy_candidate(registration, settings=settings, target=target)
        assert not skipped.rolled_out and skipped.phase is None
    assert not standard.requests
    with pytest.raises(ConfigError, match="rollout target must be one of none, local"):
        deploy_candidate(challenger, settings=settings, target="k8s")
    result = deploy_candidate(challenger, settings=settings, target="kserve")
    assert result.rolled_out and result.phase == "rolled_back" and result.version == 2
    assert "unreachable" in result.reason
    assert standard.obj["spec"] == {"predictor": predictor(1)}


@pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")
def test_the_deploy_component_runs_under_kfp_local(standard, kubeconfig, registered, tmp_path,
                                                   monkeypatch):
    """The thin @dsl.component adapter, run by kfp.local in a subprocess of its own."""
    from kfp import local

    from components.kfp_components import deploy

    for name, value in {
        "VIGIL_ROLLOUT__KSERVE__KUBECONFIG": str(kubeconfig(standard.url)),
        "VIGIL_ROLLOUT__KSERVE__NAMESPACE": NAMESPACE,
        "VIGIL_ROLLOUT__PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
        "VIGIL_ROLLOUT__STEPS": "50", "VIGIL_ROLLOUT__INTERVAL_S": "0.2",
        "VIGIL_ROLLOUT__THRESHOLD": "1",
    }.items():
        monkeypatch.setenv(name, value)
    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path / "pipeline_root"), raise_on_error=True)
    registration = Registration(True, "fraud", 2, "challenger", "better")
    task = deploy(registration=json.dumps(registration.to_dict()), vigil_home="",
                  vigil_config=str(registered), model_name="fraud", rollout_target="kserve")
    result = Deployment.from_json(task.output)
    assert result.rolled_out and result.phase == "rolled_back"
    assert len(standard.patches()) == 4


# ------------------------------------------------------------------------------ metrics


def test_the_rollout_metrics_pass_promtool():
    from monitoring import rollout as metrics

    metrics.set_state("fraud", phase="progressing", traffic_percent=25, failed_analyses=1,
                      primary_version=1, canary_version=2, target="local")
    metrics.count_checks("fraud", [("success_rate", True), ("score_psi", False)])
    metrics.SHADOW_REQUESTS.labels("fraud", "answered").inc()
    metrics.SHADOW_TRANSACTIONS.labels("fraud", "agree").inc(30)
    tool = shutil.which("promtool")
    assert tool, "promtool (Debian package prometheus) is required"
    for text in (metrics.controller_exposition(), metrics.mirror_exposition()):
        assert b"vigil_rollout_" in text
        done = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True,
                              timeout=60, check=False)
        assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), (
            done.stdout + done.stderr)
