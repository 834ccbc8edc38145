"""The handbook benchmark: fold dates, splits, known-compromised removal, model selection on
validation folds only, and the CLI on small simulated data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from feature_store.transforms import DEFAULT_SPEC
from vigil import contract as c
from vigil.data.simulate import Simulation, SimulationConfig, simulate, write_daily
from vigil.data.summary import TransactionSummary
from vigil.errors import DataError
from vigil.training import TrainedModel, train_lightgbm
from vigil_cli import handbook as bh
from vigil_cli.cli import cli
from vigil_cli.handbook import families

pytestmark = pytest.mark.unit

#: 90 days (chapter 5 needs 77), starting on a date unlike the book's, so dates must be derived.
SMALL = SimulationConfig(
    n_customers=250, n_terminals=500, n_days=90, start_date=date(2021, 3, 1), seed=7
)
D = timedelta(days=1)


@pytest.fixture(scope="module")
def small() -> Simulation:
    return simulate(SMALL)


@pytest.fixture(scope="module")
def data(small: Simulation) -> bh.BenchmarkData:
    return bh.prepare(small.transactions)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory, small: Simulation) -> Path:
    out = tmp_path_factory.mktemp("bench_small")
    write_daily(small.transactions, out, SMALL.start_date, SMALL.n_days)
    return out


# --------------------------------------------------------------------------- dates


def _dates(fold: bh.Fold) -> tuple[str, str, str, str]:
    d = fold.to_dict()
    return (*d["train"], *d["test"])


def test_handbook_fold_dates() -> None:
    """The book's layout: chapter 3 trains 2018-07-25..31 and tests 2018-08-08..14; chapter 5's
    first test fold trains from 2018-08-15, its validation folds from 2018-07-11, each shifted
    back 7 days per fold."""
    validation, test = bh.folds_for("ch3", bh.HANDBOOK_ANCHOR)
    assert [_dates(f) for f in test] == [("2018-07-25", "2018-07-31", "2018-08-08", "2018-08-14")]
    assert [_dates(f) for f in validation] == [
        ("2018-07-11", "2018-07-17", "2018-07-25", "2018-07-31"),
        ("2018-07-04", "2018-07-10", "2018-07-18", "2018-07-24"),
        ("2018-06-27", "2018-07-03", "2018-07-11", "2018-07-17"),
        ("2018-06-20", "2018-06-26", "2018-07-04", "2018-07-10"),
    ]
    validation5, test5 = bh.folds_for("ch5", bh.HANDBOOK_ANCHOR)
    assert validation5 == validation
    assert [_dates(f) for f in test5] == [
        ("2018-08-15", "2018-08-21", "2018-08-29", "2018-09-04"),
        ("2018-08-08", "2018-08-14", "2018-08-22", "2018-08-28"),
        ("2018-08-01", "2018-08-07", "2018-08-15", "2018-08-21"),
        ("2018-07-25", "2018-07-31", "2018-08-08", "2018-08-14"),
    ]
    # Every test day of every test fold comes after every validation test day.
    assert min(f.test_start for f in test5) > max(f.test_end - D for f in validation5)


def test_plan_uses_the_book_dates_when_the_data_covers_them() -> None:
    plan = bh.plan_protocol("ch5", date(2018, 4, 1), date(2018, 9, 30))
    assert (plan.anchor, plan.dates_source) == (bh.HANDBOOK_ANCHOR, "handbook")
    assert (plan.first_day, plan.last_day) == (date(2018, 6, 20), date(2018, 9, 4))


def test_plan_relative_to_the_data() -> None:
    # Long enough: the anchor sits 115 days after the first day, as in the book.
    plan = bh.plan_protocol("ch3", date(2020, 1, 1), date(2020, 12, 31))
    assert (plan.anchor, plan.dates_source) == (date(2020, 4, 25), "relative to the data")
    # Shorter: as late as the data allows (ch5 needs 41 days from the anchor on).
    plan = bh.plan_protocol("ch5", date(2021, 3, 1), date(2021, 5, 29))
    assert plan.anchor == date(2021, 5, 29) - timedelta(days=41)
    assert plan.last_day == date(2021, 5, 29)
    assert plan.first_day >= date(2021, 3, 1)


def test_plan_rejects_data_too_short() -> None:
    with pytest.raises(DataError, match=r"ch5 needs 77 consecutive days.*covers 76 day"):
        bh.plan_protocol("ch5", date(2021, 3, 1), date(2021, 3, 1) + timedelta(days=75))
    # 56 days are enough for chapter 3 (35 before the anchor for validation, 21 from it).
    plan = bh.plan_protocol("ch3", date(2021, 3, 1), date(2021, 3, 1) + timedelta(days=55))
    assert plan.first_day == date(2021, 3, 1)


def test_plan_with_start() -> None:
    plan = bh.plan_protocol("ch3", date(2018, 4, 1), date(2018, 9, 30), date(2018, 8, 1))
    assert (plan.anchor, plan.dates_source) == (date(2018, 8, 1), "--start")
    with pytest.raises(DataError, match=r"needs transactions from 2018-06-27 to 2018-09-11"):
        bh.plan_protocol("ch5", date(2018, 4, 1), date(2018, 9, 10), date(2018, 8, 1))


# --------------------------------------------------------------------------- splits


def _book_test_set(frame: pd.DataFrame, train_start: int) -> pd.DataFrame:
    """The book's ``get_train_test_set`` test loop, restated literally on protocol days."""
    day = frame[bh.DAY]
    train = frame[(day >= train_start) & (day < train_start + 7)]
    known = set(train.loc[train[c.TX_FRAUD] == 1, c.CUSTOMER_ID])
    parts = []
    for d in range(7):
        test_day = frame[day == train_start + 7 + 7 + d]
        delay_day = frame[day == train_start + 7 + d - 1]
        known |= set(delay_day.loc[delay_day[c.TX_FRAUD] == 1, c.CUSTOMER_ID])
        parts.append(test_day[~test_day[c.CUSTOMER_ID].isin(known)])
    return pd.concat(parts)


