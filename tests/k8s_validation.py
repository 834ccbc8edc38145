"""Validating Kubernetes objects offline, as an API server would: shared by the chart's tests
(``tests/unit/test_chart.py``) and the rollout's contract server
(``tests/integration/test_rollout_cluster.py``).

* Core kinds: ``kubernetes-validate``'s strict schemas (an unknown field is an error) for
  :data:`KUBERNETES_VERSION`.
* Custom resources: the CRDs committed under ``schemas/`` (KServe v0.20, Prometheus Operator),
  made strict by :func:`strict` the way ``fieldValidation=Strict`` makes the API server refuse
  a field the CRD does not list.
* Pods: the restricted Pod Security Standard (:func:`restricted_violations`).

:func:`chart` is ``scripts/render_manifests.py``, which renders the Helm chart offline.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import jsonschema
import kubernetes_validate
import yaml

ROOT: Final = Path(__file__).resolve().parents[1]
SCHEMAS: Final = ROOT / "schemas"
#: The Kubernetes version core kinds are validated for (KServe v0.20 supports 1.29 and later).
KUBERNETES_VERSION: Final = "1.32"
#: (apiVersion, kind) of the custom resources the repository has a CRD for.
CRDS: Final = {
    ("serving.kserve.io/v1beta1", "InferenceService"):
        SCHEMAS / "kserve" / "serving.kserve.io_inferenceservices.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"):
        SCHEMAS / "prometheus-operator" / "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"):
        SCHEMAS / "prometheus-operator" / "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"):
        SCHEMAS / "prometheus-operator" / "monitoring.coreos.com_prometheusrules.yaml",
}


@functools.cache
def chart() -> Any:
    """``scripts/render_manifests.py`` as a module (``render``, ``load_values``, ``files``)."""
    spec = importlib.util.spec_from_file_location("render_manifests",
                                                  ROOT / "scripts" / "render_manifests.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def strict(schema: Any) -> Any:
    """The CRD's schema as the API server applies it with strict field validation: an object
    that lists its properties refuses others (unless it preserves unknown fields)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if k in ("items", "additionalProperties", "allOf", "anyOf", "oneOf")
           else v for k, v in schema.items()}
    if "properties" in out:
        out["properties"] = {k: strict(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
                "x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


@functools.cache
def crd_schema(path: Path, version: str) -> dict[str, Any]:
    """The strict openAPIV3Schema of ``version`` (e.g. ``v1beta1``) in the CRD at ``path``."""
    crd = yaml.safe_load(path.read_text())
    matching = [v for v in crd["spec"]["versions"] if v["name"] == version]
    if not matching:
        raise ValueError(f"{path.name} has no version {version!r}")
    schema: dict[str, Any] = strict(matching[0]["schema"]["openAPIV3Schema"])
    return schema


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    path = CRDS[(api_version, kind)]
    return jsonschema.Draft7Validator(crd_schema(path, api_version.rsplit("/", 1)[-1]))


def errors(doc: Mapping[str, Any]) -> list[str]:
    """Why the API server would refuse ``doc`` (empty: it would accept it)."""
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    name = (doc.get("metadata") or {}).get("name")
    where = f"{kind} {name}"
    if (api_version, kind) in CRDS:
        validator = crd_validator(str(api_version), str(kind))
        return [f"{where}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in validator.iter_errors(dict(doc))]
    try:
        kubernetes_validate.validate(dict(doc), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{where}: no schema for {api_version} {kind} (neither a Kubernetes "
                f"{KUBERNETES_VERSION} kind nor a CRD under schemas/)"]
    except kubernetes_validate.ValidationError as e:
        return [f"{where}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"]
    return []


def pod_specs(doc: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(where, pod spec)`` of every pod ``doc`` makes: workloads' templates, CronJobs' job
    templates, the InferenceService's predictor and canary predictors (their pod spec is
    inline)."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    name = f"{kind} {(doc.get('metadata') or {}).get('name')}"
    if kind == "Pod":
        yield name, spec
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield name, spec["template"]["spec"]
    elif kind == "CronJob":
        yield name, spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "InferenceService":
        yield f"{name} predictor", spec["predictor"]
        for i, entry in enumerate(spec.get("canary") or []):
            yield f"{name} canary[{i}]", entry["predictor"]


def restricted_violations(where: str, pod: Mapping[str, Any]) -> list[str]:
    """Breaches of the restricted Pod Security Standard (the checks this chart can breach)."""
    out: list[str] = []
    context = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            out.append(f"{where}: {field} is set")
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            out.append(f"{where}: volume {volume.get('name')} is a hostPath")
    pod_seccomp = (context.get("seccompProfile") or {}).get("type")
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    if not containers:
        out.append(f"{where}: no containers")
    for c in containers:
        at = f"{where} container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") or context.get("runAsNonRoot")):
            out.append(f"{at}: runAsNonRoot is not true")
        if sc.get("runAsUser", context.get("runAsUser")) == 0:
            out.append(f"{at}: runs as uid 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{at}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            out.append(f"{at}: privileged")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            out.append(f"{at}: capabilities do not drop ALL")
        if set((sc.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{at}: adds capabilities")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{at}: seccompProfile is {seccomp!r}, not RuntimeDefault")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{at}: hostPort {port['hostPort']}")
    return out
