"""The handbook benchmark: Vigil's fraud model under the protocol of Le Borgne et al.

"Reproducible Machine Learning for Credit Card Fraud Detection" evaluates models on its simulated
transactions with a fixed protocol (``get_train_test_set``, ``prequentialSplit``,
``model_selection_wrapper`` and ``get_summary_performances`` of its ``shared_functions``):

* **One split** (chapter 3): train on 7 days from the *anchor* (2018-07-25 in the book), wait a
  7-day delay (labels are not known yet), test on the next 7 days. Test transactions of cards
  already known to be compromised are dropped (:func:`~vigil.evaluation.metrics.
  drop_known_compromised`).
* **Prequential folds** (chapter 5): fold ``i`` is the split whose training starts ``7 i`` days
  before a fold start. The 4 *validation* folds start at ``anchor - (delay + test)`` = anchor
  − 14 days, the 4 *test* folds at ``anchor + (n_folds − 1) · test`` = anchor + 21 days
  (2018-08-15). Every candidate configuration is scored on the validation folds; for each metric
  the configuration with the best mean validation score is chosen, and the test figure of that
  metric is its mean (± population standard deviation, as scikit-learn's ``GridSearchCV``
  reports) over the 4 test folds. The test folds never take part in the choice.

Days are calendar days of ``TX_DATETIME``: the book selects training rows by ``TX_DATETIME`` and
test rows by ``TX_TIME_DAYS``, which counts calendar days from its first day, so both agree on
data in the handbook schema. Features are computed once over the whole history with
:func:`feature_store.transforms.batch_features` (they only look back in time), then split.

Chapter 3 trains one model: its configuration is chosen on the same validation folds (the book's
chapter 5 defines them from the same anchor), by average precision unless told otherwise.

Dates default to the book's; on data that does not cover them the anchor is placed 115 days
after the data's first day (where the book's anchor sits in its data) or as late as the data
allows, and data too short for the protocol is a :class:`~vigil.errors.DataError`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any, Final, Literal, Protocol, cast, get_args

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from feature_store.transforms import DEFAULT_SPEC, FeatureSpec, batch_features
from vigil import contract as c
from vigil.errors import DataError
from vigil.evaluation.metrics import (
    DEFAULT_K,
    METRIC_LABELS,
    METRICS,
    MetricName,
    drop_known_compromised,
    evaluate,
)
from vigil.training import train_lightgbm

log = logging.getLogger(__name__)

ProtocolName = Literal["ch3", "ch5"]
PROTOCOLS: Final[tuple[ProtocolName, ...]] = get_args(ProtocolName)
#: How a configuration is chosen on the validation folds: one per metric (the book's
#: ``get_summary_performances``), or one for all three by the named metric.
Selection = Literal["per-metric", "auc_roc", "average_precision", "card_precision_at_100"]
SELECTIONS: Final[tuple[Selection, ...]] = get_args(Selection)
FoldKind = Literal["validation", "test"]

#: The book's data starts here, and its anchor (start of chapter 3's training week) is 115 days
#: later.
HANDBOOK_DATA_START: Final = date(2018, 4, 1)
HANDBOOK_ANCHOR: Final = date(2018, 7, 25)
TRAIN_DAYS: Final = 7
DELAY_DAYS: Final = c.LABEL_DELAY_DAYS
TEST_DAYS: Final = 7
N_FOLDS: Final = 4
#: Column added to the feature frame: calendar days since the data's first day.
DAY: Final = "PROTOCOL_DAY"
SCORE: Final = "score"


# --------------------------------------------------------------------------- published results


@dataclasses.dataclass(frozen=True)
class Published:
    """A figure from the book: (low, high) per metric, equal when the book gives one value."""

    model: str
    auc_roc: tuple[float, float]
    average_precision: tuple[float, float]
    card_precision_at_100: tuple[float, float]

    def best(self, metric: MetricName) -> float:
        return cast(tuple[float, float], getattr(self, metric))[1]

    def text(self, metric: MetricName) -> str:
        low, high = cast(tuple[float, float], getattr(self, metric))
        return f"{high:.3f}" if low == high else f"{low:.3f}–{high:.3f}"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, **{m: list(getattr(self, m)) for m in METRICS}}


def _one(v: float) -> tuple[float, float]:
    return (v, v)


#: The book's results on its simulated data (docs/DESIGN.md, "the anchor to beat").
PUBLISHED: Final[dict[ProtocolName, tuple[Published, ...]]] = {
    "ch3": (
        Published("Logistic regression", _one(0.871), _one(0.606), _one(0.291)),
        Published("Random forest", _one(0.867), _one(0.658), _one(0.287)),
        Published("XGBoost", _one(0.862), _one(0.639), _one(0.273)),
    ),
    "ch5": (
        Published("XGBoost", (0.869, 0.872), (0.687, 0.694), _one(0.303)),
        Published("Random forest", _one(0.870), _one(0.678), _one(0.299)),
        Published("Balanced bagging", _one(0.879), _one(0.680), _one(0.305)),
    ),
}


def best_published(protocol: ProtocolName) -> dict[MetricName, float]:
    """The best published figure of each metric (the target to beat)."""
    return {m: max(p.best(m) for p in PUBLISHED[protocol]) for m in METRICS}


# --------------------------------------------------------------------------- dates and folds


@dataclasses.dataclass(frozen=True)
class Fold:
    """One train / delay / test split; ``*_end`` dates are exclusive."""

    kind: FoldKind
    index: int
    train_start: date
    train_days: int = TRAIN_DAYS
    delay_days: int = DELAY_DAYS
    test_days: int = TEST_DAYS

    @property
    def train_end(self) -> date:
        return self.train_start + timedelta(days=self.train_days)

    @property
    def test_start(self) -> date:
        return self.train_end + timedelta(days=self.delay_days)

    @property
    def test_end(self) -> date:
        return self.test_start + timedelta(days=self.test_days)

    @property
    def name(self) -> str:
        return f"{self.kind} fold {self.index}"

    def to_dict(self) -> dict[str, Any]:
        last = timedelta(days=1)
        return {
            "kind": self.kind,
            "index": self.index,
            "train": [self.train_start.isoformat(), (self.train_end - last).isoformat()],
            "test": [self.test_start.isoformat(), (self.test_end - last).isoformat()],
        }


def prequential_folds(
    start: date,
    kind: FoldKind,
    n_folds: int = N_FOLDS,
    *,
    train_days: int = TRAIN_DAYS,
    delay_days: int = DELAY_DAYS,
    test_days: int = TEST_DAYS,
) -> list[Fold]:
    """The book's ``prequentialSplit``: fold ``i`` trains from ``start - i * test_days``."""
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    return [
        Fold(kind, i, start - timedelta(days=i * test_days), train_days, delay_days, test_days)
        for i in range(n_folds)
    ]


