"""Metrics of the handbook protocol: AUC ROC, average precision and Card Precision@k.

The definitions follow Le Borgne et al., "Reproducible Machine Learning for Credit Card Fraud
Detection" (chapter 4, "Precision top-k metrics"; functions ``card_precision_top_k_day``,
``card_precision_top_k`` and ``get_train_test_set`` of its ``shared_functions``):

* **Card Precision@k** for one day: per card (customer), the maximum score and the maximum label
  over the day's transactions (a card is fraudulent that day when any of its transactions is);
  the k cards with the highest maximum score are the day's alerts; the precision is the number
  of fraudulent cards among them divided by **k** (also when the day has fewer than k cards, so a
  day with 40 cards can reach at most 0.4). Cards found fraudulent in the alerts of an earlier
  test day are removed from later days (they are blocked once detected). The metric is the
  mean over all days present in the input, days left with no cards counting as 0.
* **Known compromised cards** are removed from the test set before scoring: a test transaction
  on day ``t`` is dropped when its customer has a fraudulent transaction on a day
  ``<= t - delay - 1`` since the start of the training window.

Ties in the maximum score are broken by ascending customer id (the order in which the handbook's
``groupby`` hands cards to its sort); the handbook's own sort leaves the order of ties to
numpy's quicksort, which keeps that order for small days only.

Labels are 0/1 (bools accepted); scores are finite numbers, higher meaning more suspicious.
An alert is raised for a score ``>= threshold``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final, Literal, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from vigil import contract as c
from vigil.errors import DataError

#: Default name of the column holding model scores in evaluation frames.
SCORE_COLUMN = "score"
#: The handbook's k for Card Precision@k.
DEFAULT_K = 100
#: The handbook's three metrics, by the names :meth:`EvaluationMetrics.to_dict` gives them
#: (k = 100): what the gate compares, the registry records and reports show.
MetricName = Literal["auc_roc", "average_precision", "card_precision_at_100"]
METRICS: Final[tuple[MetricName, ...]] = get_args(MetricName)
METRIC_LABELS: Final[dict[MetricName, str]] = {
    "auc_roc": "AUC ROC",
    "average_precision": "AP",
    "card_precision_at_100": "CP@100",
}
#: Prefix of the same figures over *every* transaction of the test window, no card left out:
#: the population a served version's labelled traffic is (production cannot leave out cards it
#: has not yet learnt are compromised), hence the reference live performance is compared with.
#: The unprefixed figures stay the handbook protocol's (the gate's).
ALL_TRANSACTIONS: Final = "all_transactions_"

ThresholdTarget = Literal["f1", "precision@recall"]


# --------------------------------------------------------------------------- input checks


def as_labels(y_true: npt.ArrayLike, name: str = "y_true") -> np.ndarray:
    """``y_true`` as a 1-D int8 array of 0/1, or ValueError naming the problem."""
    arr = np.asarray(y_true)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.int8)
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        examples = ", ".join(map(str, pd.unique(arr[bad])[:5]))
        raise ValueError(f"{name} must hold 0/1 labels only; found {examples}")
    return arr.astype(np.int8)


def as_scores(scores: npt.ArrayLike, n: int, name: str = "scores") -> np.ndarray:
    """``scores`` as a 1-D float64 array of length ``n`` with finite values."""
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric: {e}") from e
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} values but the labels have {n}")
    n_bad = int((~np.isfinite(arr)).sum())
    if n_bad:
        raise ValueError(f"{name} must be finite; {n_bad} of {n} values are NaN or infinite")
    return arr


def require_both_classes(y: np.ndarray, metric: str) -> None:
    if y.size == 0:
        raise ValueError(f"{metric} is undefined on an empty set")
    n_pos = int(y.sum())
    if n_pos in (0, y.size):
        only = 1 if n_pos else 0
        raise ValueError(
            f"{metric} is undefined when y_true holds a single class: "
            f"all {y.size} labels are {only}; the evaluation set needs frauds and genuine "
            "transactions"
        )


def _require_columns(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    for col in columns:
        if col not in frame.columns:
            raise DataError(
                f"evaluation frame has no column {col!r} (columns: {list(frame.columns)})",
                column=col,
            )


# --------------------------------------------------------------------------- ranking metrics


def auc_roc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (ties between scores count one half, as in scikit-learn)."""
    y = as_labels(y_true)
    s = as_scores(scores, y.size)
    require_both_classes(y, "AUC ROC")
    return float(roc_auc_score(y, s))


