"""Metrics of the handbook protocol, checked against hand-computed values and against
straightforward re-statements of the handbook's loops (``card_precision_top_k`` and
``get_train_test_set`` of its ``shared_functions``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil import contract as c
from vigil.errors import DataError
from vigil.evaluation.metrics import (
    auc_roc,
    average_precision,
    card_precision_at_k,
    card_precision_at_k_arrays,
    choose_threshold,
    drop_known_compromised,
    evaluate,
)

pytestmark = pytest.mark.unit

DAY, CUST, FRAUD, SCORE = c.TX_TIME_DAYS, c.CUSTOMER_ID, c.TX_FRAUD, "score"


def _frame(rows: Sequence[tuple[int, int | str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[DAY, CUST, FRAUD, SCORE])


# --------------------------------------------------------------------------- references


def _reference_cp(frame: pd.DataFrame, k: int, exclude_known: bool = True) -> list[float]:
    """The handbook's card_precision_top_k, restated literally (one pandas pass per day, stable
    sort so that ties keep the groupby's ascending-customer order)."""
    detected: set = set()
    per_day = []
    for day in sorted(frame[DAY].unique()):
        df_day = frame.loc[frame[DAY] == day, [SCORE, CUST, FRAUD]]
        df_day = df_day[~df_day[CUST].isin(detected)]
        cards = df_day.groupby(CUST).max().sort_values(SCORE, ascending=False, kind="stable")
        top = cards.head(k)
        found = set(top.index[top[FRAUD] == 1])
        per_day.append(len(found) / k)
        if exclude_known:
            detected |= found
    return per_day


def _reference_split(
    full: pd.DataFrame, start: int, train_days: int, delay: int, test_days: int
) -> pd.DataFrame:
    """The handbook's get_train_test_set test set, restated literally (by day numbers)."""
    train = full[(full[DAY] >= start) & (full[DAY] < start + train_days)]
    known = set(train.loc[train[FRAUD] == 1, CUST])
    parts = []
    for j in range(test_days):
        day_df = full[full[DAY] == start + train_days + delay + j]
        delay_df = full[full[DAY] == start + train_days + j - 1]
        known |= set(delay_df.loc[delay_df[FRAUD] == 1, CUST])
        parts.append(day_df[~day_df[CUST].isin(known)])
    return pd.concat(parts).sort_index()


def _random_transactions(
    seed: int, n: int, n_days: int, n_cards: int, fraud_rate: float = 0.05
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            DAY: rng.integers(0, n_days, n),
            CUST: rng.integers(0, n_cards, n),
            FRAUD: (rng.random(n) < fraud_rate).astype(np.int64),
        }
    )
    # Coarse scores: many ties, so the tie rule is exercised.
    frame[SCORE] = np.round(rng.random(n) * 0.7 + 0.3 * frame[FRAUD], 1)
    return frame


# --------------------------------------------------------------------------- AUC ROC / AP


def test_auc_roc_hand_computed() -> None:
    # (pos, neg) pairs ranked right: 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes → 3/4.
    assert auc_roc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # One pair right (0.5 > 0.2) and one tie (0.5 = 0.5) counting 1/2 → 1.5 / 2.
    assert auc_roc([0, 0, 1], [0.2, 0.5, 0.5]) == pytest.approx(0.75)
    assert auc_roc(np.array([True, False]), [0.9, 0.1]) == pytest.approx(1.0)


def test_average_precision_hand_computed() -> None:
    # Ranked: 0.8(+) 0.4(-) 0.35(+) 0.1(-). Recall steps at 0.8 (P=1, R 0→1/2) and at 0.35
    # (P=2/3, R 1/2→1): AP = 1/2·1 + 1/2·2/3 = 5/6.
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)
    # Perfect ranking → 1; worst ranking of 1 fraud among 4 → P at its rank = 1/4.
    assert average_precision([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3]) == pytest.approx(1.0)
    assert average_precision([1, 0, 0, 0], [0.0, 0.1, 0.2, 0.3]) == pytest.approx(0.25)