@dataclasses.dataclass(frozen=True)
class ProtocolPlan:
    """The folds of one protocol run and where their dates came from."""

    protocol: ProtocolName
    #: The book's ``start_date_training`` (2018-07-25): chapter 3's training start.
    anchor: date
    #: "handbook", "--start" or "relative to the data"
    dates_source: str
    validation_folds: tuple[Fold, ...]
    test_folds: tuple[Fold, ...]

    @property
    def folds(self) -> tuple[Fold, ...]:
        return self.validation_folds + self.test_folds

    @property
    def first_day(self) -> date:
        return min(f.train_start for f in self.folds)

    @property
    def last_day(self) -> date:
        return max(f.test_end for f in self.folds) - timedelta(days=1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "anchor": self.anchor.isoformat(),
            "dates_source": self.dates_source,
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "validation_folds": [f.to_dict() for f in self.validation_folds],
            "test_folds": [f.to_dict() for f in self.test_folds],
        }


def folds_for(protocol: ProtocolName, anchor: date) -> tuple[tuple[Fold, ...], tuple[Fold, ...]]:
    """(validation folds, test folds) of ``protocol`` anchored at ``anchor``."""
    validation = prequential_folds(anchor - timedelta(days=DELAY_DAYS + TEST_DAYS), "validation")
    if protocol == "ch3":
        test = [Fold("test", 0, anchor)]
    elif protocol == "ch5":
        test = prequential_folds(anchor + timedelta(days=(N_FOLDS - 1) * TEST_DAYS), "test")
    else:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return tuple(validation), tuple(test)


def _span(protocol: ProtocolName, anchor: date) -> tuple[date, date]:
    validation, test = folds_for(protocol, anchor)
    folds = validation + test
    return (
        min(f.train_start for f in folds),
        max(f.test_end for f in folds) - timedelta(days=1),
    )


