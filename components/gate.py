"""The registration gate: where a candidate goes, given its metrics and the champion's.

Light on purpose (no ML imports): the pipeline's refusal branch runs only this.

* A candidate whose comparison metric is below ``quality_floor`` is rejected, champion or not.
* With no champion yet, a candidate that passes the floor becomes the champion.
* Otherwise it must beat the champion, scored on the same test rows, by more than
  ``min_improvement``; then it becomes the challenger. A tie or a loss is not better.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from components.results import (
    REJECTED,
    ChampionScores,
    Decision,
    Evaluation,
    Registration,
)
from components.runtime import say
from vigil.errors import ConfigError
from vigil.evaluation.metrics import METRICS

REFUSAL_STEP = "not-registered"


@dataclasses.dataclass(frozen=True)
class Gate:
    decision: Decision
    reason: str


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ConfigError(f"comparison metric {metric!r}: choose one of {list(METRICS)}")
    return metric


def decide(
    candidate: Mapping[str, float],
    champion: ChampionScores | None,
    *,
    metric: str,
    quality_floor: float,
    min_improvement: float = 0.0,
) -> Gate:
    """Where the candidate goes: ``champion``, ``challenger`` or ``rejected``, and why."""
    check_metric(metric)
    if min_improvement < 0:
        raise ConfigError(f"min_improvement must be >= 0, got {min_improvement}")
    value = float(candidate[metric])
    if not math.isfinite(value) or value < quality_floor:
        return Gate(
            REJECTED, f"{metric} {value:.4f} is below the quality floor {quality_floor:.4f}"
        )
    if champion is None:
        return Gate(
            "champion",
            f"no champion yet and {metric} {value:.4f} passes the quality floor "
            f"{quality_floor:.4f}",
        )
    best = float(champion.metrics[metric])
    margin = f" + {min_improvement:.4f}" if min_improvement else ""
    if value > best + min_improvement:
        return Gate(
            "challenger",
            f"{metric} {value:.4f} beats champion version {champion.version} ({best:.4f}{margin})",
        )
    return Gate(
        REJECTED,
        f"{metric} {value:.4f} is not better than champion version {champion.version} "
        f"({best:.4f}{margin})",
    )


def explain_refusal(evaluation: Evaluation, model_name: str) -> Registration:
    """The end of a run whose candidate the gate rejected: nothing is registered."""
    if evaluation.decision != REJECTED:
        raise ConfigError(f"the candidate was accepted as {evaluation.decision}, not rejected")
    say(REFUSAL_STEP, f"model {model_name!r} unchanged: {evaluation.reason}")
    return Registration(
        registered=False, model_name=model_name, version=None, alias=None, reason=evaluation.reason
    )