def average_precision(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Average precision: ``sum_n (R_n - R_{n-1}) P_n`` over score thresholds (scikit-learn's
    step-wise definition, the one the handbook reports; not the interpolated PR AUC)."""
    y = as_labels(y_true)
    s = as_scores(scores, y.size)
    require_both_classes(y, "average precision")
    return float(average_precision_score(y, s))


# --------------------------------------------------------------------------- Card Precision@k


@dataclasses.dataclass(frozen=True)
class CardPrecisionAtK:
    """Card Precision@k of a multi-day test set."""

    k: int
    #: Mean of :attr:`per_day` (the handbook's CP@k).
    mean: float
    #: The days, ascending, as they appear in the day column.
    days: tuple[Any, ...]
    #: CP@k of each day in :attr:`days`.
    per_day: tuple[float, ...]
    #: Fraudulent cards each day after removing earlier detections (the best any model can find;
    #: ``min(n, k) / k`` is the day's highest reachable CP@k).
    n_fraudulent_cards_per_day: tuple[int, ...]
    #: Fraudulent cards among each day's k alerts.
    n_detected_per_day: tuple[int, ...]


def card_precision_at_k_arrays(
    days: npt.ArrayLike,
    customers: npt.ArrayLike,
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    k: int = DEFAULT_K,
    *,
    exclude_known: bool = True,
) -> CardPrecisionAtK:
    """Card Precision@k from aligned per-transaction arrays (see the module docstring).

    Vectorized: one sort of the (day, card) maxima; the only Python loop runs over days, which
    carries the cards detected so far from one day to the next when ``exclude_known``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    y = as_labels(labels, "labels")
    s = as_scores(scores, y.size)
    day_arr = np.asarray(days)
    cust_arr = np.asarray(customers)
    for name, arr in (("days", day_arr), ("customers", cust_arr)):
        if arr.ndim != 1 or arr.shape[0] != y.size:
            raise ValueError(f"{name} must be one-dimensional with {y.size} values")
        if pd.isna(arr).any():
            raise ValueError(f"{name} must not contain missing values")
    if y.size == 0:
        raise ValueError("Card Precision@k is undefined on an empty set")

    day_codes, day_values = pd.factorize(day_arr, sort=True)
    card_codes, card_values = pd.factorize(cust_arr, sort=True)
    n_days, n_cards = len(day_values), len(card_values)

    # Maximum score and label per (day, card): sort by the combined key and reduce each run.
    key = day_codes.astype(np.int64) * n_cards + card_codes
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
    group_key = key_sorted[starts]
    group_score = np.maximum.reduceat(s[order], starts)
    group_label = np.maximum.reduceat(y[order], starts)
    group_day = group_key // n_cards
    group_card = group_key % n_cards

    # Within each day: highest score first, ties by ascending card id.
    rank = np.lexsort((group_card, -group_score, group_day))
    group_card, group_label = group_card[rank], group_label[rank]
    bounds = np.searchsorted(group_day[rank], np.arange(n_days + 1))

    known = np.zeros(n_cards, dtype=bool)
    per_day: list[float] = []
    n_fraud_cards: list[int] = []
    n_detected: list[int] = []
    for d in range(n_days):
        cards = group_card[bounds[d] : bounds[d + 1]]
        labs = group_label[bounds[d] : bounds[d + 1]]
        if exclude_known:
            keep = ~known[cards]
            cards, labs = cards[keep], labs[keep]
        top_cards, top_labels = cards[:k], labs[:k]
        detected = top_cards[top_labels == 1]
        per_day.append(detected.size / k)
        n_detected.append(int(detected.size))
        n_fraud_cards.append(int(labs.sum()))
        if exclude_known:
            known[detected] = True

    return CardPrecisionAtK(
        k=k,
        mean=float(np.mean(per_day)),
        days=tuple(pd.Index(day_values).tolist()),
        per_day=tuple(per_day),
        n_fraudulent_cards_per_day=tuple(n_fraud_cards),
        n_detected_per_day=tuple(n_detected),
    )


def card_precision_at_k(
    frame: pd.DataFrame,
    k: int = DEFAULT_K,
    *,
    day_col: str = c.TX_TIME_DAYS,
    customer_col: str = c.CUSTOMER_ID,
    label_col: str = c.TX_FRAUD,
    score_col: str = SCORE_COLUMN,
    exclude_known: bool = True,
) -> CardPrecisionAtK:
    """Card Precision@k of a scored test frame, one row per transaction.

    ``exclude_known`` removes cards detected (true positives among the alerts) on earlier days
    from later days, as the handbook's ``card_precision_top_k`` does by default.
    """
    _require_columns(frame, (day_col, customer_col, label_col, score_col))
    return card_precision_at_k_arrays(
        frame[day_col].to_numpy(),
        frame[customer_col].to_numpy(),
        frame[label_col].to_numpy(),
        frame[score_col].to_numpy(),
        k,
        exclude_known=exclude_known,
    )


# --------------------------------------------------------------------------- all metrics


@dataclasses.dataclass(frozen=True)
class EvaluationMetrics:
    """The handbook's three metrics of one scored test set, with its size."""

    auc_roc: float
    average_precision: float
    card_precision_at_k: float
    k: int
    card_precision_per_day: tuple[float, ...]
    n_transactions: int
    n_frauds: int
    n_days: int

    def to_dict(self) -> dict[str, float | int]:
        """Flat scalars for JSON and MLflow, e.g. ``card_precision_at_100`` for k = 100.

        The per-day values stay on the object (lists are not metrics).
        """
        return {
            "auc_roc": self.auc_roc,
            "average_precision": self.average_precision,
            f"card_precision_at_{self.k}": self.card_precision_at_k,
            "n_transactions": self.n_transactions,
            "n_frauds": self.n_frauds,
            "n_days": self.n_days,
        }


def evaluate(
    frame: pd.DataFrame,
    *,
    score_col: str = SCORE_COLUMN,
    k: int = DEFAULT_K,
    day_col: str = c.TX_TIME_DAYS,
    customer_col: str = c.CUSTOMER_ID,
    label_col: str = c.TX_FRAUD,
    exclude_known: bool = True,
) -> EvaluationMetrics:
    """AUC ROC, average precision and Card Precision@k of a scored test frame.

    Pass the frame after :func:`drop_known_compromised`, as the handbook does.
    """
    _require_columns(frame, (day_col, customer_col, label_col, score_col))
    y = as_labels(frame[label_col].to_numpy(), label_col)
    s = as_scores(frame[score_col].to_numpy(), y.size, score_col)
    cp = card_precision_at_k_arrays(
        frame[day_col].to_numpy(),
        frame[customer_col].to_numpy(),
        y,
        s,
        k,
        exclude_known=exclude_known,
    )
    return EvaluationMetrics(
        auc_roc=auc_roc(y, s),
        average_precision=average_precision(y, s),
        card_precision_at_k=cp.mean,
        k=cp.k,
        card_precision_per_day=cp.per_day,
        n_transactions=int(y.size),
        n_frauds=int(y.sum()),
        n_days=len(cp.days),
    )


# --------------------------------------------------------------------------- test-set rule


def drop_known_compromised(
    test: pd.DataFrame,
    history: pd.DataFrame,
    delay_days: int = c.LABEL_DELAY_DAYS,
    *,
    day_col: str = c.TX_TIME_DAYS,
    customer_col: str = c.CUSTOMER_ID,
    label_col: str = c.TX_FRAUD,
) -> pd.DataFrame:
    """The test rows whose card is not yet known to be compromised (handbook rule).

    The handbook's ``get_train_test_set`` starts from the customers with a fraud in the training
    window and, before test day ``j`` (0-based, on absolute day ``t = train_start + train_days +
    delay + j``), adds those with a fraud on absolute day ``train_start + train_days + j - 1``,
    that is ``t - delay - 1``. Hence: a test transaction on day ``t`` is dropped exactly when its
    customer has a fraudulent transaction on some day ``<= t - delay_days - 1`` in ``history``
    or in ``test`` itself (the handbook reads those days from the full transaction frame, which
    matters once the test window is longer than the delay + 1).

    ``history`` covers the first day of the training window through the delay period (the
    training set and the delay-period transactions; later days do no harm). It should start
    where the handbook's does, at the first training day: frauds before that are not "known" in
    the handbook's protocol. A history that stops before the delay period, so that frauds the
    rule needs are missing, is a ValueError. The result keeps ``test``'s row order and index.
    """
    if isinstance(delay_days, bool) or not isinstance(delay_days, (int, np.integer)):
        raise ValueError(f"delay_days must be an integer, got {delay_days!r}")
    if delay_days < 0:
        raise ValueError(f"delay_days must be >= 0, got {delay_days}")
    columns = (day_col, customer_col, label_col)
    _require_columns(test, columns)
    _require_columns(history, columns)

    if len(test) == 0:
        return test.copy()
    if len(history):
        history_end, test_start = history[day_col].max(), test[day_col].min()
        needed_until = test[day_col].max() - delay_days - 1
        if history_end + 1 < test_start and history_end < needed_until:
            raise ValueError(
                f"history ends on day {history_end} but the test set starts on day {test_start}: "
                f"with a {delay_days}-day delay, frauds up to day {needed_until} are known by the "
                "last test day; include the delay period in history"
            )

    frauds = pd.concat(
        [
            df.loc[as_labels(df[label_col].to_numpy(), label_col) == 1, [customer_col, day_col]]
            for df in (history, test)
        ],
        ignore_index=True,
    )
    first_fraud_day = frauds.groupby(customer_col, sort=False)[day_col].min()
    known_since = test[customer_col].map(first_fraud_day)
    # Customers without a fraud map to NaN, and NaN <= x is False: they are kept.
    dropped = (known_since <= test[day_col] - delay_days - 1).to_numpy(dtype=bool)
    return test.loc[~dropped].copy()


# --------------------------------------------------------------------------- threshold


@dataclasses.dataclass(frozen=True)
class ThresholdChoice:
    """A decision threshold and its operating point on the set it was chosen on."""

    threshold: float
    target: str
    precision: float
    recall: float
    f1: float
    #: Share of transactions with ``score >= threshold`` (the alert rate).
    alert_rate: float

    def to_dict(self) -> dict[str, float | str]:
        return dataclasses.asdict(self)


def choose_threshold(
    y_true: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    target: ThresholdTarget = "f1",
    min_recall: float = 0.5,
) -> ThresholdChoice:
    """Pick a decision threshold (alert when ``score >= threshold``) on a validation set.

    Candidates are the distinct scores, so every possible alert set is considered.

    * ``target="f1"``: the threshold with the highest F1 = 2PR / (P + R); among equal F1, the
      highest threshold (fewest alerts).
    * ``target="precision@recall"``: the highest precision among thresholds whose recall is at
      least ``min_recall`` (e.g. "catch half the frauds as cleanly as possible"); among equal
      precision, the higher recall (the lower threshold). The lowest score always reaches
      recall 1, so a choice always exists.

    Choose it on validation data, never on the test set the metrics are reported on.
    """
    y = as_labels(y_true)
    s = as_scores(scores, y.size)
    require_both_classes(y, "choosing a threshold")
    # precision[i], recall[i] belong to thresholds[i] (increasing); the final (1, 0) point
    # has no threshold.
    precision, recall, thresholds = precision_recall_curve(y, s)
    precision, recall = precision[:-1], recall[:-1]
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)

    if target == "f1":
        best = f1.max()
        i = int(np.flatnonzero(f1 == best)[-1])  # highest threshold among ties
    elif target == "precision@recall":
        if not 0.0 < min_recall <= 1.0:
            raise ValueError(f"min_recall must be in (0, 1], got {min_recall}")
        eligible = np.flatnonzero(recall >= min_recall)
        best = precision[eligible].max()
        i = int(eligible[precision[eligible] == best][0])  # lowest threshold: highest recall
    else:
        raise ValueError(f"target must be 'f1' or 'precision@recall', got {target!r}")

    threshold = float(thresholds[i])
    return ThresholdChoice(
        threshold=threshold,
        target=target,
        precision=float(precision[i]),
        recall=float(recall[i]),
        f1=float(f1[i]),
        alert_rate=float(np.mean(s >= threshold)),
    )


