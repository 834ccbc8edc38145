"""The drift job's comparison on simulated traffic: undrifted days raise nothing, each drift
scenario shows in the features it changes; results read by metric and column."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest
from drift_support import (
    FEATURES,
    SERVED_START,
    TRAIN_END,
    TRAIN_START,
    WIDE_CONFIG,
    booster,
    days,
    features,
    scored,
)
from prometheus_client import generate_latest

from inference.scoring import FRAUD, LEGIT
from monitoring import drift as d
from vigil.data import drift as scenarios
from vigil.errors import DataError, VigilError

pytestmark = pytest.mark.unit

SERVED_END = date(2018, 6, 13)
OPTIONS = d.DriftOptions(min_rows=1_000)


def _compare(scenario: str | None, *, served_end: date = SERVED_END,
             importance: dict[str, float] | None = None) -> tuple[d.DriftResult, object]:
    reference = scored(days(features(), TRAIN_START, TRAIN_END))
    current = scored(days(features(scenario), SERVED_START, served_end))
    for frame in (reference, current):
        frame[d.DECISION] = d.decisions_of(frame)
    return d.compare(current, reference, FEATURES, OPTIONS, model_name="fraud", model_version=1,
                     importance=importance)


def test_undrifted_traffic_raises_no_drift() -> None:
    result, _ = _compare(None)
    assert result.drifted() == [] and result.drifted_features == 0
    assert not result.dataset_drift and not result.score.detected
    assert not result.decision.detected
    assert result.current_rows > 5_000 and result.reference_rows > 5_000
    # Evidently's defaults at this size: the normed Wasserstein distance, drifted at 0.1.
    amount = next(f for f in result.features if f.column == "TX_AMOUNT")
    assert (amount.method, amount.threshold) == ("Wasserstein distance (normed)", 0.1)


def test_amount_inflation_shows_in_the_amount_features_and_the_score() -> None:
    result, _ = _compare(scenarios.AMOUNT_INFLATION)
    drifted = set(result.drifted())
    assert {"TX_AMOUNT", "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"} <= drifted
    assert not drifted & {"TX_DURING_NIGHT", "TX_DURING_WEEKEND", "CUSTOMER_ID_NB_TX_1DAY_WINDOW"}
    # The share is Evidently's DriftedColumnsCount, consistent with the per-column tests.
    assert result.drifted_features == len(drifted)
    assert result.drifted_share == pytest.approx(len(drifted) / len(FEATURES))
    assert result.decision_rate_current > result.decision_rate_reference


def test_activity_shift_shows_in_night_share_and_counts() -> None:
    result, _ = _compare(scenarios.ACTIVITY_SHIFT)
    drifted = set(result.drifted())
    assert {"TX_DURING_NIGHT", "CUSTOMER_ID_NB_TX_1DAY_WINDOW"} <= drifted
    assert "TX_AMOUNT" not in drifted


def test_card_testing_shows_in_the_features_it_changes() -> None:
    result, _ = _compare(scenarios.CARD_TESTING)
    drifted = set(result.drifted())
    assert "CUSTOMER_ID_NB_TX_1DAY_WINDOW" in drifted
    assert "TX_DURING_WEEKEND" not in drifted


def test_key_features_are_the_fewest_carrying_the_gain_share() -> None:
    gains = {"a": 1.0, "b": 5.0, "c": 3.0, "d": 1.0, "e": 0.0}
    # total 10: b alone carries 0.5, b + c 0.8, then a before d (ties by name).
    assert d.key_features(gains, 0.5) == ("b",)
    assert d.key_features(gains, 0.51) == ("b", "c")
    assert d.key_features(gains, 0.85) == ("b", "c", "a")
    assert d.key_features(gains, 1.0) == ("b", "c", "a", "d")
    assert d.key_features(gains, 0.0) == ()
    assert d.key_features({"a": 0.0, "b": 0.0}, 0.5) == ()
    with pytest.raises(VigilError, match=r"within 0\.\.1"):
        d.key_features(gains, 1.5)


def test_key_features_come_from_the_boosters_gain() -> None:
    gains = d.gain_importance(booster())
    assert set(gains) == set(FEATURES) and sum(gains.values()) > 0
    key = d.key_features(gains, 0.5)
    assert 0 < len(key) < len(FEATURES)
    assert sum(gains[f] for f in key) >= 0.5 * sum(gains.values())
    assert "TX_DURING_WEEKEND" not in key


def test_undrifted_traffic_moves_no_key_feature() -> None:
    result, _ = _compare(None, importance=d.gain_importance(booster()))
    assert result.key_features and result.drifted_key_features() == []
    assert not result.key_feature_drift
    text = generate_latest(d.result_registry(result)).decode()
    assert 'vigil_drift_key_feature_drift_detected{model_name="fraud"} 0.0' in text


#: Gain shares of the features a model leans on most, like the champion of bench/drift.py at
#: the handbook's scale (a terminal's 7-day risk: 0.28 of its gain); the rest share 0.3.
HANDBOOK_LIKE_GAIN = {
    "TERMINAL_ID_RISK_7DAY_WINDOW": 0.28,
    "CUSTOMER_ID_AMOUNT_RATIO_30DAY_WINDOW": 0.21,
    "CUSTOMER_ID_MAX_AMOUNT_7DAY_RATIO_LAGGED": 0.21,
}


def _wide(scenario: str | None) -> d.DriftResult:
    rest = [f for f in FEATURES if f not in HANDBOOK_LIKE_GAIN]
    importance = {**HANDBOOK_LIKE_GAIN, **{f: 0.3 / len(rest) for f in rest}}
    reference = scored(days(features(None, WIDE_CONFIG), TRAIN_START, TRAIN_END))
    current = scored(days(features(scenario, WIDE_CONFIG), SERVED_START, date(2018, 6, 13)))
    for frame in (reference, current):
        frame[d.DECISION] = d.decisions_of(frame)
    result, _ = d.compare(current, reference, FEATURES, OPTIONS, model_name="fraud",
                          importance=importance)
    assert result.key_features[0] == "TERMINAL_ID_RISK_7DAY_WINDOW"
    return result


def test_card_testing_drifts_a_key_feature_far_below_the_data_set_share() -> None:
    """A new fraud pattern in a small share of the traffic (two weeks of card testing): a few
    features drift, far from half of them, and the model's score does not move; one of the
    features the model leans on most, a terminal's risk, drifts once the new frauds' labels
    have arrived. Before key features the alert rule saw nothing here."""
    result = _wide(scenarios.CARD_TESTING)
    assert not result.dataset_drift and result.drifted_share < 0.25
    assert not result.score.detected and not result.decision.detected
    assert "TERMINAL_ID_RISK_7DAY_WINDOW" in result.drifted_key_features()
    text = generate_latest(d.result_registry(result)).decode()
    assert 'vigil_drift_key_feature_drift_detected{model_name="fraud"} 1.0' in text
    for f in result.key_features:
        assert f'vigil_drift_key_feature{{feature="{f}",model_name="fraud"}} 1.0' in text
    body = result.to_dict()
    assert body["key_feature_drift"] is True
    assert body["drifted_key_features"] == result.drifted_key_features()


def test_the_same_model_on_undrifted_traffic_sees_no_key_feature_drift() -> None:
    result = _wide(None)
    assert result.drifted() == [] and not result.key_feature_drift


def test_without_importance_there_are_no_key_features() -> None:
    result, _ = _compare(scenarios.CARD_TESTING)
    assert result.key_features == () and not result.key_feature_drift


def test_too_few_rows_is_not_enough_data_not_drift() -> None:
    reference = scored(days(features(), TRAIN_START, TRAIN_END))
    current = scored(days(features(scenarios.AMOUNT_INFLATION), SERVED_START, SERVED_START))
    for frame in (reference, current):
        frame[d.DECISION] = d.decisions_of(frame)
    # One day of this small world is under the bound.
    assert 0 < len(current) < OPTIONS.min_rows
    with pytest.raises(d.NotEnoughData, match=rf"not enough data: {len(current)} current and "
                       rf"{len(reference):,} reference rows, at least 1,000 each") as info:
        d.compare(current, reference, FEATURES, OPTIONS, model_name="fraud")
    assert (info.value.current_rows, info.value.reference_rows) == (len(current), len(reference))


def test_report_files_and_exported_metrics(tmp_path: Path) -> None:
    result, snapshot = _compare(scenarios.AMOUNT_INFLATION)
    html, js = d.write_report(result, snapshot, tmp_path / "r")
    assert html.stat().st_size > 10_000 and "<html" in html.read_text()[:2000].lower()
    body = json.loads(js.read_text())
    assert body["vigil"]["drifted"] == result.drifted()
    assert {m["config"]["type"] for m in body["evidently"]["metrics"]} == {
        "evidently:metric_v2:DriftedColumnsCount", "evidently:metric_v2:ValueDrift"}
    text = generate_latest(d.result_registry(result)).decode()
    assert ('vigil_drift_feature_detected{feature="TX_AMOUNT",model_name="fraud"} 1.0'
            in text)
    assert 'vigil_drift_feature_detected{feature="TX_DURING_NIGHT",model_name="fraud"} 0.0' in text
    share, rows = result.drifted_share, result.current_rows
    assert f'vigil_drift_drifted_features_share{{model_name="fraud"}} {share}' in text
    assert f'vigil_drift_rows{{dataset="current",model_name="fraud"}} {rows}.0' in text
    for name in ("vigil_drift_score_drift", "vigil_drift_last_success_timestamp_seconds",
                 "vigil_drift_decision_rate", "vigil_drift_dataset_drift_detected"):
        assert f"\n{name}{{" in text


@pytest.mark.parametrize(("text", "start", "end"), [
    ("2026-11-20", datetime(2026, 11, 20), datetime(2026, 11, 21)),
    ("2026-11-20..2026-11-22", datetime(2026, 11, 20), datetime(2026, 11, 23)),
    ("1d", datetime(2026, 11, 21, 12, 0, 0, 1), datetime(2026, 11, 22, 12, 0, 0, 1)),
    ("6h", datetime(2026, 11, 22, 6, 0, 0, 1), datetime(2026, 11, 22, 12, 0, 0, 1)),
])
def test_windows(text: str, start: datetime, end: datetime) -> None:
    assert d.parse_window(text, datetime(2026, 11, 22, 12)) == d.Window(start, end)


@pytest.mark.parametrize(("text", "message"), [
    ("yesterday", "expected YYYY-MM-DD, YYYY-MM-DD..YYYY-MM-DD, <n>d or <n>h"),
    ("2026-11-22..2026-11-20", "ends before it starts"),
    ("0d", "at least 1d"),
])
def test_bad_windows_are_named(text: str, message: str) -> None:
    with pytest.raises(VigilError, match=message):
        d.parse_window(text, datetime(2026, 11, 22))


def test_decisions_are_read_in_the_servers_vocabulary() -> None:
    """The inference log holds the server's decisions; any other value is an error, not a
    silent LEGIT (the served decision rate read 0 on real logs when the job expected
    ``FRAUD``)."""
    frame = pd.DataFrame({d.DECISION: [FRAUD, LEGIT, LEGIT, FRAUD]})
    assert d.decisions_of(frame).tolist() == [1, 0, 0, 1]
    with pytest.raises(DataError, match=r"decision.*'FRAUD'"):
        d.decisions_of(pd.DataFrame({d.DECISION: ["FRAUD", LEGIT]}))
