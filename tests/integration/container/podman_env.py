"""Podman for the container tests: Vigil's image built by ``scripts/build-image.sh``, the
containers and pods the tests start, and what ``podman play kube`` (4.3, Debian bookworm) does
not do that Kubernetes does, done here in the open:

* Services are ignored: :func:`alias_services` gives each Service's selected pod the Service's
  name on the pods' network (aardvark DNS), which is what a ClusterIP name resolves to.
* Secrets are read from podman's secret store, as JSON of base64 values
  (:func:`create_secret`), not from ``kind: Secret`` documents.
* StatefulSets are not played: :func:`playable` turns one into the Deployment it would be with
  one replica, its ``volumeClaimTemplates`` into PersistentVolumeClaims named as Kubernetes names
  them (``<template>-<statefulset>-0``).
* Readiness probes are ignored: the tests wait on the container's own health path.
* ``$(VAR)`` references in ``command``, ``args`` and ``env`` values are not expanded by podman
  4.3 (Kubernetes expands them from the container's environment): :func:`playable` expands
  them from the rendered env, the ConfigMaps and the test's Secrets.
* A ``containerPort`` is published on the host (0.0.0.0) by podman 4.3, while in Kubernetes it
  only documents the port: :func:`playable` drops ``ports`` (probes that named a port get its
  number), and the tests reach the pods on their network's addresses.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
CONTAINERS_CONF = ROOT / "scripts" / "podman" / "containers.conf"
BUILD_SCRIPT = ROOT / "scripts" / "build-image.sh"
BASE_IMAGE = "localhost/vigil-base:bookworm"
#: Kinds ``podman play kube`` plays; the others are Kubernetes' business (NetworkPolicy, RBAC,
#: monitors, autoscaling, CronJobs) or handled above (Service, Secret, StatefulSet).
PLAYED_KINDS = frozenset({"ConfigMap", "Deployment", "PersistentVolumeClaim"})


class PodmanError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class BuiltImage:
    ref: str
    build_seconds: float
    size_bytes: int
    config: dict[str, Any]


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, timeout_s: float = 180, check: bool = True,
           stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``podman ARGS`` with the machine's settings; raises with podman's stderr on failure."""
    result = subprocess.run(["podman", *args], env=podman_env(), capture_output=True,
                            text=True, timeout=timeout_s, input=stdin, check=False)
    if check and result.returncode != 0:
        raise PodmanError(f"podman {' '.join(args)}: exit {result.returncode}\n"
                          f"{result.stderr.strip()[-3000:]}")
    return result


def build_image(tag: str, log: Path) -> float:
    """``scripts/build-image.sh TAG`` (the base, then the image; cached layers are reused);
    returns its seconds. The build's output goes to ``log``."""
    start = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run([str(BUILD_SCRIPT), tag], env=podman_env(), stdout=out,
                                stderr=subprocess.STDOUT, timeout=1800, check=False)
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise PodmanError(f"scripts/build-image.sh {tag}: exit {result.returncode}\n{tail}")
    return time.monotonic() - start


def image_config(image: str) -> dict[str, Any]:
    inspected: list[dict[str, Any]] = json.loads(podman("image", "inspect", image).stdout)
    return inspected[0]


def create_secret(name: str, data: Mapping[str, str]) -> None:
    """A podman secret that ``secretKeyRef`` (name, key) reads in ``podman play kube``."""
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    podman("secret", "create", name, "-", stdin=json.dumps(encoded))