@pytest.mark.parametrize("metric", [auc_roc, average_precision])
def test_single_class_is_a_clear_error(metric: Callable[..., float]) -> None:
    with pytest.raises(ValueError, match="single class: all 3 labels are 0"):
        metric([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="single class: all 2 labels are 1"):
        metric([1, 1], [0.1, 0.2])


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="0/1 labels only; found 2"):
        auc_roc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="3 values but the labels have 2"):
        auc_roc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="1 of 2 values are NaN"):
        average_precision([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="empty"):
        auc_roc([], [])


# --------------------------------------------------------------------------- Card Precision@k

# Day 10 (k = 2):
#   card 1: 0.9 genuine + 0.1 fraud  → max score 0.9, max label 1 (fraud card, flagged by a
#                                       genuine transaction: the handbook takes both maxima)
#   card 2: 0.6 genuine              → (0.6, 0)
#   card 3: 0.6 fraud                → (0.6, 1)   tie with card 2: card 2 first (lower id)
#   card 4: 0.3 fraud                → (0.3, 1)
#   ranking 1, 2, 3, 4 → top 2 = {1 (fraud), 2} → CP = 1/2; detected {1}; 3 fraud cards.
# Day 11:
#   card 1: 0.95 genuine → removed (detected on day 10)
#   card 3: 0.8 fraud, card 2: 0.78 fraud (alerted on day 10 as a false positive: not removed),
#   card 5: 0.7 + 0.75 genuine → (0.75, 0)
#   with removal: ranking 3, 2, 5 → top 2 = {3, 2}, both fraud → 2/2 = 1
#   without:      ranking 1, 3, 2, 5 → top 2 = {1 (genuine today), 3} → 1/2
# mean with removal (0.5 + 1) / 2 = 0.75; without (0.5 + 0.5) / 2 = 0.5
HAND_ROWS: list[tuple[int, int | str, int, float]] = [
    (10, 1, 0, 0.9),
    (10, 1, 1, 0.1),
    (10, 2, 0, 0.6),
    (10, 3, 1, 0.6),
    (10, 4, 1, 0.3),
    (11, 1, 0, 0.95),
    (11, 3, 1, 0.8),
    (11, 2, 1, 0.78),
    (11, 5, 0, 0.7),
    (11, 5, 0, 0.75),
]


def test_card_precision_hand_computed_with_removal_of_detected_cards() -> None:
    result = card_precision_at_k(_frame(HAND_ROWS), k=2)
    assert result.days == (10, 11)
    assert result.per_day == (0.5, 1.0)
    assert result.mean == pytest.approx(0.75)
    assert result.n_detected_per_day == (1, 2)
    # Day 10: cards 1, 3, 4 are fraudulent; day 11 after removing card 1: cards 3 and 2.
    assert result.n_fraudulent_cards_per_day == (3, 2)


def test_card_precision_hand_computed_without_removal() -> None:
    result = card_precision_at_k(_frame(HAND_ROWS), k=2, exclude_known=False)
    assert result.per_day == (0.5, 0.5)
    assert result.mean == pytest.approx(0.5)


def test_card_precision_ties_break_by_ascending_customer_id() -> None:
    # Two cards with the same max score 0.5, k = 1: the lower id ("a") is the alert.
    frame = _frame([(0, "b", 0, 0.5), (0, "a", 1, 0.5), (0, "c", 1, 0.1)])
    assert card_precision_at_k(frame, k=1).per_day == (1.0,)
    swapped = frame.assign(**{FRAUD: [1, 0, 1]})  # now "a" is genuine, "b" fraudulent
    assert card_precision_at_k(swapped, k=1).per_day == (0.0,)


def test_card_precision_divides_by_k_when_fewer_cards() -> None:
    # Day 0: 3 cards, 2 fraudulent → 2 / 100 = 0.02 (not 2/3).
    # Day 1: only card 7, already detected on day 0 → no cards left → 0 / 100 = 0.
    frame = _frame([(0, 7, 1, 0.9), (0, 8, 1, 0.2), (0, 9, 0, 0.5), (1, 7, 1, 0.9)])
    result = card_precision_at_k(frame, k=100)
    assert result.per_day == (0.02, 0.0)
    assert result.mean == pytest.approx(0.01)
    assert result.n_fraudulent_cards_per_day == (2, 0)


def test_card_precision_k_larger_than_alerts_counts_all_frauds_once_per_card() -> None:
    # Card 1 has three fraudulent transactions: one card, one hit. 1 / 2 = 0.5.
    frame = _frame([(3, 1, 1, 0.9), (3, 1, 1, 0.8), (3, 1, 1, 0.7), (3, 2, 0, 0.6)])
    assert card_precision_at_k(frame, k=2).per_day == (0.5,)


def test_card_precision_arrays_and_errors() -> None:
    frame = _frame(HAND_ROWS)
    same = card_precision_at_k_arrays(
        frame[DAY].to_numpy(), frame[CUST].to_numpy(), frame[FRAUD], frame[SCORE], 2
    )
    assert same == card_precision_at_k(frame, k=2)
    with pytest.raises(ValueError, match="positive integer"):
        card_precision_at_k(frame, k=0)
    with pytest.raises(DataError, match="no column 'prediction'"):
        card_precision_at_k(frame, score_col="prediction")
    with pytest.raises(ValueError, match="empty"):
        card_precision_at_k(frame.iloc[:0])
    with pytest.raises(ValueError, match="customers must not contain missing"):
        card_precision_at_k(frame.assign(**{CUST: [None, *frame[CUST].iloc[1:]]}))


def test_card_precision_matches_handbook_loop_on_random_data() -> None:
    for seed in range(5):
        frame = _random_transactions(seed, n=3_000, n_days=7, n_cards=400)
        for k in (1, 10, 100):
            for exclude in (True, False):
                got = card_precision_at_k(frame, k=k, exclude_known=exclude)
                assert list(got.per_day) == _reference_cp(frame, k, exclude), (seed, k, exclude)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 3),  # day
            st.integers(0, 12),  # customer
            st.integers(0, 1),  # label
            st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),  # coarse scores: ties
        ),
        min_size=1,
        max_size=80,
    ),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_card_precision_properties(
    rows: list[tuple[int, int, int, float]], k: int, seed: int
) -> None:
    frame = _frame(rows)
    result = card_precision_at_k(frame, k=k)
    assert all(0.0 <= p <= 1.0 for p in result.per_day)
    assert 0.0 <= result.mean <= 1.0
    assert list(result.per_day) == _reference_cp(frame, k)
    # Row order does not matter (ties included).
    shuffled = frame.sample(frac=1.0, random_state=np.random.RandomState(seed % 2**32))
    assert card_precision_at_k(shuffled, k=k) == result
    # A day never finds more fraudulent cards than it has.
    assert all(
        d <= min(f, k)
        for d, f in zip(result.n_detected_per_day, result.n_fraudulent_cards_per_day, strict=True)
    )


