"""Running and selection: every candidate scored on every fold, the configuration chosen on the
validation folds only, the chosen ones scored on the test folds (:func:`run_benchmark`)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any, Final, Literal, cast, get_args

import numpy as np

from vigil import contract as c
from vigil.evaluation.metrics import DEFAULT_K, METRICS, MetricName, evaluate
from vigil_cli.handbook.data import DAY, BenchmarkData, FoldSets, PreparedData, fold_sets
from vigil_cli.handbook.families import Candidate, ModelFamily, default_families
from vigil_cli.handbook.protocol import (
    Fold,
    ProtocolName,
    ProtocolPlan,
    feature_warmup_days,
    plan_protocol,
)
from vigil_cli.handbook.published import PUBLISHED, best_published

log = logging.getLogger(__name__)

#: How a configuration is chosen on the validation folds: one per metric (the book's
#: ``get_summary_performances``), or one for all three by the named metric.
Selection = Literal["per-metric", "auc_roc", "average_precision", "card_precision_at_100"]
SELECTIONS: Final[tuple[Selection, ...]] = get_args(Selection)
SCORE: Final = "score"


@dataclasses.dataclass(frozen=True)
class FoldResult:
    """The three metrics of one candidate on one fold."""

    fold: Fold
    auc_roc: float
    average_precision: float
    card_precision_at_100: float
    n_train: int
    n_train_frauds: int
    n_test: int
    n_test_frauds: int
    n_dropped_known: int

    def metric(self, name: MetricName) -> float:
        return cast(float, getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["fold"] = self.fold.to_dict()
        return out


@dataclasses.dataclass(frozen=True)
class CandidateResult:
    """A candidate's results over a set of folds."""

    candidate: Candidate
    folds: tuple[FoldResult, ...]

    def mean(self, metric: MetricName) -> float:
        return float(np.mean([f.metric(metric) for f in self.folds]))

    def std(self, metric: MetricName) -> float:
        """Population standard deviation (``ddof=0``), as ``GridSearchCV`` and the book."""
        return float(np.std([f.metric(metric) for f in self.folds]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.candidate.to_dict(),
            **{m: {"mean": self.mean(m), "std": self.std(m)} for m in METRICS},
            "folds": [f.to_dict() for f in self.folds],
        }


FoldProgress = Callable[[str], None]


def _log_progress(message: str) -> None:
    log.info("%s", message)


def score_folds(
    family: ModelFamily,
    candidates: Sequence[Candidate],
    sets: Sequence[FoldSets],
    *,
    progress: FoldProgress = _log_progress,
) -> tuple[list[CandidateResult], float]:
    """Fit and score every candidate on every fold; also the seconds spent fitting."""
    per_candidate: list[list[FoldResult]] = [[] for _ in candidates]
    seconds = 0.0
    for fs in sets:
        t0 = time.perf_counter()
        scores = family.fit_predict(fs.train, fs.test, candidates)
        elapsed = time.perf_counter() - t0
        seconds += elapsed
        for i, s in enumerate(scores):
            frame = fs.test[[DAY, c.CUSTOMER_ID, c.TX_FRAUD]].assign(**{SCORE: s})
            m = evaluate(frame, score_col=SCORE, day_col=DAY, k=DEFAULT_K)
            per_candidate[i].append(
                FoldResult(
                    fold=fs.fold,
                    auc_roc=m.auc_roc,
                    average_precision=m.average_precision,
                    card_precision_at_100=m.card_precision_at_k,
                    n_train=len(fs.train),
                    n_train_frauds=int(fs.train[c.TX_FRAUD].sum()),
                    n_test=m.n_transactions,
                    n_test_frauds=m.n_frauds,
                    n_dropped_known=fs.n_dropped,
                )
            )
        progress(
            f"{family.name}: {fs.fold.name} ({fs.fold.train_start} .. "
            f"{fs.fold.test_end - timedelta(days=1)}), {len(candidates)} candidate(s) "
            f"in {elapsed:.1f} s"
        )
    return [
        CandidateResult(cand, tuple(r)) for cand, r in zip(candidates, per_candidate, strict=True)
    ], seconds


def choose(
    results: Sequence[CandidateResult], selection: Selection
) -> dict[MetricName, CandidateResult]:
    """The chosen candidate for each metric: best mean validation score (first one on ties)."""
    if not results:
        raise ValueError("no candidates to choose from")
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    chosen: dict[MetricName, CandidateResult] = {}
    for metric in METRICS:
        by = metric if selection == "per-metric" else selection
        chosen[metric] = results[int(np.argmax([r.mean(by) for r in results]))]
    return chosen


@dataclasses.dataclass(frozen=True)
class ModelResult:
    """One model family under the protocol: validation grid, choices and test results."""

    name: str
    features: tuple[str, ...]
    selection: Selection
    validation: tuple[CandidateResult, ...]
    #: Test results of each chosen candidate, by metric (the same object when one is chosen
    #: for several metrics).
    test: Mapping[MetricName, CandidateResult]
    validation_seconds: float
    test_seconds: float

    def mean(self, metric: MetricName) -> float:
        return self.test[metric].mean(metric)

    def std(self, metric: MetricName) -> float:
        return self.test[metric].std(metric)

    def to_dict(self) -> dict[str, Any]:
        chosen = {m: self.test[m].candidate.to_dict() for m in METRICS}
        distinct: dict[str, CandidateResult] = {}
        for r in self.test.values():
            distinct.setdefault(r.candidate.name, r)
        return {
            "name": self.name,
            "features": list(self.features),
            "selection": self.selection,
            "chosen": chosen,
            "test": {m: {"mean": self.mean(m), "std": self.std(m)} for m in METRICS},
            "test_candidates": [r.to_dict() for r in distinct.values()],
            "validation": [r.to_dict() for r in self.validation],
            "validation_seconds": round(self.validation_seconds, 2),
            "test_seconds": round(self.test_seconds, 2),
        }


#: Validation results by (family name, features, candidates, folds): protocols anchored at the
#: same date share their validation folds (chapter 3 and chapter 5 in the book).
ValidationCache = dict[tuple[Any, ...], tuple[list[CandidateResult], float]]


def run_model(
    family: ModelFamily,
    validation_sets: Sequence[FoldSets],
    test_sets: Sequence[FoldSets],
    selection: Selection,
    *,
    progress: FoldProgress = _log_progress,
    cache: ValidationCache | None = None,
) -> ModelResult:
    """Choose on ``validation_sets`` only, then fit the chosen candidates on ``test_sets``."""
    candidates = family.candidates()
    key = (
        family.name,
        tuple(family.features),
        tuple(cand.name for cand in candidates),
        tuple(fs.fold for fs in validation_sets),
    )
    if cache is not None and key in cache:
        validation, v_seconds = cache[key]
        progress(f"{family.name}: validation results reused")
    else:
        validation, v_seconds = score_folds(family, candidates, validation_sets, progress=progress)
        if cache is not None:
            cache[key] = (validation, v_seconds)
    chosen = choose(validation, selection)
    distinct: dict[str, Candidate] = {}
    for r in chosen.values():
        distinct.setdefault(r.candidate.name, r.candidate)
    tested, t_seconds = score_folds(family, list(distinct.values()), test_sets, progress=progress)
    by_name = {r.candidate.name: r for r in tested}
    return ModelResult(
        name=family.name,
        features=tuple(family.features),
        selection=selection,
        validation=tuple(validation),
        test={m: by_name[chosen[m].candidate.name] for m in METRICS},
        validation_seconds=v_seconds,
        test_seconds=t_seconds,
    )




@dataclasses.dataclass(frozen=True)
class BenchmarkResult:
    plan: ProtocolPlan
    data: PreparedData
    models: tuple[ModelResult, ...]
    seconds: float
    #: Mean fraudulent cards per test day left after known-compromised removal, / 100: the
    #: highest CP@100 any model could reach, per test fold.
    cp_ceiling: tuple[float, ...]

    @property
    def protocol(self) -> ProtocolName:
        return self.plan.protocol

    @property
    def vigil(self) -> ModelResult:
        """The headline model (the first family: all of Vigil's features)."""
        return self.models[0]

    def targets(self) -> dict[MetricName, dict[str, Any]]:
        best = best_published(self.protocol)
        return {
            m: {
                "best_published": best[m],
                "vigil": round(self.vigil.mean(m), 4),
                "met": round(self.vigil.mean(m), 3) > best[m],
            }
            for m in METRICS
        }

    @property
    def targets_met(self) -> bool:
        return all(t["met"] for t in self.targets().values())

    def to_dict(self) -> dict[str, Any]:
        load1, load5, _ = os.getloadavg()
        return {
            "protocol": self.protocol,
            "plan": self.plan.to_dict(),
            "data": self.data.to_dict(),
            "metric_std": "population standard deviation over the test folds (ddof=0)",
            "models": [m.to_dict() for m in self.models],
            "published": [p.to_dict() for p in PUBLISHED[self.protocol]],
            "targets": self.targets(),
            "targets_met": self.targets_met,
            "cp_at_100_ceiling_per_test_fold": list(self.cp_ceiling),
            "seconds": round(self.seconds, 1),
            "machine": {"cpus": os.cpu_count(), "loadavg_1m_end": load1, "loadavg_5m_end": load5},
        }


def _cp_ceiling(fs: FoldSets) -> float:
    test = fs.test
    frauds = test.loc[test[c.TX_FRAUD] == 1]
    per_day = frauds.groupby(DAY)[c.CUSTOMER_ID].nunique()
    days = test[DAY].nunique()
    return float(np.minimum(per_day.to_numpy(), DEFAULT_K).sum() / DEFAULT_K / days)


def run_benchmark(
    data: BenchmarkData,
    protocol: ProtocolName,
    *,
    start: date | None = None,
    families: Iterable[ModelFamily] | None = None,
    selection: Selection | None = None,
    progress: FoldProgress = _log_progress,
    cache: ValidationCache | None = None,
) -> BenchmarkResult:
    """Run ``protocol`` on :func:`prepare`'d data for each model family.

    ``selection`` defaults to "per-metric" for ch5 (the book's) and "average_precision" for ch3
    (one model).
    """
    t0 = time.perf_counter()
    first_day, last_day = data.summary.transactions.span()
    plan = plan_protocol(protocol, first_day, last_day, start, warmup_days=feature_warmup_days())
    selection = selection or ("per-metric" if protocol == "ch5" else "average_precision")
    progress(
        f"protocol {protocol}: anchor {plan.anchor} ({plan.dates_source}), data "
        f"{plan.first_day} .. {plan.last_day}, selection {selection}"
    )
    validation_sets = [fold_sets(data, f) for f in plan.validation_folds]
    test_sets = [fold_sets(data, f) for f in plan.test_folds]
    models = tuple(
        run_model(family, validation_sets, test_sets, selection, progress=progress, cache=cache)
        for family in (families if families is not None else default_families())
    )
    ceiling = tuple(round(_cp_ceiling(fs), 4) for fs in test_sets)
    return BenchmarkResult(plan, data.summary, models, time.perf_counter() - t0, ceiling)