def playable(documents: list[dict[str, Any]],
             secrets: Mapping[str, Mapping[str, str]] | None = None) -> list[dict[str, Any]]:
    """The documents ``podman play kube`` can play (see the module docstring); ``secrets``
    ({name: {key: value}}) are the Secrets the pods' ``secretKeyRef`` s read."""
    out: list[dict[str, Any]] = []
    for doc in documents:
        if doc["kind"] == "StatefulSet":
            out.extend(_statefulset_as_deployment(doc))
        elif doc["kind"] in PLAYED_KINDS:
            out.append(copy.deepcopy(doc))
    config_maps = {d["metadata"]["name"]: d.get("data") or {} for d in out
                   if d["kind"] == "ConfigMap"}
    for doc in out:
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                _unpublished(container)
                _expanded(container, config_maps, secrets or {})
    return out


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _expanded(container: dict[str, Any], config_maps: Mapping[str, Mapping[str, str]],
              secrets: Mapping[str, Mapping[str, str]]) -> None:
    """Kubernetes' dependent environment variables: ``$(NAME)`` is NAME's value when NAME is
    defined before (``envFrom``, then earlier ``env`` entries), ``$$`` is ``$``."""
    known: dict[str, str] = {}
    for source in container.get("envFrom", []):
        known.update(config_maps[source["configMapRef"]["name"]])

    def expand(text: str) -> str:
        return _REFERENCE.sub(
            lambda m: "$" if m.group(0) == "$$" else known.get(m.group(1), m.group(0)), text)

    for entry in container.get("env", []):
        if "value" in entry:
            entry["value"] = expand(str(entry["value"]))
            known[entry["name"]] = entry["value"]
            continue
        ref = entry.get("valueFrom", {})
        if "secretKeyRef" in ref:
            known[entry["name"]] = secrets[ref["secretKeyRef"]["name"]][ref["secretKeyRef"]["key"]]
        elif "configMapKeyRef" in ref:
            cm = ref["configMapKeyRef"]
            known[entry["name"]] = config_maps[cm["name"]][cm["key"]]
    for field in ("command", "args"):
        if field in container:
            container[field] = [expand(str(part)) for part in container[field]]


def _unpublished(container: dict[str, Any]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container.pop("ports", []) if "name" in p}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        for action in ("httpGet", "tcpSocket"):
            target = container.get(probe, {}).get(action)
            if target and isinstance(target.get("port"), str):
                target["port"] = ports[target["port"]]


def _statefulset_as_deployment(sts: dict[str, Any]) -> list[dict[str, Any]]:
    name = sts["metadata"]["name"]
    spec = copy.deepcopy(sts["spec"])
    claims = []
    volumes = spec["template"]["spec"].setdefault("volumes", [])
    for template in spec.pop("volumeClaimTemplates", []):
        claim = f"{template['metadata']['name']}-{name}-0"
        claims.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": claim}, "spec": template["spec"]})
        volumes.append({"name": template["metadata"]["name"],
                        "persistentVolumeClaim": {"claimName": claim}})
    spec.pop("serviceName", None)
    spec.pop("podManagementPolicy", None)
    spec["replicas"] = 1
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": copy.deepcopy(sts["metadata"]), "spec": spec}
    return [*claims, deployment]


def pods_of(deployment: dict[str, Any]) -> str:
    """The pod ``podman play kube`` makes of a Deployment (one replica)."""
    return f"{deployment['metadata']['name']}-pod-0"


def alias_services(documents: list[dict[str, Any]], network: str) -> dict[str, str]:
    """Give each Service's name (of ``documents``) to the pod its selector picks among the played
    Deployments of ``documents`` (one pod per Service here);
    returns {service: pod}. Services with no played pod are left out."""
    deployments = [d for d in documents if d["kind"] == "Deployment"]
    aliased: dict[str, str] = {}
    for service in (d for d in documents if d["kind"] == "Service"):
        selector = service["spec"].get("selector") or {}
        picked = [d for d in deployments
                  if selector and selector.items() <= d["spec"]["template"]["metadata"]
                  ["labels"].items()]
        if len(picked) > 1:
            raise PodmanError(f"Service {service['metadata']['name']} selects "
                              f"{len(picked)} Deployments; one DNS alias cannot stand for it")
        if picked:
            aliased[service["metadata"]["name"]] = pods_of(picked[0])
    for pod in sorted(set(aliased.values())):
        infra = podman("pod", "inspect", pod, "--format", "{{.InfraContainerID}}").stdout.strip()
        names = [f"--alias={name}" for name, target in aliased.items() if target == pod]
        podman("network", "disconnect", network, infra)
        podman("network", "connect", *names, network, infra)
    return aliased


def pod_ip(pod: str, network: str) -> str:
    infra = podman("pod", "inspect", pod, "--format", "{{.InfraContainerID}}").stdout.strip()
    inspected = json.loads(podman("container", "inspect", infra).stdout)[0]
    return str(inspected["NetworkSettings"]["Networks"][network]["IPAddress"])


def container_logs(name: str, lines: int = 60) -> str:
    result = podman("logs", "--tail", str(lines), name, check=False)
    return (result.stdout + result.stderr).strip()


def wait_until(check: Callable[[], bool], what: str, timeout_s: float,
               diagnose: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n{diagnose()}")


@contextlib.contextmanager
def network(name: str) -> Iterator[str]:
    """A podman network with DNS (aardvark), removed afterwards with whatever is left on it."""
    podman("network", "create", name)
    try:
        yield name
    finally:
        podman("network", "rm", "--force", name, check=False)