# --------------------------------------------------------------------------- decision cost


@dataclasses.dataclass(frozen=True)
class DecisionCost:
    """What a set of decisions cost once the labels arrived: every alert costs ``alert_cost``
    (a review), every missed fraud costs its amount (lost); caught frauds cost only their
    review."""

    total: float
    alerts: int
    missed_frauds: int
    missed_amount: float
    n_transactions: int

    @property
    def per_transaction(self) -> float:
        return self.total / self.n_transactions if self.n_transactions else 0.0


def decision_cost(
    y_true: npt.ArrayLike, alerts: npt.ArrayLike, amounts: npt.ArrayLike, *, alert_cost: float
) -> DecisionCost:
    """The realised cost of ``alerts`` (0/1 per transaction) given the labels and amounts."""
    y = as_labels(y_true)
    a = as_labels(alerts, "alerts")
    amount = np.asarray(amounts, dtype=np.float64)
    if a.size != y.size or amount.size != y.size:
        raise DataError(f"decision cost: {y.size} labels, {a.size} alerts, {amount.size} amounts")
    if alert_cost < 0:
        raise ValueError(f"alert_cost must be >= 0, got {alert_cost}")
    missed = (y == 1) & (a == 0)
    missed_amount = float(amount[missed].sum())
    n_alerts = int(a.sum())
    return DecisionCost(
        total=n_alerts * alert_cost + missed_amount,
        alerts=n_alerts,
        missed_frauds=int(missed.sum()),
        missed_amount=missed_amount,
        n_transactions=int(y.size),
    )
