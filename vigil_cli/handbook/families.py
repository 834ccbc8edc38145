"""Model families: the configurations each one tries and how it fits and scores them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from feature_store.transforms import DEFAULT_SPEC, FeatureSpec
from vigil import contract as c
from vigil.training import train_lightgbm


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One hyperparameter configuration of a model family."""

    params: Mapping[str, Any]

    @property
    def name(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params.items())

    def to_dict(self) -> dict[str, Any]:
        return dict(self.params)


class ModelFamily(Protocol):
    """Fits a model per candidate on ``train`` and scores ``assess`` (higher = more suspicious).

    One call per fold receives all candidates, so a family can share work between them (one
    boosting run serves every number of rounds).
    """

    name: str
    features: Sequence[str]

    def candidates(self) -> list[Candidate]: ...

    def fit_predict(
        self, train: pd.DataFrame, assess: pd.DataFrame, candidates: Sequence[Candidate]
    ) -> list[np.ndarray]: ...


ROUNDS: Final = "num_boost_round"


@dataclasses.dataclass
class LightGBMFamily:
    """LightGBM through :func:`vigil.training.train_lightgbm`; ``num_boost_round`` is a
    hyperparameter (no early stopping: the protocol leaves no labelled data beside the training
    week), and candidates differing only in it share one boosting run."""

    name: str
    features: Sequence[str]
    grid: Sequence[Mapping[str, Any]]
    num_threads: int = 1

    def candidates(self) -> list[Candidate]:
        return [Candidate(dict(g)) for g in self.grid]

    def fit_predict(
        self, train: pd.DataFrame, assess: pd.DataFrame, candidates: Sequence[Candidate]
    ) -> list[np.ndarray]:
        groups: dict[tuple[tuple[str, Any], ...], list[int]] = {}
        for i, cand in enumerate(candidates):
            key = tuple(sorted((k, v) for k, v in cand.params.items() if k != ROUNDS))
            groups.setdefault(key, []).append(i)
        out: list[np.ndarray] = [np.empty(0)] * len(candidates)
        x_assess = assess[list(self.features)].to_numpy(np.float64)
        for key, members in groups.items():
            rounds = [int(candidates[i].params[ROUNDS]) for i in members]
            model = train_lightgbm(
                train,
                None,
                params={**dict(key), "num_threads": self.num_threads},
                num_boost_round=max(rounds),
                feature_names=self.features,
            )
            for i, scores in zip(
                members, raw_scores_at(model.booster, x_assess, rounds), strict=True
            ):
                out[i] = scores
        return out


def raw_scores_at(booster: lgb.Booster, x: np.ndarray, rounds: Sequence[int]) -> list[np.ndarray]:
    """Raw scores (log-odds) of the first ``r`` trees for each ``r`` in ``rounds``, walking the
    trees once. The metrics only rank scores, so log-odds rank exactly like probabilities.
    A booster that stopped growing early (nothing left to split) serves larger ``r`` with all
    of its trees, as LightGBM's own ``predict`` does."""
    n_trees = booster.current_iteration()
    total = np.zeros(x.shape[0])
    at: dict[int, np.ndarray] = {}
    done = 0
    for r in sorted(set(rounds)):
        upto = min(r, n_trees)
        if upto > done:
            total = total + np.asarray(
                booster.predict(x, start_iteration=done, num_iteration=upto - done, raw_score=True)
            )
            done = upto
        at[r] = total
    return [at[r] for r in rounds]


@dataclasses.dataclass
class LogisticRegressionFamily:
    """The book's logistic regression (standard scaling, then scikit-learn's defaults)."""

    name: str
    features: Sequence[str]
    grid: Sequence[Mapping[str, Any]] = ({"C": 0.1}, {"C": 1.0}, {"C": 10.0}, {"C": 100.0})

    def candidates(self) -> list[Candidate]:
        return [Candidate(dict(g)) for g in self.grid]

    def fit_predict(
        self, train: pd.DataFrame, assess: pd.DataFrame, candidates: Sequence[Candidate]
    ) -> list[np.ndarray]:
        x_train = train[list(self.features)].to_numpy(np.float64)
        x_assess = assess[list(self.features)].to_numpy(np.float64)
        out = []
        for cand in candidates:
            model = make_pipeline(
                StandardScaler(), LogisticRegression(random_state=0, **dict(cand.params))
            )
            model.fit(x_train, train[c.TX_FRAUD].to_numpy())
            out.append(np.asarray(model.predict_proba(x_assess)[:, 1], dtype=np.float64))
        return out


def lightgbm_grid(quick: bool = False) -> list[dict[str, Any]]:
    """The hyperparameter grid searched on the validation folds: tree size (with a leaf size that
    grows with it) times number of rounds at learning rate 0.05. Candidates that differ only in
    rounds share one boosting run, so the grid costs 4 fits per fold."""
    if quick:
        return [
            {"learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 20, ROUNDS: r}
            for r in (25, 50)
        ]
    grid = []
    for leaves, min_child, rounds in (
        (3, 20, (100, 200, 400, 800)),
        (7, 50, (50, 100, 200, 400)),
        (15, 100, (50, 100, 200, 400)),
        (31, 100, (50, 100, 200, 400)),
    ):
        grid += [
            {"learning_rate": 0.05, "num_leaves": leaves, "min_child_samples": min_child, ROUNDS: r}
            for r in rounds
        ]
    return grid


def default_families(
    spec: FeatureSpec = DEFAULT_SPEC,
    *,
    quick: bool = False,
    baseline: bool = True,
    reference: bool = True,
    num_threads: int = 1,
) -> list[ModelFamily]:
    """Vigil's model on all features (the headline, first), on the book's 15 only, and the
    book's logistic regression."""
    grid = lightgbm_grid(quick)
    families: list[ModelFamily] = [
        LightGBMFamily(
            f"Vigil LightGBM, all {len(spec.features)} features", spec.features, grid, num_threads
        )
    ]
    if baseline:
        families.append(
            LightGBMFamily(
                f"Vigil LightGBM, {len(spec.baseline_features)} handbook features",
                spec.baseline_features,
                grid,
                num_threads,
            )
        )
    if reference:
        families.append(
            LogisticRegressionFamily(
                "Handbook logistic regression on this data",
                spec.baseline_features,
                ({"C": 1.0},) if quick else LogisticRegressionFamily.grid,
            )
        )
    return families
