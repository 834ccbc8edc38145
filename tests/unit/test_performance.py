"""Live performance from delayed labels on simulated served traffic: the figures are the
evaluation code's, per day and over the window; the cost is counted by hand; too few labels is
said so."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from drift_support import SERVED_START, THRESHOLD, days, features, scored, write_log
from prometheus_client import generate_latest

from monitoring import performance as p
from vigil import contract as c
from vigil.data.drift import AMOUNT_INFLATION
from vigil.errors import DataError
from vigil.evaluation.metrics import ALL_TRANSACTIONS, decision_cost, evaluate

pytestmark = pytest.mark.unit

SERVED_END = date(2018, 6, 13)
#: Labels arrive with a delay: the last served days have none yet.
LABELLED_END = date(2018, 6, 9)
#: The version's card: its figures over every test transaction (the reference) and under the
#: handbook protocol (known-compromised cards left out).
EVALUATED = {"auc_roc": 0.9, "average_precision": 0.7, "card_precision_at_100": 0.25}
HANDBOOK = {"auc_roc": 0.88, "average_precision": 0.62, "card_precision_at_100": 0.2}
CARD = {**HANDBOOK, **{ALL_TRANSACTIONS + k: v for k, v in EVALUATED.items()}}


def _world(tmp_path: Path, scenario: str | None = None) -> tuple[Path, Path, pd.DataFrame]:
    served = scored(days(features(scenario), SERVED_START, SERVED_END))
    write_log(served, tmp_path / "log", "fraud", 1)
    arrived = days(features(scenario), SERVED_START, LABELLED_END)[[c.TRANSACTION_ID, c.TX_FRAUD]]
    (tmp_path / "labels").mkdir()
    arrived.to_parquet(tmp_path / "labels" / "labels.parquet", index=False)
    return tmp_path / "log", tmp_path / "labels", served


def _run(log: Path, labels: Path, out: Path, min_labelled: int = 1_000,
         card: dict[str, float] = CARD) -> p.PerformanceRun:
    class Cards:
        def get_card(self, name: str, *, version: int) -> object:
            return type("Card", (), {"metrics": card})()

    return p.run_job(model_name="fraud", log_root=str(log), labels=str(labels), registry=Cards(),
                     versions=None, alert_cost=5.0, min_labelled=min_labelled, out_root=out,
                     pushgateway_url=None)


def test_figures_are_the_evaluation_codes_on_the_labelled_rows(tmp_path: Path) -> None:
    log, labels, served = _world(tmp_path)
    run = _run(log, labels, tmp_path / "out")
    (perf,) = run.results
    labelled = days(served, SERVED_START, LABELLED_END)
    assert perf.transactions == len(labelled) and perf.frauds == int(labelled[c.TX_FRAUD].sum())
    frame = labelled.assign(**{c.TX_TIME_DAYS: (labelled[c.TX_DATETIME].dt.floor("D")
                                                - pd.Timestamp(SERVED_START)).dt.days})
    expected = evaluate(frame)
    assert perf.auc_roc == pytest.approx(expected.auc_roc)
    assert perf.average_precision == pytest.approx(expected.average_precision)
    assert perf.card_precision_at_100 == pytest.approx(expected.card_precision_at_k)
    assert [d.day for d in perf.days] == [str(d) for d in pd.date_range(SERVED_START,
                                                                           LABELLED_END).date]
    first = frame[frame[c.TX_TIME_DAYS] == 0]
    assert perf.days[0].average_precision == pytest.approx(evaluate(first).average_precision)
    # Cost by hand: 5 per alert, the amount of every missed fraud.
    alert = (labelled["score"] >= THRESHOLD).to_numpy()
    fraud = labelled[c.TX_FRAUD].to_numpy() == 1
    by_hand = 5.0 * alert.sum() + labelled.loc[fraud & ~alert, c.TX_AMOUNT].sum()
    assert perf.decision_cost == pytest.approx(by_hand)
    assert sum(d.decision_cost for d in perf.days) == pytest.approx(by_hand)
    assert perf.evaluated == EVALUATED
    assert perf.evaluated_handbook == HANDBOOK


def test_picture_json_and_metrics(tmp_path: Path) -> None:
    log, labels, _ = _world(tmp_path)
    run = _run(log, labels, tmp_path / "out")
    (png,), (js,) = run.pngs, run.jsons
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    body = json.loads(js.read_text())
    assert body["model_version"] == 1 and len(body["days"]) == 10
    text = generate_latest(p.live_registry(run.results)).decode()
    ap = run.results[0].average_precision
    assert f'vigil_live_average_precision{{model_name="fraud",model_version="1"}} {ap}' in text
    assert ('vigil_live_evaluated_average_precision{model_name="fraud",model_version="1"} 0.7'
            in text)
    assert "vigil_live_decision_cost{" in text and "vigil_live_last_success_timestamp" in text
    assert body["evaluated"] == EVALUATED and body["evaluated_handbook"] == HANDBOOK


def test_a_card_without_whole_window_figures_has_no_reference(tmp_path: Path) -> None:
    """Only the handbook figures (another population): nothing is exported as evaluated, so
    the live-AP alert does not compare live traffic with them."""
    log, labels, _ = _world(tmp_path)
    (perf,) = _run(log, labels, tmp_path / "out", card=HANDBOOK).results
    assert perf.evaluated == {} and perf.evaluated_handbook == HANDBOOK
    text = generate_latest(p.live_registry([perf])).decode()
    assert "vigil_live_average_precision{" in text
    assert "vigil_live_evaluated_average_precision{" not in text


def test_amount_inflation_costs_more_than_undrifted_traffic(tmp_path: Path) -> None:
    ok = _run(*_world(tmp_path / "ok")[:2], tmp_path / "o1").results[0]
    drifted = _run(*_world(tmp_path / "drift", AMOUNT_INFLATION)[:2], tmp_path / "o2").results[0]
    # Genuine payments above the learnt amount rule are flagged: more alerts, more cost.
    assert drifted.decision_cost_per_transaction > ok.decision_cost_per_transaction
    assert drifted.average_precision < ok.average_precision


def test_too_few_labels_is_said_so(tmp_path: Path) -> None:
    log, labels, served = _world(tmp_path)
    with pytest.raises(p.NotEnoughLabels, match=r"not enough labels: [\d,]+ of [\d,]+ "
                       r"transactions served by fraud version 1 have labels"):
        _run(log, labels, tmp_path / "out", min_labelled=len(served) + 1)


def test_bad_labels_are_named(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("TRANSACTION_ID,LABEL\n1,0\n")
    with pytest.raises(DataError, match=r"a.csv, column TX_FRAUD: labels need columns"):
        p.read_labels(tmp_path / "a.csv")
    (tmp_path / "a.csv").write_text("TRANSACTION_ID,TX_FRAUD\n1,2\n")
    with pytest.raises(DataError, match="labels must be 0/1"):
        p.read_labels(tmp_path / "a.csv")


def test_decision_cost() -> None:
    cost = decision_cost(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]),
                         np.array([100.0, 40.0, 10.0, 5.0]), alert_cost=2.5)
    assert (cost.total, cost.alerts, cost.missed_frauds, cost.missed_amount) == (45.0, 2, 1, 40.0)
    assert cost.per_transaction == 45.0 / 4


def test_alerts_are_read_in_the_servers_vocabulary(tmp_path: Path) -> None:
    """A log whose decisions are not the server's is refused, not read as no alert at all."""
    served = scored(days(features(), SERVED_START, SERVED_END))
    served["decision"] = served["decision"].str.upper()
    write_log(served, tmp_path / "log", "fraud", 1)
    _, labels, _ = _world(tmp_path / "w")
    with pytest.raises(DataError, match=r"decision.*'FRAUD'"):
        _run(tmp_path / "log", labels, tmp_path / "out")