def test_fold_sets_follow_the_book(data: bh.BenchmarkData) -> None:
    plan = bh.plan_protocol("ch5", *data.summary.transactions.span())
    assert data.summary.transactions.span() == (date(2021, 3, 1), date(2021, 5, 29))
    day = data.frame[bh.DAY]
    dropped_total = 0
    for fold in plan.folds:
        fs = bh.fold_sets(data, fold)
        t0, v0 = data.day_of(fold.train_start), data.day_of(fold.test_start)
        # Sizes: every transaction of the 7 training days; the test days minus known cards.
        assert len(fs.train) == int(((day >= t0) & (day < t0 + 7)).sum()) > 0
        assert set(fs.train[bh.DAY]) == set(range(t0, t0 + 7))
        assert set(fs.test[bh.DAY]) <= set(range(v0, v0 + 7))
        assert v0 - fs.train[bh.DAY].max() == 8  # 7 delay days in between
        assert not set(fs.train[c.TRANSACTION_ID]) & set(fs.test[c.TRANSACTION_ID])
        raw_test = int(((day >= v0) & (day < v0 + 7)).sum())
        assert fs.n_dropped == raw_test - len(fs.test)
        dropped_total += fs.n_dropped
        # Known-compromised removal is the book's.
        expected = _book_test_set(data.frame, t0)
        assert sorted(fs.test[c.TRANSACTION_ID]) == sorted(expected[c.TRANSACTION_ID])
        # No remaining test card had a fraud between the training start and 8 days before.
        frauds = data.frame[(day >= t0) & (data.frame[c.TX_FRAUD] == 1)]
        first = frauds.groupby(c.CUSTOMER_ID)[bh.DAY].min()
        known_since = fs.test[c.CUSTOMER_ID].map(first)
        assert not (known_since <= fs.test[bh.DAY] - 8).any()
    assert dropped_total > 0


def test_fold_sets_need_both_classes(data: bh.BenchmarkData) -> None:
    genuine = bh.BenchmarkData(data.frame.assign(**{c.TX_FRAUD: 0}), data.summary)
    fold = bh.Fold("test", 0, data.summary.transactions.first_day + timedelta(days=40))
    with pytest.raises(DataError, match="test fold 0: the training set"):
        bh.fold_sets(genuine, fold)


# --------------------------------------------------------------------------- model selection


class OracleOnFamily:
    """Fake model family. ``val-good`` scores perfectly before ``cutoff`` (the validation test
    days) and at random after; ``test-good`` the other way round. Records every call."""

    name = "fake"
    features: Sequence[str] = ()

    def __init__(self, cutoff: int) -> None:
        self.cutoff = cutoff
        self.calls: list[tuple[list[str], set[str], set[str]]] = []

    def candidates(self) -> list[bh.Candidate]:
        return [bh.Candidate({"kind": "test-good"}), bh.Candidate({"kind": "val-good"})]

    def fit_predict(
        self, train: pd.DataFrame, assess: pd.DataFrame, candidates: Sequence[bh.Candidate]
    ) -> list[np.ndarray]:
        self.calls.append(
            (
                [cand.params["kind"] for cand in candidates],
                set(train[c.TRANSACTION_ID]),
                set(assess[c.TRANSACTION_ID]),
            )
        )
        labels = assess[c.TX_FRAUD].to_numpy(np.float64)
        noise = np.random.default_rng(len(assess)).random(len(assess))
        early = assess[bh.DAY].to_numpy() < self.cutoff
        out = []
        for cand in candidates:
            good = early if cand.params["kind"] == "val-good" else ~early
            out.append(np.where(good, labels, noise))
        return out


