"""The ``helm`` target: canary steps as ``helm upgrade --reuse-values --set ...`` of Vigil's chart.

The chart (``charts/vigil``) renders the InferenceService ``fraud`` with its canary from the
values ``model.version``, ``canary.enabled``, ``canary.modelVersion`` and
``canary.trafficPercent``. Each step is one upgrade that changes only those values
(``--reuse-values`` keeps everything else the release was installed with):

======================  =====================================================================
deploy the candidate    ``--set canary.enabled=true --set canary.modelVersion=V
                        --set canary.trafficPercent=0 --wait``
step to N%              ``--set canary.trafficPercent=N``
promote                 ``--set model.version=V --set canary.enabled=false
                        --set canary.trafficPercent=0 --wait``
roll back               ``--set canary.trafficPercent=0 --set canary.enabled=false``
======================  =====================================================================

When the ``helm`` program (``rollout.helm.binary``) is not on PATH the commands are printed
instead of run, so that someone can apply them; the
analysis reads Prometheus exactly as for the ``kserve`` target (the chart's pods carry the
version label).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any, Final

from rollout import Say, quiet
from rollout.kserve import ClusterTarget, KServeTarget
from rollout.state import RolloutError
from vigil.registry import CHAMPION, Registry
from vigil.settings import RolloutHelmSettings, Settings

HELM_TIMEOUT_S: Final = 900



class HelmError(RolloutError):
    """``helm`` failed."""


def upgrade_command(config: RolloutHelmSettings, values: Mapping[str, object], *,
                    wait: bool = False, binary: str | None = None) -> list[str]:
    """``helm upgrade RELEASE CHART --reuse-values [--namespace NS] --set k=v ... [--wait]``."""
    command = [binary or config.binary, "upgrade", config.release, config.chart,
               "--reuse-values"]
    if config.namespace:
        command += ["--namespace", config.namespace]
    for key, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        command += ["--set", f"{key}={text}"]
    if wait:
        command += ["--wait", "--timeout", f"{HELM_TIMEOUT_S}s"]
    return command


def prepare_values(version: int) -> dict[str, object]:
    return {"canary.enabled": True, "canary.modelVersion": version, "canary.trafficPercent": 0}


def traffic_values(percent: int) -> dict[str, object]:
    return {"canary.trafficPercent": int(percent)}


def promote_values(version: int) -> dict[str, object]:
    return {"model.version": version, "canary.enabled": False, "canary.trafficPercent": 0}


def rollback_values() -> dict[str, object]:
    return {"canary.trafficPercent": 0, "canary.enabled": False}


class HelmTarget(ClusterTarget):
    """See the module docstring."""

    kind: Final = "helm"

    def __init__(self, settings: Settings, *, helm: RolloutHelmSettings | None = None,
                 say: Say = quiet) -> None:
        self.settings = settings
        self.config = helm or settings.rollout.helm
        self.say = say
        self.binary = shutil.which(self.config.binary)
        # The chart's pods are told apart like the kserve target's.
        self._pods = KServeTarget(settings)

    @classmethod
    def create(cls, settings: Settings, params: Mapping[str, Any] | None = None,
               say: Say = quiet) -> HelmTarget:
        config = settings.rollout.helm
        if params:
            config = config.model_copy(update={k: params[k]
                                               for k in ("release", "chart", "namespace")
                                               if k in params})
        return cls(settings, helm=config, say=say)

    def params(self) -> dict[str, Any]:
        c = self.config
        return {"kind": self.kind, "release": c.release, "chart": c.chart,
                "namespace": c.namespace}

    @property
    def printing(self) -> bool:
        """True when helm is not installed: commands are printed, not run."""
        return self.binary is None

    def run(self, values: Mapping[str, object], *, wait: bool = False) -> list[str]:
        command = upgrade_command(self.config, values, wait=wait,
                                  binary=self.binary or self.config.binary)
        shown = " ".join(command)
        if self.binary is None:
            self.say(f"helm is not installed; run: {shown}")
            return command
        self.say(f"$ {shown}")
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=HELM_TIMEOUT_S + 60, check=False)
        if done.returncode != 0:
            raise HelmError(f"{shown} failed ({done.returncode}): "
                            f"{(done.stderr or done.stdout).strip()[-1000:]}")
        return command

    def serving_version(self) -> int | None:
        """``model.version`` of the release (``helm get values``); the registry's champion
        when helm is not installed."""
        if self.binary is None:
            champion = Registry.from_settings(self.settings).find(
                self.settings.registry.model_name, CHAMPION)
            return None if champion is None else champion.version
        command = [self.binary, "get", "values", self.config.release, "--all", "-o", "json"]
        if self.config.namespace:
            command += ["--namespace", self.config.namespace]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                              check=False)
        if done.returncode != 0:
            raise HelmError(f"{' '.join(command)} failed: {done.stderr.strip()[-1000:]}")
        try:
            values = json.loads(done.stdout)
            version = values["model"]["version"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise HelmError(f"release {self.config.release} has no model.version value") from e
        return int(version) if str(version).isdigit() else None

    def selectors(self, primary_version: int | None, canary_version: int) -> tuple[str, str]:
        return self._pods.selectors(primary_version, canary_version)

    def prepare(self, version: int) -> None:
        self.run(prepare_values(version), wait=True)

    def set_traffic(self, percent: int) -> None:
        self.run(traffic_values(percent))

    def set_shadow(self, on: bool) -> None:
        raise RolloutError("shadow mode mirrors traffic, which the chart's InferenceService "
                           "cannot do; use it with the local target")

    def promote(self, version: int) -> None:
        self.run(promote_values(version), wait=True)

    def rollback(self, primary_version: int | None = None) -> None:
        self.run(rollback_values())

