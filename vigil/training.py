"""Train the fraud model: LightGBM on named feature columns (``feature_store.transforms``
defines them; this module only needs their names).

Plain functions over arrays; the KFP train component and the handbook benchmark both call
:func:`train_lightgbm`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from vigil import contract as c

#: A robust default for ~0.8% positives; the handbook benchmark tunes around it.
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 100,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbose": -1,
    "seed": 0,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
}
DEFAULT_ROUNDS = 400
EARLY_STOPPING_ROUNDS = 50


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    booster: lgb.Booster
    feature_names: list[str]
    params: dict[str, Any]
    best_iteration: int

    def predict(
        self, features: pd.DataFrame | np.ndarray, *, num_iteration: int | None = None
    ) -> np.ndarray:
        """Fraud scores; ``num_iteration`` uses the first that many trees instead of
        :attr:`best_iteration` (one boosting run then serves several round counts)."""
        values = (
            features[self.feature_names].to_numpy(np.float64)
            if isinstance(features, pd.DataFrame)
            else np.asarray(features, np.float64)
        )
        iterations = self.best_iteration if num_iteration is None else num_iteration
        return np.asarray(self.booster.predict(values, num_iteration=iterations))


def train_lightgbm(
    train: pd.DataFrame,
    valid: pd.DataFrame | None = None,
    *,
    feature_names: Sequence[str],
    params: Mapping[str, Any] | None = None,
    num_boost_round: int = DEFAULT_ROUNDS,
    label: str = c.TX_FRAUD,
) -> TrainedModel:
    """Fit LightGBM on the ``feature_names`` columns of ``train``; with ``valid``, stop early
    on its average precision."""
    names = list(feature_names)
    merged = {**DEFAULT_PARAMS, **(params or {})}
    if train[label].nunique() < 2:
        raise ValueError(f"training data holds one class only ({label}={train[label].iloc[0]})")
    dtrain = lgb.Dataset(
        train[names].to_numpy(np.float64),
        label=train[label].to_numpy(),
        feature_name=names,
        free_raw_data=True,
    )
    callbacks: list[Callable[..., Any]] = []
    valid_sets: list[lgb.Dataset] = []
    if valid is not None and valid[label].nunique() == 2:
        merged.setdefault("metric", "average_precision")
        valid_sets = [
            lgb.Dataset(
                valid[names].to_numpy(np.float64), label=valid[label].to_numpy(), reference=dtrain
            )
        ]
        callbacks.append(lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False))
    booster = lgb.train(
        merged, dtrain, num_boost_round=num_boost_round, valid_sets=valid_sets, callbacks=callbacks
    )
    best = booster.best_iteration or booster.current_iteration()
    return TrainedModel(booster=booster, feature_names=names, params=merged, best_iteration=best)