@pytest.mark.parametrize("selection", ["per-metric", "card_precision_at_100"])
def test_selection_sees_validation_folds_only(data: bh.BenchmarkData, selection: str) -> None:
    plan = bh.plan_protocol("ch5", *data.summary.transactions.span())
    validation = [bh.fold_sets(data, f) for f in plan.validation_folds]
    test = [bh.fold_sets(data, f) for f in plan.test_folds]
    cutoff = data.day_of(min(f.test_start for f in plan.test_folds))
    family = OracleOnFamily(cutoff)
    result = bh.run_model(family, validation, test, selection, progress=lambda _: None)  # type: ignore[arg-type]

    test_rows = set().union(*(set(fs.test[c.TRANSACTION_ID]) for fs in test))
    selection_calls, test_calls = family.calls[:4], family.calls[4:]
    assert len(test_calls) == 4
    for kinds, train_ids, assess_ids in selection_calls:
        assert kinds == ["test-good", "val-good"]
        assert not (train_ids | assess_ids) & test_rows
    # The choice follows validation: the candidate that would win on the test folds loses.
    for kinds, _, _ in test_calls:
        assert kinds == ["val-good"]
    for metric in bh.METRICS:
        assert result.test[metric].candidate.params == {"kind": "val-good"}
        best_validation = max(result.validation, key=lambda r: r.mean(metric))
        assert best_validation.candidate.params == {"kind": "val-good"}
    assert result.mean("auc_roc") < 0.7  # random on the test folds: no peeking
    assert [r.fold for r in result.test["auc_roc"].folds] == list(plan.test_folds)


def _result(name: str, values: dict[str, float]) -> bh.CandidateResult:
    fold = bh.Fold("validation", 0, date(2018, 7, 11))
    return bh.CandidateResult(
        bh.Candidate({"name": name}),
        (
            bh.FoldResult(
                fold,
                values["auc_roc"],
                values["average_precision"],
                values["card_precision_at_100"],
                1,
                1,
                1,
                1,
                0,
            ),
        ),
    )


def test_choose_per_metric_and_by_one_metric() -> None:
    a = _result("a", {"auc_roc": 0.9, "average_precision": 0.5, "card_precision_at_100": 0.2})
    b = _result("b", {"auc_roc": 0.8, "average_precision": 0.7, "card_precision_at_100": 0.2})
    per_metric = bh.choose([a, b], "per-metric")
    assert per_metric["auc_roc"] is a
    assert per_metric["average_precision"] is b
    assert per_metric["card_precision_at_100"] is a  # a tie goes to the first candidate
    by_ap = bh.choose([a, b], "average_precision")
    assert all(r is b for r in by_ap.values())
    with pytest.raises(ValueError, match="selection must be"):
        bh.choose([a, b], "f1")  # type: ignore[arg-type]


def test_std_is_the_population_std() -> None:
    folds = tuple(
        bh.FoldResult(bh.Fold("test", i, date(2018, 8, 15)), v, v, v, 1, 1, 1, 1, 0)
        for i, v in enumerate((0.2, 0.4))
    )
    r = bh.CandidateResult(bh.Candidate({}), folds)
    assert r.mean("auc_roc") == pytest.approx(0.3)
    assert r.std("auc_roc") == pytest.approx(0.1)  # ddof=0, as GridSearchCV reports


@pytest.mark.parametrize(("cp", "met"), [(0.3054, False), (0.3056, True)])
def test_targets_compare_at_the_books_precision(cp: float, met: bool) -> None:
    test = _result("x", {"auc_roc": 0.9, "average_precision": 0.7, "card_precision_at_100": cp})
    model = bh.ModelResult("m", (), "per-metric", (test,), dict.fromkeys(bh.METRICS, test), 0, 0)
    validation, test_folds = bh.folds_for("ch5", bh.HANDBOOK_ANCHOR)
    plan = bh.ProtocolPlan("ch5", bh.HANDBOOK_ANCHOR, "handbook", validation, test_folds)
    summary = bh.PreparedData(
        TransactionSummary(1, 1, 1, 1, pd.Timestamp("2018-04-01"), pd.Timestamp("2018-09-30")), 0.0
    )
    result = bh.BenchmarkResult(plan, summary, (model,), 1.0, (0.5,) * 4)
    targets = result.targets()
    assert targets["auc_roc"]["met"] and targets["average_precision"]["met"]
    assert targets["card_precision_at_100"]["met"] is met
    assert result.targets_met is met
    table = bh.format_table(result)
    assert "0.869–0.872" in table and "Balanced bagging" in table


