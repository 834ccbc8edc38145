"""Step 4, evaluate: the candidate and the current champion on the same test rows, and the gate.

Handbook protocol: the test window starts ``delay`` days after the training data ends; test
transactions of cards already known to be compromised (a fraud on a day ``<= t - delay - 1``
since the start of the training window) are removed; metrics are AUC ROC, average precision
and Card Precision@100. The champion (loaded through the registry, sha256 checked) scores the
*same* rows with the *same* features, so the comparison is like for like.

The candidate's figures over every transaction of the test window (nothing removed), prefixed
``all_transactions_``, go into its metrics too: production sees every transaction, so the live
job (:mod:`monitoring.performance`) compares its labelled traffic with these, not with the
handbook's (cards known to be compromised make the easiest frauds; without them AP reads a few
hundredths lower).

The gate itself is :func:`components.gate.decide`.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd

from components.gate import check_metric, decide
from components.results import ChampionScores, Evaluation, Featurization
from components.runtime import say
from components.train import TrainingResult
from components.windows import DELAY, FIT, SPLIT_COLUMN, TEST, VALID
from vigil import contract as c
from vigil.errors import DataError, RegistryError
from vigil.evaluation.metrics import (
    ALL_TRANSACTIONS,
    METRICS,
    SCORE_COLUMN,
    drop_known_compromised,
    evaluate,
)
from vigil.evaluation.report import REPORT_HTML, write_evaluation_report
from vigil.registry import CHAMPION, MODEL_FILE, LoadedModel, Registry
from vigil.settings import Settings

STEP = "evaluate"
_RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"


def current_champion(registry: Registry, name: str) -> LoadedModel | None:
    """The champion of ``name`` (sha256 checked at load), or None when there is none yet."""
    card = registry.find(name, CHAMPION)
    return None if card is None else registry.load_model(name, version=card.version)


def evaluate_model(
    dataset: Path,
    model_dir: Path,
    report_dir: Path,
    *,
    data: Featurization,
    settings: Settings,
    comparison_metric: str = "average_precision",
    quality_floor: float = 0.0,
    min_improvement: float = 0.0,
    report_uri: str | None = None,
    html_copy: Path | None = None,
) -> Evaluation:
    """Score the test window with the candidate in ``model_dir`` and the current champion of
    ``settings.registry.model_name``; write the evaluation report into ``report_dir`` (and its
    self-contained ``report.html`` also to ``html_copy``, for a UI that shows one HTML file)."""
    check_metric(comparison_metric)
    frame = pd.read_parquet(dataset)
    history = frame.loc[frame[SPLIT_COLUMN].isin((FIT, VALID, DELAY))]
    test_all = frame.loc[frame[SPLIT_COLUMN] == TEST]
    delay_days = data.windows.delay_days
    test = drop_known_compromised(test_all, history, delay_days)
    dropped = len(test_all) - len(test)
    if test.empty or test[c.TX_FRAUD].nunique() < 2:
        raise DataError(
            f"after removing {dropped:,} transactions of cards known to be compromised, the test "
            f"window holds {len(test):,} transactions and {int(test[c.TX_FRAUD].sum()):,} frauds: "
            "it needs both; widen the test window"
        )
    say(STEP, f"test window {data.windows.test_start} .. {data.windows.test_end}: "
              f"{len(test):,} transactions, {int(test[c.TX_FRAUD].sum()):,} frauds "
              f"({dropped:,} of known compromised cards removed)")

    training = TrainingResult.read(model_dir)
    booster = lightgbm.Booster(model_str=(model_dir / MODEL_FILE).read_text(encoding="utf-8"))
    scores_all = _predict(booster, test_all, training.feature_names)
    scores = pd.Series(scores_all, index=test_all.index).loc[test.index].to_numpy()
    metrics = evaluate(test.assign(**{SCORE_COLUMN: scores}))
    # The population live performance measures: every transaction of the window.
    metrics_all = evaluate(test_all.assign(**{SCORE_COLUMN: scores_all}))
    candidate = {k: float(v) for k, v in metrics.to_dict().items()}
    candidate.update({ALL_TRANSACTIONS + k: float(v) for k, v in metrics_all.to_dict().items()})
    say(STEP, "candidate " + _format(candidate))
    say(STEP, "candidate over every test transaction (the live reference) "
              + _format(candidate, ALL_TRANSACTIONS))

    name = settings.registry.model_name
    loaded = current_champion(Registry.from_settings(settings), name)
    champion: ChampionScores | None = None
    if loaded is not None:
        names = list(loaded.card.feature_names)
        missing = [n for n in names if n not in test.columns]
        if missing:
            raise RegistryError(
                f"{loaded.card.label} needs features {missing} that {data.feature_service} does "
                "not provide: it cannot be compared on the same rows"
            )
        champion_scores = _predict(loaded.booster, test, names)
        champion_metrics = evaluate(test.assign(**{SCORE_COLUMN: champion_scores}))
        champion = ChampionScores(
            version=loaded.card.version,
            metrics={k: float(v) for k, v in champion_metrics.to_dict().items()},
        )
        say(STEP, f"champion version {champion.version} on the same rows " +
                  _format(champion.metrics))
    else:
        say(STEP, f"model {name!r} has no champion yet")

    gate = decide(candidate, champion, metric=comparison_metric, quality_floor=quality_floor,
                  min_improvement=min_improvement)
    say(STEP, f"decision: {gate.decision} ({gate.reason})")

    report_metrics: dict[str, float | int | str] = {
        **candidate,
        "threshold": training.threshold,
        "best_iteration": training.best_iteration,
        "dropped_known_compromised": dropped,
        **{f"validation_{k}": v for k, v in training.valid_metrics.items()},
    }
    if champion is not None:
        report_metrics["champion_version"] = champion.version
        for key in METRICS:
            report_metrics[f"champion_{key}"] = champion.metrics[key]
    report_metrics["decision"] = gate.decision
    report_metrics["reason"] = gate.reason
    write_evaluation_report(
        report_dir,
        test[c.TX_FRAUD].to_numpy(),
        scores,
        training.feature_importance,
        report_metrics,
        threshold=training.threshold,
    )
    if html_copy is not None:
        html_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report_dir / REPORT_HTML, html_copy)
    return Evaluation(
        data=data,
        metrics=candidate,
        champion=champion,
        comparison_metric=comparison_metric,
        quality_floor=quality_floor,
        min_improvement=min_improvement,
        decision=gate.decision,
        reason=gate.reason,
        threshold=training.threshold,
        test_rows=len(test),
        test_frauds=int(test[c.TX_FRAUD].sum()),
        dropped_known_compromised=dropped,
        report_uri=report_uri or str(report_dir),
    )


def ui_metrics(evaluation: Evaluation) -> dict[str, float]:
    """Scalars for KFP's metrics view: the candidate's, and the champion's prefixed."""
    out: dict[str, float] = {key: evaluation.metrics[key] for key in METRICS}
    out.update({ALL_TRANSACTIONS + k: evaluation.metrics[ALL_TRANSACTIONS + k] for k in METRICS
                if ALL_TRANSACTIONS + k in evaluation.metrics})
    if evaluation.champion is not None:
        out["champion_version"] = float(evaluation.champion.version)
        out.update({f"champion_{k}": evaluation.champion.metrics[k] for k in METRICS})
    out["registered"] = 0.0 if evaluation.decision == "rejected" else 1.0
    return out


def _predict(booster: lightgbm.Booster, frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    return np.asarray(booster.predict(frame[names].to_numpy(np.float64)), dtype=np.float64)


def _format(metrics: Mapping[str, float], prefix: str = "") -> str:
    return ", ".join(f"{k} {metrics[prefix + k]:.4f}" for k in METRICS)
