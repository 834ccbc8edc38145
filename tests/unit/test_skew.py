"""The skew check: served features that equal the batch path's give 0; one changed value is
found and named."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from drift_support import CONFIG, SERVED_START, days, features, scored, write_log

from monitoring.skew import check_skew, skew_registry
from vigil.data.simulate import simulate, write_daily
from vigil.errors import VigilError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("raw")
    write_daily(simulate(CONFIG).transactions, out, CONFIG.start_date, CONFIG.n_days)
    return out


def test_served_features_equal_to_batch_give_zero(raw: Path, tmp_path: Path) -> None:
    served = scored(days(features(), SERVED_START, date(2018, 6, 3)))
    write_log(served, tmp_path / "log", "fraud", 1)
    result = check_skew(tmp_path / "log", raw, model_name="fraud", sample=500)
    assert (result.compared, result.missing, result.mismatched) == (500, 0, 0)
    assert result.mismatch_rate == 0.0


def test_a_changed_value_is_found_and_named(raw: Path, tmp_path: Path) -> None:
    served = scored(days(features(), SERVED_START, date(2018, 6, 3)))
    served.loc[served.index[:40], "CUSTOMER_ID_NB_TX_7DAY_WINDOW"] += 1
    write_log(served, tmp_path / "log", "fraud", 1)
    result = check_skew(tmp_path / "log", raw, model_name="fraud", sample=len(served))
    assert result.mismatched == 40 and result.compared == len(served)
    assert result.feature_mismatches["CUSTOMER_ID_NB_TX_7DAY_WINDOW"] == 40
    assert sum(result.feature_mismatches.values()) == 40
    text = skew_registry(result).collect()
    rate = next(m for m in text if m.name == "vigil_skew_mismatch_rate").samples[0].value
    assert rate == pytest.approx(40 / len(served))


def test_window_and_empty_log(raw: Path, tmp_path: Path) -> None:
    served = scored(days(features(), SERVED_START, date(2018, 6, 3)))
    write_log(served, tmp_path / "log", "fraud", 1)
    one_day = len(days(served, date(2018, 6, 3), date(2018, 6, 3)))
    result = check_skew(tmp_path / "log", raw, model_name="fraud", window="1d", sample=10**6)
    assert result.compared == one_day
    with pytest.raises(VigilError, match="no served rows to compare"):
        check_skew(tmp_path / "log", raw, model_name="fraud", window="2019-01-01")


def test_cli_exit_code_says_whether_features_differ(run_vigil, raw: Path, tmp_path: Path) -> None:
    served = scored(days(features(), SERVED_START, date(2018, 6, 1)))
    write_log(served, tmp_path / "ok", "fraud", 1)
    result = run_vigil("skew", "fraud", "--log", tmp_path / "ok", "--transactions", raw,
                       "--sample", "100000")
    assert result.exit_code == 0, result.stderr
    assert f"{len(served):,} served transactions recomputed" in result.stdout
    served.loc[served.index[:3], "TX_AMOUNT"] += 0.01
    write_log(served, tmp_path / "bad", "fraud", 1)
    result = run_vigil("skew", "fraud", "--log", tmp_path / "bad", "--transactions", raw,
                       "--sample", "100000")
    assert result.exit_code == 1 and "TX_AMOUNT: 3 differ" in result.stdout