# --------------------------------------------------------------------------- LightGBM family


def test_lightgbm_family_shares_one_run_across_rounds(
    data: bh.BenchmarkData, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_day, _ = data.summary.transactions.span()
    fs = bh.fold_sets(data, bh.Fold("test", 0, first_day + timedelta(days=40)))
    fits: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> TrainedModel:
        fits.append(kwargs["num_boost_round"])
        return train_lightgbm(*args, **kwargs)

    monkeypatch.setattr(families, "train_lightgbm", counting)
    features = bh.DEFAULT_SPEC.features
    grid = [{"num_leaves": 7, bh.ROUNDS: r} for r in (5, 20)] + [{"num_leaves": 3, bh.ROUNDS: 10}]
    family = bh.LightGBMFamily("lgbm", features, grid)
    scores = family.fit_predict(fs.train, fs.test, family.candidates())
    assert sorted(fits) == [10, 20]
    # Each candidate's scores are the log-odds of its own number of trees.
    model = train_lightgbm(
        fs.train, params={"num_leaves": 7}, num_boost_round=5, feature_names=features
    )
    np.testing.assert_allclose(
        scores[0], model.booster.predict(fs.test[features].to_numpy(), raw_score=True), rtol=1e-9
    )
    assert not np.allclose(scores[0], scores[1])
    # More rounds than trees: all the trees, like LightGBM's own predict.
    x = fs.test[features].to_numpy()
    three, beyond = bh.raw_scores_at(model.booster, x, [3, 10])
    np.testing.assert_allclose(
        three, model.booster.predict(x, num_iteration=3, raw_score=True), rtol=1e-9
    )
    np.testing.assert_allclose(beyond, model.booster.predict(x, raw_score=True), rtol=1e-9)


# --------------------------------------------------------------------------- CLI


def test_cli_ch5_on_small_data(small_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ch5.json"
    result = CliRunner().invoke(
        cli,
        [
            "benchmark",
            "handbook",
            "--transactions",
            str(small_dir),
            "--protocol",
            "ch5",
            "--quick",
            "--no-baseline",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Balanced bagging" in result.output and "best published" in result.output
    assert "relative to the data" in result.output
    payload = json.loads(out.read_text())
    assert payload["plan"]["anchor"] == "2021-04-18"  # 41 days before the last day
    assert payload["plan"]["test_folds"][0]["test"] == ["2021-05-23", "2021-05-29"]
    assert [m["name"] for m in payload["models"]] == [
        f"Vigil LightGBM, all {len(DEFAULT_SPEC.features)} features",
        "Handbook logistic regression on this data",
    ]
    vigil = payload["models"][0]
    assert len(vigil["validation"]) == 2  # the quick grid
    for candidate in vigil["test_candidates"]:
        assert len(candidate["folds"]) == 4
    for metric in bh.METRICS:
        per_fold = [f[metric] for f in vigil["test_candidates"][0]["folds"]]
        chosen = vigil["chosen"][metric]
        assert 0 <= vigil["test"][metric]["mean"] <= 1
        if chosen == vigil["test_candidates"][0]["params"]:
            assert vigil["test"][metric]["mean"] == pytest.approx(np.mean(per_fold))
    assert set(payload["targets"]) == set(bh.METRICS)
    assert payload["data"]["transactions"]["rows"] > 0
    assert payload["timings"]["total_seconds"] >= payload["timings"]["feature_seconds"]


def test_cli_ch3_with_start(small_dir: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "benchmark",
            "handbook",
            "--transactions",
            str(small_dir),
            "--protocol",
            "ch3",
            "--quick",
            "--no-baseline",
            "--no-reference",
            "--start",
            "2021-04-20",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "anchor 2021-04-20 (--start)" in result.output
    assert "test days: 2021-05-04 .. 2021-05-10" in result.output
    assert "by AP" in result.output


def test_cli_rejects_data_too_short(tmp_path: Path) -> None:
    short = tmp_path / "short"
    sim = simulate(SimulationConfig(n_customers=50, n_terminals=100, n_days=30, seed=1))
    write_daily(sim.transactions, short, sim.config.start_date, 30)
    result = CliRunner().invoke(
        cli,
        [
            "benchmark",
            "handbook",
            "--transactions",
            str(short),
            "--protocol",
            "ch3",
            "--quick",
        ],
    )
    assert isinstance(result.exception, DataError)
    assert "needs 56 consecutive days" in str(result.exception)
