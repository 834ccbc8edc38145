"""The ``kserve`` target: canary steps as patches of the InferenceService.

KServe splits traffic but never decides; this target only moves the split, the controller
decides. Two deployment modes, two places for the split (KServe v0.20 CRD,
``schemas/kserve/``):

* **Standard** (raw Kubernetes deployments): the canary is an entry of ``spec.canary`` —
  ``{"predictor": <the primary's predictor with the candidate's version>, "trafficPercent":
  N}`` (the list is atomic: every patch sends it whole; the entry has no name of its own —
  the CRD knows only these two fields, and the API server would drop any other). Promotion
  puts the candidate into ``spec.predictor`` while the canary still takes all traffic, waits
  for the InferenceService to be Ready, then removes ``spec.canary``.
* **Knative**: ``spec.predictor.canaryTrafficPercent``. Rolling out patches the predictor
  itself (the candidate's version, ``canaryTrafficPercent: 0``): Knative keeps the last
  revision rolled out at 100% as the primary and gives the new revision N%. Promotion removes
  ``canaryTrafficPercent`` (the new revision takes everything); rollback sets it to 0, then
  puts the primary's version back into the predictor (held at 0% until ready).

The candidate's version reaches the pod as ``--version V`` in the args of the container running
``vigil serve`` (``rollout.kserve.container``, default the first), and as the pod labels
``vigil.io/model-version: V`` and ``vigil.io/track: canary`` (as the chart renders them), by
which Prometheus tells canary from primary (``rollout.kserve.selector``). Every request is a
JSON merge patch (``application/merge-patch+json``) with ``fieldValidation=Strict``, so that
the API server rejects a field the CRD does not know instead of pruning it silently.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from rollout import Say, quiet
from rollout.state import RolloutError
from vigil.settings import RolloutKServeSettings, Settings

GROUP: Final = "serving.kserve.io"
VERSION: Final = "v1beta1"
PLURAL: Final = "inferenceservices"
VERSION_LABEL: Final = "vigil.io/model-version"
#: ``stable`` or ``canary`` (the chart's label for the two tracks).
TRACK_LABEL: Final = "vigil.io/track"
VERSION_ARG: Final = "--version"



class KubernetesError(RolloutError):
    """The Kubernetes API refused or failed a request."""


def with_version(predictor: Mapping[str, Any], version: int, container: str | None = None,
                 track: str = "canary") -> dict[str, Any]:
    """A copy of ``predictor`` serving ``version``: ``--version`` in the args of the Vigil
    container (replaced, or appended), the version and track labels."""
    out = copy.deepcopy(dict(predictor))
    containers = out.get("containers") or []
    if not containers:
        raise RolloutError("the InferenceService's predictor has no containers: Vigil's "
                           "predictor runs `vigil serve` in a container of its own")
    if container is None:
        target = containers[0]
    else:
        matching = [c for c in containers if c.get("name") == container]
        if not matching:
            names = [c.get("name") for c in containers]
            raise RolloutError(f"the predictor has no container {container!r} (it has {names})")
        target = matching[0]
    args = list(target.get("args") or [])
    if VERSION_ARG in args and args.index(VERSION_ARG) + 1 < len(args):
        args[args.index(VERSION_ARG) + 1] = str(version)
    else:
        args = [a for a in args if not a.startswith(f"{VERSION_ARG}=")]
        args += [VERSION_ARG, str(version)]
    target["args"] = args
    out["labels"] = {**(out.get("labels") or {}), VERSION_LABEL: str(version),
                     TRACK_LABEL: track}
    return out


def version_of(predictor: Mapping[str, Any], container: str | None = None) -> int | None:
    """The model version a predictor serves: its ``--version`` argument, else its label."""
    for c in predictor.get("containers") or []:
        if container is not None and c.get("name") != container:
            continue
        args = [str(a) for a in c.get("args") or []]
        for i, arg in enumerate(args):
            if arg == VERSION_ARG and i + 1 < len(args) and args[i + 1].isdigit():
                return int(args[i + 1])
            if arg.startswith(f"{VERSION_ARG}=") and arg.split("=", 1)[1].isdigit():
                return int(arg.split("=", 1)[1])
        if container is None:
            break
    label = (predictor.get("labels") or {}).get(VERSION_LABEL)
    return int(label) if isinstance(label, str) and label.isdigit() else None


class ClusterTarget:
    """What the cluster targets (kserve, helm) share: the analysis reads the Prometheus and
    Pushgateway named in settings, and there is no mirror in front of the pods (no shadow)."""

    settings: Settings

    @property
    def prometheus_url(self) -> str | None:
        return self.settings.rollout.prometheus_url

    @property
    def pushgateway_url(self) -> str | None:
        return self.settings.rollout.pushgateway_url

    def supports_shadow(self) -> bool:
        return False


class KServeTarget(ClusterTarget):
    """See the module docstring."""

    kind: Final = "kserve"

    def __init__(self, settings: Settings, api: Any | None = None, *,
                 kserve: RolloutKServeSettings | None = None, say: Say = quiet,
                 poll_s: float = 2.0) -> None:
        self.settings = settings
        self.config = kserve or settings.rollout.kserve
        self._api = api
        self.say = say
        self.poll_s = poll_s

    @classmethod
    def create(cls, settings: Settings, params: Mapping[str, Any] | None = None,
               say: Say = quiet) -> KServeTarget:
        config = settings.rollout.kserve
        if params:
            config = config.model_copy(update={k: params[k] for k in ("namespace", "name", "mode")
                                               if k in params})
        return cls(settings, kserve=config, say=say)

    def params(self) -> dict[str, Any]:
        c = self.config
        return {"kind": self.kind, "namespace": c.namespace, "name": c.name, "mode": c.mode}

    # ------------------------------------------------------------------ Kubernetes API

    @property
    def api(self) -> Any:
        """``kubernetes.client.CustomObjectsApi`` (the pod's service account, else the
        kubeconfig)."""
        if self._api is None:
            from kubernetes import client, config

            try:
                if self.config.kubeconfig:
                    config.load_kube_config(config_file=self.config.kubeconfig)
                else:
                    try:
                        config.load_incluster_config()
                    except config.ConfigException:
                        config.load_kube_config()
            except (config.ConfigException, OSError) as e:
                raise KubernetesError(f"no Kubernetes configuration: {e}") from e
            self._api = client.CustomObjectsApi()
        return self._api

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        c = self.config
        try:
            return fn(group=GROUP, version=VERSION, namespace=c.namespace, plural=PLURAL,
                      name=c.name, **kwargs)
        except ApiException as e:
            raise KubernetesError(f"{what} InferenceService {c.namespace}/{c.name}: "
                                  f"{e.status} {e.reason}: {(e.body or '')[:500]}") from e
        except HTTPError as e:
            raise KubernetesError(f"{what} InferenceService {c.namespace}/{c.name}: {e}") from e

    def get(self) -> dict[str, Any]:
        return dict(self._call("cannot read", self.api.get_namespaced_custom_object))

    def patch(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._call("cannot patch", self.api.patch_namespaced_custom_object,
                               body=dict(body), field_validation="Strict"))

    # ------------------------------------------------------------------ target

    def serving_version(self) -> int | None:
        return version_of(self.get().get("spec", {}).get("predictor", {}), self.config.container)

    def selectors(self, primary_version: int | None, canary_version: int) -> tuple[str, str]:
        c = self.config

        def fill(version: int | None) -> str:
            return c.selector.format(namespace=c.namespace, name=c.name,
                                     version="" if version is None else version)

        return fill(primary_version), fill(canary_version)

    def prepare(self, version: int) -> None:
        isvc = self.get()
        predictor = isvc.get("spec", {}).get("predictor", {})
        candidate = with_version(predictor, version, self.config.container)
        if self.config.mode == "Standard":
            self.patch({"spec": {"canary": [{"predictor": candidate, "trafficPercent": 0}]}})
        else:
            self.patch({"spec": {"predictor": {**candidate, "canaryTrafficPercent": 0}}})
        self.say(f"InferenceService {self.config.name}: canary version {version} deployed "
                 "with no traffic")
        self.wait_ready()

    def set_traffic(self, percent: int) -> None:
        if self.config.mode == "Standard":
            canary = (self.get().get("spec", {}).get("canary") or [])
            if not canary:
                raise RolloutError(f"InferenceService {self.config.name} has no canary to "
                                   "give traffic to")
            if canary[0].get("trafficPercent") == int(percent):
                return
            entries = [dict(canary[0], trafficPercent=int(percent)), *canary[1:]]
            self.patch({"spec": {"canary": entries}})
        else:
            self.patch({"spec": {"predictor": {"canaryTrafficPercent": int(percent)}}})

    def set_shadow(self, on: bool) -> None:
        raise RolloutError("shadow mode mirrors traffic, which KServe's InferenceService "
                           "cannot do (it needs a mesh's mirroring); use it with the local "
                           "target")

    def promote(self, version: int) -> None:
        if self.config.mode == "Standard":
            spec = self.get().get("spec", {})
            primary = with_version(spec.get("predictor", {}), version, self.config.container,
                                   track="stable")
            canary = spec.get("canary") or []
            body: dict[str, Any] = {"predictor": primary}
            if canary:
                body["canary"] = [dict(canary[0], trafficPercent=100), *canary[1:]]
            self.patch({"spec": body})
            self.wait_ready()
            self.patch({"spec": {"canary": None}})
        else:
            # The new revision takes all traffic; its pods become the stable track (a label
            # change: Knative rolls a revision of the same model out behind it).
            labels = {TRACK_LABEL: "stable"}
            self.patch({"spec": {"predictor": {"canaryTrafficPercent": None,
                                               "labels": labels}}})
        self.wait_ready()

    def rollback(self, primary_version: int | None) -> None:
        if self.config.mode == "Standard":
            self.set_traffic(0)
            self.patch({"spec": {"canary": None}})
            return
        # Knative: the previous revision takes everything at once; then the predictor goes
        # back to the primary's version (a new revision, held at 0% until it is ready, so that
        # the candidate's revision never becomes "latest ready at 100%").
        self.patch({"spec": {"predictor": {"canaryTrafficPercent": 0}}})
        if primary_version is None:
            return
        predictor = self.get().get("spec", {}).get("predictor", {})
        restored = with_version(predictor, primary_version, self.config.container,
                                track="stable")
        self.patch({"spec": {"predictor": {**restored, "canaryTrafficPercent": 0}}})
        self.wait_ready()
        self.patch({"spec": {"predictor": {"canaryTrafficPercent": None}}})

    def wait_ready(self) -> None:
        """Until the InferenceService has observed its latest spec and is Ready."""
        deadline = time.monotonic() + self.config.ready_timeout_s
        message = "no status yet"
        while True:
            isvc = self.get()
            status = isvc.get("status") or {}
            generation = (isvc.get("metadata") or {}).get("generation")
            observed = status.get("observedGeneration")
            ready = next((c for c in status.get("conditions") or []
                          if c.get("type") == "Ready"), None)
            if ready is not None:
                message = f"Ready={ready.get('status')} {ready.get('message') or ''}".strip()
            current = generation is None or (observed is not None and observed >= generation)
            if current and ready is not None and ready.get("status") == "True":
                return
            if time.monotonic() > deadline:
                raise RolloutError(
                    f"InferenceService {self.config.namespace}/{self.config.name} not Ready "
                    f"after {self.config.ready_timeout_s:g} s ({message})")
            time.sleep(self.poll_s)