def plan_protocol(
    protocol: ProtocolName,
    data_first_day: date,
    data_last_day: date,
    start: date | None = None,
    *,
    warmup_days: int = 0,
) -> ProtocolPlan:
    """Place ``protocol`` on data covering ``data_first_day`` .. ``data_last_day``.

    ``start`` (the anchor) when given; else the book's anchor when the data covers the folds it
    implies; else 115 days after the data's first day, or the latest anchor the data allows when
    it ends earlier. ``warmup_days`` (the feature history the earliest training day should see)
    only triggers a warning when not available.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    lo0, hi0 = _span(protocol, HANDBOOK_ANCHOR)
    before, after = (HANDBOOK_ANCHOR - lo0).days, (hi0 - HANDBOOK_ANCHOR).days
    needed = before + after + 1
    available = (data_last_day - data_first_day).days + 1

    def covered(anchor: date) -> bool:
        lo, hi = _span(protocol, anchor)
        return data_first_day <= lo and hi <= data_last_day

    if start is not None:
        anchor, source = start, "--start"
        if not covered(anchor):
            lo, hi = _span(protocol, anchor)
            raise DataError(
                f"protocol {protocol} anchored at {anchor} needs transactions from {lo} to {hi}, "
                f"but the data covers {data_first_day} to {data_last_day}; choose a start "
                f"between {data_first_day + timedelta(days=before)} and "
                f"{data_last_day - timedelta(days=after)}"
            )
    elif covered(HANDBOOK_ANCHOR):
        anchor, source = HANDBOOK_ANCHOR, "handbook"
    else:
        if available < needed:
            raise DataError(
                f"protocol {protocol} needs {needed} consecutive days of transactions "
                f"({before} before the anchor for the validation folds, {after} from it), but "
                f"the data covers {available} day(s), {data_first_day} to {data_last_day}"
            )
        offset = (HANDBOOK_ANCHOR - HANDBOOK_DATA_START).days
        anchor = min(data_first_day + timedelta(days=offset), data_last_day - timedelta(days=after))
        source = "relative to the data"
    if (anchor - data_first_day).days < before + warmup_days:
        log.warning(
            "the earliest training day (%s) has %d day(s) of history before it; the features' "
            "windows need %d to be complete",
            anchor - timedelta(days=before),
            (anchor - data_first_day).days - before,
            warmup_days,
        )
    validation, test = folds_for(protocol, anchor)
    return ProtocolPlan(protocol, anchor, source, validation, test)


def feature_warmup_days(spec: FeatureSpec = DEFAULT_SPEC) -> int:
    """Days of history the features need to see full windows (terminal windows lag the delay)."""
    return max(
        *spec.customer_windows_days,
        *(n + spec.label_delay_days for n in spec.terminal_windows_days),
    )


# --------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class DataSummary:
    transactions: int
    frauds: int
    customers: int
    terminals: int
    first_day: date
    last_day: date
    feature_seconds: float

    @property
    def days(self) -> int:
        return (self.last_day - self.first_day).days + 1

    @property
    def fraud_rate(self) -> float:
        return self.frauds / self.transactions if self.transactions else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions,
            "frauds": self.frauds,
            "fraud_rate": round(self.fraud_rate, 6),
            "customers": self.customers,
            "terminals": self.terminals,
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "days": self.days,
            "feature_seconds": round(self.feature_seconds, 2),
        }


@dataclasses.dataclass(frozen=True)
class BenchmarkData:
    """Features of every transaction with its protocol day, and a summary of the data."""

    frame: pd.DataFrame
    summary: DataSummary

    def day_of(self, d: date) -> int:
        return (d - self.summary.first_day).days


def prepare(transactions: pd.DataFrame, spec: FeatureSpec = DEFAULT_SPEC) -> BenchmarkData:
    """Features over the whole history (one pass of ``batch_features``) plus :data:`DAY`."""
    if len(transactions) == 0:
        raise DataError("no transactions")
    t0 = time.perf_counter()
    frame = batch_features(transactions, spec)
    seconds = time.perf_counter() - t0
    calendar = transactions[c.TX_DATETIME].dt.normalize()
    first = calendar.min()
    day = ((calendar - first) // pd.Timedelta(days=1)).to_numpy(np.int64)
    frame[DAY] = day
    if c.TX_TIME_DAYS in transactions.columns:
        offsets = transactions[c.TX_TIME_DAYS].to_numpy() - day
        if len(np.unique(offsets)) > 1:
            log.warning(
                "%s does not count calendar days of %s; the protocol splits on %s",
                c.TX_TIME_DAYS,
                c.TX_DATETIME,
                c.TX_DATETIME,
            )
    summary = DataSummary(
        transactions=len(frame),
        frauds=int(frame[c.TX_FRAUD].sum()),
        customers=int(transactions[c.CUSTOMER_ID].nunique()),
        terminals=int(transactions[c.TERMINAL_ID].nunique()),
        first_day=first.date(),
        last_day=calendar.max().date(),
        feature_seconds=seconds,
    )
    return BenchmarkData(frame, summary)


@dataclasses.dataclass(frozen=True)
class FoldSets:
    """Training set and (known-compromised-filtered) test set of one fold."""

    fold: Fold
    train: pd.DataFrame
    test: pd.DataFrame
    #: Test transactions dropped because their card was known to be compromised.
    n_dropped: int


def fold_sets(data: BenchmarkData, fold: Fold) -> FoldSets:
    """The book's ``get_train_test_set`` for ``fold`` on :func:`prepare`'d data."""
    day = data.frame[DAY].to_numpy()
    train_start, train_end = data.day_of(fold.train_start), data.day_of(fold.train_end)
    test_start, test_end = data.day_of(fold.test_start), data.day_of(fold.test_end)
    train = data.frame.loc[(day >= train_start) & (day < train_end)]
    # Frauds are "known" from the first training day on, through the delay period.
    history = data.frame.loc[(day >= train_start) & (day < test_start)]
    test_all = data.frame.loc[(day >= test_start) & (day < test_end)]
    test = drop_known_compromised(test_all, history, fold.delay_days, day_col=DAY)
    for what, frame in (("training", train), ("test", test)):
        if frame[c.TX_FRAUD].nunique() < 2:
            raise DataError(
                f"{fold.name}: the {what} set ({len(frame)} transactions) needs both frauds "
                "and genuine transactions"
            )
    return FoldSets(fold, train, test, len(test_all) - len(test))


# --------------------------------------------------------------------------- models


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


# --------------------------------------------------------------------------- scoring folds


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


# --------------------------------------------------------------------------- the benchmark


@dataclasses.dataclass(frozen=True)
class BenchmarkResult:
    plan: ProtocolPlan
    data: DataSummary
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
    plan = plan_protocol(
        protocol,
        data.summary.first_day,
        data.summary.last_day,
        start,
        warmup_days=feature_warmup_days(),
    )
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


# --------------------------------------------------------------------------- the table


def _pm(mean: float, std: float, folds: int) -> str:
    return f"{mean:.3f}" if folds == 1 else f"{mean:.3f} ± {std:.3f}"


def format_table(result: BenchmarkResult) -> str:
    """Vigil's figures beside the published ones, as a fixed-width text table."""
    protocol = result.protocol
    n_test = len(result.plan.test_folds)
    s = result.data
    head = (
        f"Handbook benchmark, {'chapter 3 (one split)' if protocol == 'ch3' else 'chapter 5'}"
        + (f" ({n_test} prequential test folds: mean ± std)" if protocol == "ch5" else "")
    )
    selection = result.vigil.selection
    chosen_by = "per metric" if selection == "per-metric" else f"by {METRIC_LABELS[selection]}"
    test_days = ", ".join(
        f"{f.test_start} .. {f.test_end - timedelta(days=1)}" for f in result.plan.test_folds
    )
    lines = [
        head,
        f"data: {s.transactions:,} transactions, {s.frauds:,} frauds ({s.fraud_rate:.2%}), "
        f"{s.first_day} .. {s.last_day}; anchor {result.plan.anchor} ({result.plan.dates_source})",
        f"test days: {test_days}",
        f"hyperparameters chosen on {len(result.plan.validation_folds)} validation folds, "
        f"{chosen_by}",
        "",
    ]
    width = max(44, *(len(m.name) + 2 for m in result.models))
    col = 17
    header = "model".ljust(width) + "".join(METRIC_LABELS[m].ljust(col) for m in METRICS)
    lines += [header, "-" * len(header)]
    for model in result.models:
        lines.append(
            model.name.ljust(width)
            + "".join(_pm(model.mean(m), model.std(m), n_test).ljust(col) for m in METRICS)
        )
    lines.append("published (the book's data):")
    for p in PUBLISHED[protocol]:
        lines.append(("  " + p.model).ljust(width) + "".join(p.text(m).ljust(col) for m in METRICS))
    best = best_published(protocol)
    lines.append(
        "best published".ljust(width) + "".join(f"{best[m]:.3f}".ljust(col) for m in METRICS)
    )
    targets = result.targets()
    lines.append(
        "Vigil beats it".ljust(width)
        + "".join(("yes" if targets[m]["met"] else "NO").ljust(col) for m in METRICS)
    )
    lines.append("")
    lines.append(
        "CP@100 ceiling on this data (fraudulent cards per test day / 100): "
        + ", ".join(f"{v:.3f}" for v in result.cp_ceiling)
    )
    for model in result.models:
        names = {m: model.test[m].candidate.name for m in METRICS}
        if len(set(names.values())) == 1:
            lines.append(f"{model.name}: {next(iter(names.values()))}")
        else:
            lines.append(f"{model.name}:")
            lines += [f"  {METRIC_LABELS[m]}: {names[m]}" for m in METRICS]
    lines.append(f"{result.seconds:.0f} s (features {s.feature_seconds:.0f} s extra)")
    return "\n".join(line.rstrip() for line in lines)
