"""Step 3, train: LightGBM on the fit rows; early stopping and threshold on the validation slice.

Writes into ``model_dir``:

* ``model.txt`` — the booster in LightGBM's text format, cut at the best iteration, so that the
  file evaluated next is byte for byte the file registered and served;
* ``training.json`` — the card's raw material: threshold choice, parameters, best iteration,
  feature names, training window, validation metrics and feature importance (gain).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pandas as pd

from components.runtime import say
from components.windows import FIT, SPLIT_COLUMN, VALID
from feature_store.transforms import DEFAULT_SPEC
from vigil import contract as c
from vigil.errors import ConfigError, DataError
from vigil.evaluation.metrics import auc_roc, average_precision, choose_threshold
from vigil.registry import MODEL_FILE
from vigil.training import DEFAULT_ROUNDS, train_lightgbm

STEP = "train"
TRAINING_FILE: Final = "training.json"


@dataclasses.dataclass(frozen=True)
class TrainingResult:
    threshold: float
    best_iteration: int
    feature_names: list[str]
    params: dict[str, Any]
    fit_rows: int
    valid_rows: int
    valid_metrics: dict[str, float]
    threshold_choice: dict[str, Any]
    feature_importance: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def read(cls, model_dir: Path) -> TrainingResult:
        data = json.loads((model_dir / TRAINING_FILE).read_text(encoding="utf-8"))
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def parse_params(text: str) -> dict[str, Any]:
    """LightGBM parameter overrides from the pipeline's JSON string parameter."""
    try:
        params = json.loads(text or "{}")
    except json.JSONDecodeError as e:
        raise ConfigError(f"lightgbm_params is not JSON: {e}") from e
    if not isinstance(params, dict):
        raise ConfigError(f"lightgbm_params must be a JSON object, got {text!r}")
    return params


def train_model(
    dataset: Path,
    model_dir: Path,
    *,
    params: Mapping[str, Any] | None = None,
    num_boost_round: int = DEFAULT_ROUNDS,
) -> TrainingResult:
    """Train on the ``train`` rows of ``dataset``; write ``model.txt`` and ``training.json``."""
    frame = pd.read_parquet(dataset)
    fit = frame.loc[frame[SPLIT_COLUMN] == FIT]
    valid = frame.loc[frame[SPLIT_COLUMN] == VALID]
    for name, part in (("training", fit), ("validation", valid)):
        if part.empty or part[c.TX_FRAUD].nunique() < 2:
            raise DataError(f"the {name} rows of {dataset} need frauds and genuine transactions")
    say(STEP, f"LightGBM on {len(fit):,} rows ({int(fit[c.TX_FRAUD].sum()):,} frauds), "
              f"early stopping on {len(valid):,} validation rows")
    model = train_lightgbm(fit, valid, params=params, num_boost_round=num_boost_round,
                           feature_names=DEFAULT_SPEC.features)
    valid_scores = model.predict(valid)
    y_valid = valid[c.TX_FRAUD].to_numpy()
    choice = choose_threshold(y_valid, valid_scores)
    booster = model.booster
    gains = booster.feature_importance(importance_type="gain", iteration=model.best_iteration)
    result = TrainingResult(
        threshold=choice.threshold,
        best_iteration=model.best_iteration,
        feature_names=list(model.feature_names),
        params={k: v for k, v in model.params.items()},
        fit_rows=len(fit),
        valid_rows=len(valid),
        valid_metrics={
            "auc_roc": auc_roc(y_valid, valid_scores),
            "average_precision": average_precision(y_valid, valid_scores),
        },
        threshold_choice=choice.to_dict(),
        feature_importance={n: float(g) for n, g in zip(model.feature_names, gains, strict=True)},
    )
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / MODEL_FILE).write_text(
        booster.model_to_string(num_iteration=model.best_iteration), encoding="utf-8"
    )
    (model_dir / TRAINING_FILE).write_text(
        json.dumps(result.to_dict(), indent=2, default=str) + "\n", encoding="utf-8"
    )
    say(STEP, f"best iteration {model.best_iteration}; validation AP "
              f"{result.valid_metrics['average_precision']:.3f}, AUC "
              f"{result.valid_metrics['auc_roc']:.3f}; threshold {choice.threshold:.4g} "
              f"(F1 {choice.f1:.3f}, precision {choice.precision:.3f}, recall {choice.recall:.3f})")
    return result