# --------------------------------------------------------------------------- evaluate


def test_evaluate_combines_metrics_and_counts() -> None:
    frame = _frame(HAND_ROWS)
    result = evaluate(frame, k=2)
    assert result.card_precision_at_k == pytest.approx(0.75)
    assert result.card_precision_per_day == (0.5, 1.0)
    assert result.auc_roc == pytest.approx(auc_roc(frame[FRAUD], frame[SCORE]))
    assert result.average_precision == pytest.approx(average_precision(frame[FRAUD], frame[SCORE]))
    assert result.to_dict() == {
        "auc_roc": result.auc_roc,
        "average_precision": result.average_precision,
        "card_precision_at_2": 0.75,
        "n_transactions": 10,
        "n_frauds": 5,
        "n_days": 2,
    }
    assert "card_precision_at_100" in evaluate(frame).to_dict()


def test_evaluate_names_the_missing_column() -> None:
    with pytest.raises(DataError, match="TX_FRAUD"):
        evaluate(_frame(HAND_ROWS).drop(columns=[FRAUD]))


# --------------------------------------------------------------------------- known compromised


def _days_frame(rows: list[tuple[int, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[DAY, CUST, FRAUD])


# Training days 0-1, delay days 2-3 (delay_days = 2), test days 4-6. A test transaction on day
# t is dropped when its customer had a fraud on a day <= t - 3.
#   A: fraud day 0 (training)  → known from day 3: dropped on 4, 5, 6
#   B: fraud day 2 (delay)     → known from day 5: kept on 4, dropped on 5, 6
#   C: fraud day 3 (delay)     → known from day 6: kept on 4, 5, dropped on 6
#   D: fraud day 4 (test)      → known from day 7: kept on 4, 5, 6 (its own frauds stay)
#   E: never fraudulent        → kept
FULL = _days_frame(
    [
        (0, "A", 1),
        (1, "B", 0),
        (2, "B", 1),
        (3, "C", 1),
        (3, "E", 0),
        *[(t, cust, 1 if (cust, t) == ("D", 4) else 0) for t in (4, 5, 6) for cust in "ABCDE"],
    ]
)


def test_drop_known_compromised_hand_computed() -> None:
    history, test = FULL[FULL[DAY] <= 3], FULL[FULL[DAY] >= 4]
    kept = drop_known_compromised(test, history, delay_days=2)
    assert list(zip(kept[DAY], kept[CUST], strict=True)) == [
        (4, "B"), (4, "C"), (4, "D"), (4, "E"),
        (5, "C"), (5, "D"), (5, "E"),
        (6, "D"), (6, "E"),
    ]  # fmt: skip
    # Row order and index of the test frame are kept.
    assert list(kept.index) == sorted(kept.index)
    assert kept.index.isin(test.index).all()


def test_drop_known_compromised_counts_frauds_in_earlier_test_days() -> None:
    # delay_days = 1: day t drops frauds from days <= t - 2. D's day-4 fraud is known on day 6.
    history, test = FULL[FULL[DAY] <= 3], FULL[FULL[DAY] >= 4]
    kept = drop_known_compromised(test, history, delay_days=1)
    assert sorted(zip(kept[DAY], kept[CUST], strict=True)) == [
        (4, "C"), (4, "D"), (4, "E"),  # A (0), B (2) known; C not yet (3 > 4 - 2)
        (5, "D"), (5, "E"),  # C known now (3 <= 5 - 2); D not yet (4 > 5 - 2)
        (6, "E"),  # D's day-4 fraud known (4 <= 6 - 2)
    ]  # fmt: skip


def test_drop_known_compromised_rejects_history_without_delay_period() -> None:
    with pytest.raises(ValueError, match="include the delay period"):
        drop_known_compromised(FULL[FULL[DAY] >= 4], FULL[FULL[DAY] <= 1], delay_days=2)


@pytest.mark.parametrize(
    ("train_days", "delay", "test_days"), [(7, 7, 7), (3, 2, 6), (5, 0, 4), (2, 1, 9)]
)
def test_drop_known_compromised_matches_handbook_split(
    train_days: int, delay: int, test_days: int
) -> None:
    n_days = 5 + train_days + delay + test_days + 3
    full = _random_transactions(7, n=6_000, n_days=n_days, n_cards=300, fraud_rate=0.02)
    start = 5  # frauds before the training window are not "known" in the handbook
    first_test = start + train_days + delay
    test = full[(full[DAY] >= first_test) & (full[DAY] < first_test + test_days)]
    history = full[(full[DAY] >= start) & (full[DAY] < first_test)]
    expected = _reference_split(full, start, train_days, delay, test_days)
    got = drop_known_compromised(test, history, delay_days=delay)
    assert 0 < len(got) < len(test)
    pd.testing.assert_frame_equal(got.sort_index(), expected)


# --------------------------------------------------------------------------- threshold

# Scores ranked with labels: 0.9(+) 0.7(-) 0.6(+) 0.3(+) 0.2(-) 0.1(-); 3 frauds.
#   t=0.9: P 1/1  R 1/3 F1 0.5     t=0.3: P 3/4 R 1 F1 6/7 ← best F1
#   t=0.7: P 1/2  R 1/3 F1 0.4     t=0.2: P 3/5 R 1 F1 0.75
#   t=0.6: P 2/3  R 2/3 F1 2/3     t=0.1: P 1/2 R 1 F1 2/3
Y = [0, 0, 1, 1, 0, 1]
S = [0.1, 0.2, 0.3, 0.6, 0.7, 0.9]


def test_choose_threshold_max_f1() -> None:
    choice = choose_threshold(Y, S)
    assert choice.threshold == pytest.approx(0.3)
    assert (choice.precision, choice.recall) == pytest.approx((0.75, 1.0))
    assert choice.f1 == pytest.approx(6 / 7)
    assert choice.alert_rate == pytest.approx(4 / 6)


def test_choose_threshold_f1_ties_prefer_fewer_alerts() -> None:
    # Ranked 0.9(+) 0.6(-) 0.4(-) 0.1(+): t=0.9 P 1 R 1/2 F1 2/3; t=0.1 P 1/2 R 1 F1 2/3.
    choice = choose_threshold([1, 0, 0, 1], [0.9, 0.6, 0.4, 0.1])
    assert choice.threshold == pytest.approx(0.9)


def test_choose_threshold_precision_at_recall() -> None:
    # Recall >= 0.5: t in {0.6, 0.3, 0.2, 0.1}; best precision 3/4 at 0.3.
    at_half = choose_threshold(Y, S, target="precision@recall", min_recall=0.5)
    assert at_half.threshold == pytest.approx(0.3)
    assert at_half.precision == pytest.approx(0.75)
    # Recall >= 0.3 admits t=0.9 with precision 1.
    at_third = choose_threshold(Y, S, target="precision@recall", min_recall=0.3)
    assert (at_third.threshold, at_third.precision) == pytest.approx((0.9, 1.0))
    with pytest.raises(ValueError, match="min_recall"):
        choose_threshold(Y, S, target="precision@recall", min_recall=0.0)
    with pytest.raises(ValueError, match="target must be"):
        choose_threshold(Y, S, target="accuracy")  # type: ignore[arg-type]
