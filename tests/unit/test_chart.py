"""The Helm chart (``charts/vigil``) rendered offline for every ``ci/*-values.yaml`` scenario
(helm-python-sdk: Helm's own Go code, no helm binary, no cluster) and checked as a cluster
would check it: every object against its schema (core kinds strict, the InferenceService
against KServe v0.20's CRD, the PodMonitor against the Prometheus Operator's), every pod
against the restricted Pod Security Standard, the canary values against the field each
deployment mode uses, bad values against the chart's schema; then checkov on the rendered
objects, the committed ``manifests/`` against a fresh render, and the kustomize overlays built
by ``kubectl kustomize``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml
from k8s_validation import ROOT, chart, errors, pod_specs, restricted_violations

from components.image import DEFAULT_IMAGE, IMAGE_REPOSITORY, IMAGE_TAG
from rollout import helm as helm_target
from rollout.kserve import TRACK_LABEL, VERSION_LABEL, version_of
from vigil.settings import Settings, load_settings
from vigil_cli.commands.drift import drift
from vigil_cli.commands.serve import serve

pytestmark = pytest.mark.unit

CHART = ROOT / "charts" / "vigil"
SCENARIOS = sorted(CHART.glob("ci/*-values.yaml"))
CHECKOV_SKIPS = CHART / "checkov-skips.yaml"


manifests = chart()


def values_of(name: str) -> dict[str, Any]:
    values: dict[str, Any] = manifests.load_values(CHART / "ci" / f"{name}-values.yaml")
    return values


def render(values: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = manifests.render(values, **kwargs)
    return documents


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, as ``helm upgrade --reuse-values --set`` merges."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def with_set(values: dict[str, Any], sets: dict[str, object]) -> dict[str, Any]:
    """``values`` after ``--set k=v ...`` as rollout/helm.py writes them (Helm's own parser)."""
    for key, value in sets.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        values = deep_merge(values, helm_python.parse_set_string(f"{key}={text}"))
    return values


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def the(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = of_kind(documents, kind)
    return found


def settings_configmap(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [d for d in of_kind(documents, "ConfigMap")
                if d["metadata"]["name"].endswith("-settings")]
    return found


def container_of(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod["containers"]
    result: dict[str, Any] = container
    return result


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {path.name.removesuffix("-values.yaml"): render(manifests.load_values(path))
            for path in SCENARIOS}


def test_the_scenarios_cover_every_deployment_mode():
    modes = {manifests.load_values(p).get("deploymentMode", "Standard") for p in SCENARIOS}
    assert modes == {"Standard", "Knative", "Plain"}
    assert {"standard", "knative", "plain", "kind", "external-redis"} <= {
        p.name.removesuffix("-values.yaml") for p in SCENARIOS}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_helm_lint_finds_no_warning(scenario):
    report = helm_python.lint(CHART, manifests.load_values(scenario), strict=True,
                              namespace="vigil", kube_version="v1.32.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_every_object_is_valid_for_its_schema(rendered, scenario):
    documents = rendered[scenario.name.removesuffix("-values.yaml")]
    assert documents
    problems = [e for d in documents for e in errors(d)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_every_pod_meets_the_restricted_pod_security_standard(rendered, scenario):
    documents = rendered[scenario.name.removesuffix("-values.yaml")]
    pods = [(where, pod) for d in documents for where, pod in pod_specs(d)]
    assert pods
    problems = [v for where, pod in pods for v in restricted_violations(where, pod)]
    assert not problems, "\n".join(problems)
    for where, pod in pods:
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert c["resources"]["limits"] and c["resources"]["requests"], where


def test_the_validators_refuse_what_an_api_server_would():
    """The checks above can fail: a field the schema does not know, a wrong type, a root pod."""
    documents = render(values_of("standard"))
    isvc = the(documents, "InferenceService")
    named = json.loads(json.dumps(isvc))
    named["spec"]["canary"][0]["name"] = "canary"  # KServe v0.20's entry has no name
    assert any("'name' was unexpected" in e for e in errors(named))
    deployment = json.loads(json.dumps(of_kind(documents, "Deployment")[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    assert any("imagePulPolicy" in e for e in errors(deployment))
    deployment = json.loads(json.dumps(of_kind(documents, "Deployment")[0]))
    deployment["spec"]["replicas"] = "two"
    assert errors(deployment)
    assert errors({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    pod = json.loads(json.dumps(isvc["spec"]["predictor"]))
    pod["securityContext"] = {}
    pod["containers"][0]["securityContext"] = {"runAsUser": 0}
    pod["hostNetwork"] = True
    found = restricted_violations("predictor", pod)
    assert any("hostNetwork" in v for v in found)
    assert any("allowPrivilegeEscalation" in v for v in found)
    assert any("drop ALL" in v for v in found)
    assert any("seccompProfile" in v for v in found)
    assert any("runAsNonRoot" in v for v in found)


def test_every_value_is_commented_and_in_the_schema():
    """Every key of values.yaml has a comment line above it (resource quantities aside), and the
    schema describes exactly the keys values.yaml has, at every level."""
    uncommented, stack, previous = [], [], ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        match = re.match(r"^( *)([A-Za-z0-9_.-]+):", line)
        if match:
            indent = len(match.group(1))
            stack = [(i, k) for i, k in stack if i < indent] + [(indent, match.group(2))]
            path = [k for _, k in stack]
            if not previous.lstrip().startswith("#") and "resources" not in path[:-1]:
                uncommented.append(".".join(path))
        if line.strip():
            previous = line
    assert not uncommented, f"values without a comment: {uncommented}"

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"

    def compare(values: Any, node: dict[str, Any], where: str) -> None:
        if not isinstance(values, dict) or "properties" not in node:
            return
        assert node.get("additionalProperties") is False, f"{where}: open to unknown keys"
        assert set(values) == set(node["properties"]), where
        for key, value in values.items():
            compare(value, node["properties"][key], f"{where}.{key}")

    compare(yaml.safe_load((CHART / "values.yaml").read_text()), schema, "values")


# ------------------------------------------------------------------------------ the predictor


def test_the_predictor_runs_vigil_serve_as_settings_expect(rendered):
    documents = rendered["standard"]
    isvc = the(documents, "InferenceService")
    assert isvc["metadata"]["name"] == "fraud"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    predictor = isvc["spec"]["predictor"]
    container = container_of(predictor)
    assert container["command"] == ["vigil"]
    assert container["args"] == ["serve", "fraud", "--version", "1"]
    context = serve.make_context("serve", list(container["args"][1:]))  # vigil serve's own
    assert context.params["version"] == 1 and context.params["model_name"] == "fraud"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert predictor["serviceAccountName"] == "vigil-predictor"
    assert predictor["labels"][VERSION_LABEL] == "1"
    assert predictor["labels"][TRACK_LABEL] == "stable"
    # Every setting the ConfigMap carries is one Vigil knows, and together they make a pod's
    # settings: listening on every address, the port the probes use.
    configmap = settings_configmap(documents)
    env = {**configmap["data"], "VIGIL_REDIS__URL": "redis://:secret@vigil-redis:6379/0"}
    settings = load_settings(env=env)
    assert settings.serving.host == "0.0.0.0"
    assert settings.serving.port == container["ports"][0]["containerPort"] == 8080
    assert settings.registry.tracking_uri == "http://vigil-mlflow:5000"
    assert str(settings.home) == container["volumeMounts"][0]["mountPath"] == "/var/lib/vigil"
    names = [e["name"] for e in container["env"]]
    # $(REDIS_PASSWORD) is expanded only from variables defined before it.
    assert names.index("REDIS_PASSWORD") < names.index("VIGIL_REDIS__URL")
    redis_url = next(e for e in container["env"] if e["name"] == "VIGIL_REDIS__URL")
    assert redis_url["value"] == "redis://:$(REDIS_PASSWORD)@vigil-redis:6379/0"


def test_mlflow_allows_the_host_names_clients_use(rendered):
    """MLflow's security middleware refuses other Host headers than the ones allowed: the
    tracking URI the pods get must be one of them."""
    from mlflow.server.security_utils import is_allowed_host_header

    documents = rendered["standard"]
    mlflow = next(d for d in of_kind(documents, "Deployment")
                  if d["metadata"]["labels"]["app.kubernetes.io/component"] == "mlflow")
    (container,) = mlflow["spec"]["template"]["spec"]["containers"]
    (allowed,) = [a.split("=", 1)[1] for a in container["args"]
                  if a.startswith("--allowed-hosts=")]
    hosts = allowed.split(",")
    uri = settings_configmap(documents)["data"]["VIGIL_REGISTRY__TRACKING_URI"]
    for host in (uri.removeprefix("http://"), "vigil-mlflow.vigil.svc:5000",
                 "127.0.0.1:15000"):
        assert is_allowed_host_header(hosts, host), host
    assert not is_allowed_host_header(hosts, "evil.example.com")
    # The arguments are the `mlflow server` command's own (parsed by it, not run).
    from mlflow.cli import server

    assert container["command"] == ["mlflow"] and container["args"][0] == "server"
    context = server.make_context("server", list(container["args"][1:]))
    assert context.params["serve_artifacts"] is True
    assert context.params["backend_store_uri"] == "$(MLFLOW_BACKEND_STORE_URI)"


def test_external_services_and_extra_settings(rendered):
    documents = rendered["external-redis"]
    assert not of_kind(documents, "StatefulSet") and not of_kind(documents, "CronJob")
    (policy,) = of_kind(documents, "NetworkPolicy")
    egress_ports = sorted(p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"])
    assert egress_ports == [53, 53, 443, 6379]
    container = container_of(the(documents, "InferenceService")["spec"]["predictor"])
    env = {e["name"]: e for e in container["env"]}
    assert env["VIGIL_REDIS__URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "vigil-redis-url", "key": "url"}
    assert env["VIGIL_SERVING_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == \
        "vigil-serving-token"
    data = settings_configmap(documents)["data"]
    settings = load_settings(env={**data, "VIGIL_REDIS__URL": "redis://r:6379/0"})
    assert settings.registry.tracking_uri == "https://mlflow.example.internal"
    assert settings.serving.max_instances == 500
    assert settings.serving.log_root == "s3://vigil-inference-log/fraud"


# ------------------------------------------------------------------------------ canary values


def test_standard_mode_canary_is_an_entry_of_spec_canary(rendered):
    isvc = the(rendered["standard"], "InferenceService")
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    (entry,) = isvc["spec"]["canary"]
    assert set(entry) == {"predictor", "trafficPercent"}
    assert entry["trafficPercent"] == 10
    assert version_of(entry["predictor"]) == 2
    assert entry["predictor"]["labels"][TRACK_LABEL] == "canary"
    assert version_of(isvc["spec"]["predictor"]) == 1


def test_knative_mode_canary_is_canary_traffic_percent(rendered):
    isvc = the(rendered["knative"], "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert "canary" not in isvc["spec"]
    predictor = isvc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 25
    assert version_of(predictor) == 4  # the latest revision is the candidate
    assert predictor["annotations"]["autoscaling.knative.dev/class"] == \
        "kpa.autoscaling.knative.dev"
    assert not of_kind(rendered["knative"], "HorizontalPodAutoscaler")


def test_plain_mode_splits_by_replica_ratio(rendered):
    documents = rendered["plain"]
    assert not of_kind(documents, "InferenceService")
    deployments = {d["metadata"]["labels"][TRACK_LABEL]: d for d in of_kind(documents,
                                                                            "Deployment")
                   if d["metadata"]["labels"].get("app.kubernetes.io/component") == "predictor"}
    assert deployments["stable"]["spec"]["replicas"] == 2
    assert deployments["canary"]["spec"]["replicas"] == 2
    assert version_of(deployments["canary"]["spec"]["template"]["spec"]) == 2
    services = {s["metadata"]["name"]: s for s in of_kind(documents, "Service")}
    # The model's Service selects both tracks; one Service per version selects one.
    assert TRACK_LABEL not in services["fraud"]["spec"]["selector"]
    assert services["fraud-v1"]["spec"]["selector"][TRACK_LABEL] == "stable"
    assert services["fraud-v2"]["spec"]["selector"][TRACK_LABEL] == "canary"


@pytest.mark.parametrize(("replicas", "percent", "stable", "canary"), [
    (4, 10, 3, 1), (4, 50, 2, 2), (10, 25, 7, 3), (2, 0, 2, 0), (3, 100, 0, 3), (1, 50, 1, 1),
])
def test_plain_mode_replica_split(replicas, percent, stable, canary):
    values = deep_merge(values_of("plain"), {"predictor": {"replicas": replicas},
                                             "canary": {"trafficPercent": percent}})
    tracks = {d["metadata"]["labels"][TRACK_LABEL]: d["spec"]["replicas"]
              for d in of_kind(render(values), "Deployment")
              if TRACK_LABEL in d["metadata"]["labels"]}
    assert tracks == {"stable": stable, "canary": canary}


@pytest.mark.parametrize("mode", ["Standard", "Knative"])
def test_the_helm_targets_upgrades_move_the_canary(mode):
    """rollout/helm.py's --set values, applied as --reuse-values does, give each step's field."""
    values = deep_merge(values_of("manifests"), {"deploymentMode": mode})
    isvc = the(render(values), "InferenceService")
    assert "canary" not in isvc["spec"]
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]

    def traffic(vals: dict[str, Any]) -> tuple[int | None, int | None]:
        spec = the(render(vals), "InferenceService")["spec"]
        if mode == "Standard":
            canary = spec.get("canary") or []
            return ((canary[0]["trafficPercent"], version_of(canary[0]["predictor"]))
                    if canary else (None, version_of(spec["predictor"])))
        return spec["predictor"].get("canaryTrafficPercent"), version_of(spec["predictor"])

    values = with_set(values, helm_target.prepare_values(5))
    assert traffic(values) == (0, 5)
    values = with_set(values, helm_target.traffic_values(50))
    assert traffic(values) == (50, 5)
    promoted = with_set(values, helm_target.promote_values(5))
    assert traffic(promoted) == (None, 5)
    assert promoted["model"]["version"] == 5
    rolled_back = with_set(values, helm_target.rollback_values())
    assert traffic(rolled_back) == (None, 1)


def test_the_helm_targets_commands_name_the_charts_values():
    command = helm_target.upgrade_command(Settings().rollout.helm,
                                          helm_target.prepare_values(3))
    sets = [command[i + 1] for i, part in enumerate(command) if part == "--set"]
    values = helm_python.Chart.load(CHART).values
    for item in sets:
        path = item.split("=", 1)[0].split(".")
        node: Any = values
        for part in path:
            assert part in node, f"{item}: the chart has no value {'.'.join(path)}"
            node = node[part]
    assert Settings().rollout.helm.chart == "charts/vigil"
    assert (ROOT / Settings().rollout.helm.chart / "Chart.yaml").is_file()


# ------------------------------------------------------------------------------ bad values


@pytest.mark.parametrize(("values", "where", "what"), [
    ({"canary": {"enabled": True, "trafficPercent": 150}}, "/canary/trafficPercent",
     "maximum: got 150, want 100"),
    ({"canary": {"trafficPercent": -5}}, "/canary/trafficPercent", "minimum: got -5, want 0"),
    ({"predictor": {"replicas": -1}}, "/predictor/replicas", "minimum: got -1, want 1"),
    ({"replicaCount": 3}, "at ''", "additional properties 'replicaCount' not allowed"),
    ({"canary": {"trafficPercnt": 5}}, "/canary", "'trafficPercnt' not allowed"),
    ({"deploymentMode": "Serverless"}, "/deploymentMode",
     "value must be one of 'Standard', 'Knative', 'Plain'"),
    ({"model": {"version": 0}}, "/model/version", "minimum: got 0, want 1"),
    ({"redis": {"auth": {"password": "p@ss/word"}}}, "/redis/auth/password", "does not match"),
])
def test_the_schema_refuses_bad_values_with_one_clear_message(values, where, what):
    base = values_of("standard")
    with pytest.raises(helm_python.HelmValuesError) as raised:
        render(deep_merge(base, values))
    message = str(raised.value)
    assert where in message and what in message, message
    problems = [line for line in message.splitlines() if line.startswith("- ")]
    assert len(problems) == 1, message


def test_a_missing_secret_name_is_a_clear_error():
    with pytest.raises(helm_python.HelmError, match=r"redis\.auth\.password or "
                       r"redis\.auth\.existingSecret is required"):
        render({"mlflow": {"backendSecret": "b"}})
    with pytest.raises(helm_python.HelmError, match=r"mlflow\.backendSecret"):
        render({"redis": {"auth": {"password": "p"}}})
    with pytest.raises(helm_python.HelmError, match=r"mlflow\.external\.uri is required"):
        render({"redis": {"auth": {"password": "p"}}, "mlflow": {"enabled": False}})


# ------------------------------------------------------------------------------ the rest


def test_the_pod_monitor_labels_series_with_the_model_version(rendered):
    monitor = the(rendered["standard"], "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "http1" and endpoint["path"] == "/metrics"
    assert {"sourceLabels": ["__meta_kubernetes_pod_label_vigil_io_model_version"],
            "targetLabel": "vigil_model_version", "action": "replace"} in endpoint["relabelings"]
    # The label rollout.kserve's selector asks Prometheus for.
    assert "vigil_model_version=" in Settings().rollout.kserve.selector
    pod_labels = the(rendered["standard"], "InferenceService")["spec"]["predictor"]["labels"]
    assert all(pod_labels[k] == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())


def test_the_rollout_role_patches_the_inference_service_and_nothing_more(rendered):
    documents = rendered["standard"]
    (rule,) = the(documents, "Role")["rules"]
    assert rule == {"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"],
                    "resourceNames": ["fraud"], "verbs": ["get", "patch"]}
    binding = the(documents, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "vigil-rollout",
                                    "namespace": "vigil"}]
    assert not of_kind(documents, "ClusterRole") and not of_kind(documents, "ClusterRoleBinding")


def test_network_policies_let_only_the_gateway_and_monitoring_in(rendered):
    policies = {p["metadata"]["name"]: p for p in of_kind(rendered["standard"], "NetworkPolicy")}
    predictor = policies["vigil-predictor"]["spec"]
    (ingress,) = predictor["ingress"]
    (source,) = ingress["from"]
    assert source["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "istio-system", "monitoring"]
    egress_ports = sorted(p["port"] for rule in predictor["egress"] for p in rule["ports"])
    assert egress_ports == [53, 53, 443, 5000, 6379]  # 443: the inference log's object storage
    redis = policies["vigil-redis"]["spec"]
    assert redis["egress"] == [] and redis["policyTypes"] == ["Ingress", "Egress"]


def test_autoscaling_per_mode(rendered):
    standard = the(rendered["standard"], "InferenceService")
    assert standard["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
    assert standard["spec"]["predictor"]["scaleMetric"] == "cpu"
    assert not of_kind(rendered["standard"], "HorizontalPodAutoscaler")
    plain = render(deep_merge(values_of("plain"), {"autoscaling": {"enabled": True}}))
    hpa = the(plain, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "vigil-predictor-v1"
    assert hpa["spec"]["minReplicas"] == 2
    assert not errors(hpa)
    stable = next(d for d in of_kind(plain, "Deployment")
                  if d["metadata"]["labels"].get(TRACK_LABEL) == "stable")
    assert "replicas" not in stable["spec"]  # the HPA's
    # The canary at 100%: no HPA would keep the primary at zero replicas; it has none.
    everything = render(deep_merge(values_of("plain"), {"autoscaling": {"enabled": True},
                                                        "canary": {"trafficPercent": 100}}))
    assert not of_kind(everything, "HorizontalPodAutoscaler")
    stable = next(d for d in of_kind(everything, "Deployment")
                  if d["metadata"]["labels"].get(TRACK_LABEL) == "stable")
    assert stable["spec"]["replicas"] == 0


def test_the_chart_and_the_pipeline_name_one_image():
    """components/Dockerfile builds one image: the chart's default and the compiled pipeline's
    steps name the same reference, tagged with the package's version."""
    documents = render(values_of("manifests"))
    isvc = the(documents, "InferenceService")
    assert container_of(isvc["spec"]["predictor"])["image"] == DEFAULT_IMAGE
    assert helm_python.Chart.load(CHART).values["image"]["repository"] == IMAGE_REPOSITORY
    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert chart_yaml["appVersion"] == IMAGE_TAG
    assert re.search(rf'^version = "{re.escape(IMAGE_TAG)}"$', pyproject, re.M), \
        "components/image.py's IMAGE_TAG is not pyproject.toml's version"
    compiled = next(yaml.safe_load_all((ROOT / "pipelines" / "fraud_training.yaml").read_text()))
    images = {e["container"]["image"] for e in compiled["deploymentSpec"]["executors"].values()}
    assert images == {DEFAULT_IMAGE}
    # ... and the pipeline's steps mount the claim the chart's jobs read.
    from pipelines.fraud_training import DATA_CLAIM

    assert helm_python.Chart.load(CHART).values["materialize"]["dataClaim"] == DATA_CLAIM


# ------------------------------------------------------------------------------ monitoring


def test_the_drift_job_runs_vigil_drift_with_its_own_flags(rendered):
    documents = rendered["standard"]
    (job,) = [d for d in of_kind(documents, "CronJob") if d["metadata"]["name"] == "vigil-drift"]
    assert job["spec"]["schedule"] == "30 2 * * *"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = container_of(pod)
    assert container["command"] == ["vigil"] and container["args"][0] == "drift"
    assert container["image"] == container_of(
        the(documents, "InferenceService")["spec"]["predictor"])["image"]
    context = drift.make_context("drift", list(container["args"][1:]))  # vigil drift's own
    assert context.params["model_name"] == "fraud"
    assert context.params["current_window"] == "1d"
    assert context.params["reference"] == "/var/lib/vigil/datasets/fraud_v1/train.parquet"
    assert context.params["pushgateway"] == "http://prometheus-pushgateway.monitoring:9091"
    # The log it reads is the one the predictors write (object storage, from the ConfigMap).
    settings = load_settings(env={**settings_configmap(documents)["data"],
                                  "VIGIL_REDIS__URL": "redis://r:6379/0"})
    assert settings.serving.log_root == "s3://vigil-inference-log/fraud"
    assert {"name": "vigil-home", "mountPath": "/var/lib/vigil"} in container["volumeMounts"]
    (rule,) = job["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    assert rule["onExitCodes"]["values"] == [3]  # not enough data: no retry
    # MLflow (the champion and its training window) lets the drift pods in.
    mlflow = next(p for p in of_kind(documents, "NetworkPolicy")
                  if p["metadata"]["name"] == "vigil-mlflow")
    (ingress,) = mlflow["spec"]["ingress"]
    assert any((peer.get("podSelector") or {}).get("matchLabels", {}).get(
        "app.kubernetes.io/component") == "drift" for peer in ingress["from"])


@pytest.mark.parametrize(("drift_values", "message"), [
    ({"pushgatewayUrl": ""}, r"drift\.pushgatewayUrl is required"),
    ({"reference": ""}, r"drift\.reference is required"),
])
def test_the_drift_job_names_a_missing_value(drift_values, message):
    with pytest.raises(helm_python.HelmError, match=message):
        render(deep_merge(values_of("standard"), {"drift": drift_values}))
    # The default inference log is each pod's emptyDir, out of the job's reach.
    with pytest.raises(helm_python.HelmError, match=r"drift\.enabled needs predictor\.logRoot"):
        render(deep_merge(values_of("standard"), {"predictor": {"logRoot": ""}}))

RULES = ROOT / "monitoring" / "rules" / "vigil-rules.yml"
DASHBOARDS = ROOT / "monitoring" / "dashboards"


def test_the_chart_reads_the_monitoring_sources_through_symlinks():
    """One source: the chart's files are symlinks to monitoring/, not copies (Helm follows
    symlinks when it loads or packages a chart)."""
    rules, dashboards = CHART / "files" / "vigil-rules.yml", CHART / "files" / "dashboards"
    assert rules.is_symlink() and rules.resolve() == RULES.resolve()
    assert dashboards.is_symlink() and dashboards.resolve() == DASHBOARDS.resolve()
    assert not [p for p in (CHART / "files").iterdir() if not p.is_symlink()]


def test_the_prometheus_rule_holds_the_rule_files_groups(rendered):
    rule = the(rendered["standard"], "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert "VigilDriftDetected" in alerts
    # Prometheus's own templates are data, not Helm's.
    assert any("{{ $labels.model_name }}" in r["annotations"]["summary"]
               for g in rule["spec"]["groups"] for r in g["rules"] if "annotations" in r)
    assert not errors(rule)
    # The CRD validation can fail: a rule field the operator does not know, a bad duration.
    bad = json.loads(json.dumps(rule))
    bad["spec"]["groups"][0]["rules"][0]["severity"] = "critical"
    assert any("'severity' was unexpected" in e for e in errors(bad))
    bad = json.loads(json.dumps(rule))
    bad["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    assert any("for" in e and "does not match" in e for e in errors(bad))


def test_each_dashboard_is_a_configmap_for_grafanas_sidecar(rendered):
    maps = {d["metadata"]["name"]: d for d in of_kind(rendered["standard"], "ConfigMap")
            if d["metadata"]["labels"].get("grafana_dashboard") == "1"}
    sources = sorted(DASHBOARDS.glob("*.json"))
    assert len(sources) >= 5
    assert sorted(maps) == [f"vigil-dashboard-{p.stem}" for p in sources]
    for path in sources:
        data = maps[f"vigil-dashboard-{path.stem}"]["data"]
        assert list(data) == [path.name]
        assert json.loads(data[path.name]) == json.loads(path.read_text())


def test_the_monitoring_objects_can_be_turned_off():
    values = deep_merge(values_of("standard"), {"monitoring": {
        "prometheusRule": {"enabled": False}, "dashboards": {"enabled": False}}})
    documents = render(values)
    assert not of_kind(documents, "PrometheusRule")
    assert [d["metadata"]["name"] for d in of_kind(documents, "ConfigMap")] == [
        "vigil-settings"]


# ------------------------------------------------------------------------------ checkov


def is_monitoring(doc: dict[str, Any]) -> bool:
    return doc["kind"] in ("PrometheusRule", "ConfigMap") and \
        doc["metadata"]["labels"].get("app.kubernetes.io/component") == "monitoring"


def test_checkov_finds_no_failed_check(rendered, tmp_path):
    checkov = shutil.which("checkov", path=str(Path(sys.executable).parent))
    assert checkov, "checkov is not installed in this environment (pip install checkov)"
    skips = yaml.safe_load(CHECKOV_SKIPS.read_text())
    reasons = {check: entry if isinstance(entry, str) else entry["reason"]
               for check, entry in skips.items()}
    assert reasons and all(isinstance(r, str) and len(r) > 40 for r in reasons.values()), \
        "every skipped check needs a reason"
    # A string: skipped everywhere; {kinds, reason}: only failures on those kinds are excused.
    everywhere = [check for check, entry in skips.items() if isinstance(entry, str)]
    some_kinds = {check: set(entry["kinds"]) for check, entry in skips.items()
                  if isinstance(entry, dict)}
    # checkov skips, without a word, every file containing "{{" (a Helm template to it): the
    # PrometheusRule's and the dashboards' Prometheus/Grafana templates would hide the whole
    # scenario. Those objects (no pods, no RBAC) go in a file of their own per scenario, and
    # the count below shows checkov read the rest.
    for scenario, documents in rendered.items():
        for part, docs in (("", [d for d in documents if not is_monitoring(d)]),
                           ("-monitoring", [d for d in documents if is_monitoring(d)])):
            (tmp_path / f"{scenario}{part}.yaml").write_text(
                "---\n".join(yaml.safe_dump(d) for d in docs))
    done = subprocess.run(
        [checkov, "--directory", str(tmp_path), "--framework", "kubernetes", "--output", "json",
         "--quiet", "--compact", "--skip-download", "--skip-check", ",".join(everywhere)],
        capture_output=True, text=True, timeout=600, check=False)
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [f"{c['check_id']} {c['check_name']}: {c['resource']} ({Path(c['file_path']).name})"
              for r in reports for c in r.get("results", {}).get("failed_checks", [])
              if c["resource"].split(".")[0] not in some_kinds.get(c["check_id"], set())]
    assert not failed, "\n".join(failed)
    passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    assert passed > 100, f"checkov passed only {passed} checks: did it read the manifests?"


# ------------------------------------------------------------------------------ manifests/


def test_committed_manifests_match_a_fresh_render():
    for relative, content in manifests.files().items():
        committed = ROOT / "manifests" / relative
        assert committed.is_file(), f"{committed} is missing: run `make manifests`"
        assert committed.read_text() == content, (
            f"{committed} is stale: run `make manifests` and commit the result")


def test_the_stand_alone_inference_service_is_the_charts():
    (isvc,) = list(yaml.safe_load_all((ROOT / "manifests" / "inferenceservice.yaml").read_text()))
    assert isvc == the(render(values_of("manifests")), "InferenceService")
    assert not errors(isvc)


OVERLAYS = sorted(p.parent for p in (ROOT / "manifests" / "overlays").glob("*/kustomization.yaml"))


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_kustomize_builds_each_overlay(overlay):
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize v5) is not installed"
    done = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    documents = [d for d in yaml.safe_load_all(done.stdout) if d]
    problems = [e for d in documents for e in errors(d)]
    assert not problems, "\n".join(problems)
    namespaces = {d["metadata"].get("namespace") for d in documents}
    assert namespaces == {f"vigil-{overlay.name}"}, namespaces
    binding = the(documents, "RoleBinding")
    assert binding["subjects"][0]["namespace"] == f"vigil-{overlay.name}"


def test_there_are_overlays():
    assert {p.name for p in OVERLAYS} >= {"dev", "prod"}
