"""The validation gate: clean data passes; each injected violation is caught, named, counted and
exemplified; the CLI exits 0 / 1 / 2 and writes its reports."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydantic
import pytest

from vigil import contract as c
from vigil.data.simulate import Simulation, SimulationConfig, simulate, write_daily
from vigil.data.validation import (
    HTML_REPORT,
    JSON_REPORT,
    ValidationConfig,
    ValidationResult,
    require_valid,
    validate_transactions,
    write_reports,
)
from vigil.errors import DataError, ValidationFailed

pytestmark = pytest.mark.unit

#: The ``run_vigil`` fixture (tests/conftest.py): args -> CliRun(exit_code, stdout, stderr).
RunVigil = Callable[..., Any]

START = "2018-04-01 00:00:00"
ORIGIN_CHECK = f"TX_DATETIME = {START} + TX_TIME_SECONDS"
FILE_DAY_CHECK = "TX_DATETIME inside the file's day"
SHARE_CHECK = "share of frauds (mean TX_FRAUD) in [0.0001, 0.2]"


def _write_days(tx: pd.DataFrame, folder: Path, sim: Simulation) -> Path:
    """Daily parquet files, rows placed by the simulation's *original* day, so that a test can
    move a timestamp without moving the row to another file."""
    folder.mkdir(parents=True, exist_ok=True)
    days = sim.transactions[c.TX_TIME_DAYS].to_numpy()
    for day in np.unique(days):
        name = f"{sim.config.start_date + timedelta(days=int(day))}.parquet"
        tx[days == day].to_parquet(folder / name, index=False)
    return folder


def _add(tx: pd.DataFrame, row: int, column: str, delta: Any) -> None:
    """Add ``delta`` to one cell (in place)."""
    tx.loc[[row], column] = tx[column].iloc[row] + delta


def _file_of(sim: Simulation, row: int) -> str:
    day = int(sim.transactions[c.TX_TIME_DAYS].iloc[row])
    return f"{sim.config.start_date + timedelta(days=day)}.parquet"


def _failed(result: ValidationResult) -> set[str]:
    return {check.name for check in result.failed}


# --- clean data ----------------------------------------------------------------------------


def test_clean_simulated_data_passes(tiny_daily_dir: Path, tiny_simulation: Simulation) -> None:
    result = validate_transactions(tiny_daily_dir)
    assert result.success, result.failure_message()
    assert result.failed == ()
    names = [check.name for check in result.checks]
    for expected in (
        "TX_DATETIME parseable as timestamp", "TX_FRAUD present", "TX_AMOUNT not null",
        "TX_AMOUNT ≥ 0", "TX_AMOUNT finite", "TX_FRAUD in {0, 1}", "TRANSACTION_ID unique",
        "row count ≥ 1", SHARE_CHECK, "TX_TIME_DAYS = TX_TIME_SECONDS // 86400",
        FILE_DAY_CHECK, ORIGIN_CHECK,
    ):
        assert expected in names
    assert len(names) == len(set(names))
    tx = tiny_simulation.transactions
    s, t = result.summary, result.summary.transactions
    assert (t.rows, s.files, s.daily_files, t.frauds) == (
        len(tx), tiny_simulation.config.n_days, tiny_simulation.config.n_days,
        int(tx[c.TX_FRAUD].sum()),
    )
    assert t.first == tx[c.TX_DATETIME].min()
    assert result.check(SHARE_CHECK).observed == pytest.approx(tx[c.TX_FRAUD].mean())
    assert result.check("row count ≥ 1").observed == len(tx)


def test_data_starting_on_another_date_passes(tmp_path: Path) -> None:
    config = SimulationConfig(n_customers=80, n_terminals=160, n_days=4,
                              start_date=date(2021, 2, 27), seed=2)
    sim = simulate(config)
    write_daily(sim.transactions, tmp_path, config.start_date, config.n_days)
    result = validate_transactions(tmp_path)
    assert result.success, result.failure_message()
    names = [check.name for check in result.checks]
    assert "TX_DATETIME = 2021-02-27 00:00:00 + TX_TIME_SECONDS" in names


def test_one_daily_file_of_a_longer_data_set_passes(tiny_daily_dir: Path) -> None:
    result = validate_transactions(tiny_daily_dir / "2018-04-05.parquet")
    assert result.success, result.failure_message()
    assert result.summary.files == result.summary.daily_files == 1
    assert ORIGIN_CHECK in [check.name for check in result.checks]


def test_single_file_without_a_date_has_no_file_day_check(
    tmp_path: Path, tiny_transactions: pd.DataFrame
) -> None:
    tiny_transactions.to_parquet(tmp_path / "all.parquet", index=False)
    result = validate_transactions(tmp_path / "all.parquet")
    assert result.success, result.failure_message()
    assert FILE_DAY_CHECK not in [check.name for check in result.checks]


# --- injected violations -------------------------------------------------------------------


def test_negative_amounts(
    tmp_path: Path, tiny_transactions: pd.DataFrame, tiny_simulation: Simulation
) -> None:
    rows = [10, 1500, 3000]
    tiny_transactions.loc[rows, c.TX_AMOUNT] = [-5.0, -0.01, -120.0]
    result = validate_transactions(_write_days(tiny_transactions, tmp_path, tiny_simulation))
    assert _failed(result) == {"TX_AMOUNT ≥ 0"}
    check = result.check("TX_AMOUNT ≥ 0")
    assert check.expectation == "expect_column_values_to_be_between"
    assert check.column == c.TX_AMOUNT
    assert check.unexpected_count == 3
    assert check.examples == ("-5.0", "-0.01", "-120.0")
    assert [r["file"] for r in check.rows] == [_file_of(tiny_simulation, r) for r in rows]
    assert [r[c.TRANSACTION_ID] for r in check.rows] == [str(r) for r in rows]


def test_nan_and_infinite_amounts(
    tmp_path: Path, tiny_transactions: pd.DataFrame, tiny_simulation: Simulation
) -> None:
    tiny_transactions.loc[[20, 30], c.TX_AMOUNT] = np.nan
    tiny_transactions.loc[[40, 50], c.TX_AMOUNT] = [np.inf, -np.inf]
    result = validate_transactions(_write_days(tiny_transactions, tmp_path, tiny_simulation))
    assert _failed(result) == {"TX_AMOUNT not null", "TX_AMOUNT finite", "TX_AMOUNT ≥ 0"}
    not_null = result.check("TX_AMOUNT not null")
    assert (not_null.unexpected_count, not_null.examples) == (2, ("nan", "nan"))
    finite = result.check("TX_AMOUNT finite")
    assert (finite.unexpected_count, finite.examples) == (2, ("inf", "-inf"))
    positive = result.check("TX_AMOUNT ≥ 0")
    assert (positive.unexpected_count, positive.examples) == (1, ("-inf",))


def test_null_in_a_required_column(
    tmp_path: Path, tiny_transactions: pd.DataFrame, tiny_simulation: Simulation
) -> None:
    tiny_transactions[c.CUSTOMER_ID] = tiny_transactions[c.CUSTOMER_ID].astype("Int64")
    tiny_transactions.loc[[5, 6], c.CUSTOMER_ID] = pd.NA
    result = validate_transactions(_write_days(tiny_transactions, tmp_path, tiny_simulation))
    assert _failed(result) == {"CUSTOMER_ID not null"}
    check = result.check("CUSTOMER_ID not null")
    assert check.unexpected_count == 2
    assert check.examples == ("null", "null")
    assert [r[c.TRANSACTION_ID] for r in check.rows] == ["5", "6"]


def test_labels_outside_0_1(
    tmp_path: Path, tiny_transactions: pd.DataFrame, tiny_simulation: Simulation
) -> None:
    tiny_transactions.loc[[7, 8], c.TX_FRAUD] = np.array([2, -1], dtype=np.int8)
    result = validate_transactions(_write_days(tiny_transactions, tmp_path, tiny_simulation))
    assert _failed(result) == {"TX_FRAUD in {0, 1}"}
    check = result.check("TX_FRAUD in {0, 1}")
    assert (check.unexpected_count, check.examples) == (2, ("2", "-1"))


def test_duplicate_transaction_ids_across_files(
    tmp_path: Path, tiny_transactions: pd.DataFrame, tiny_simulation: Simulation
) -> None:
    tiny_transactions.loc[[3000], c.TRANSACTION_ID] = tiny_transactions[c.TRANSACTION_ID].iloc[15]
    result = validate_transactions(_write_days(tiny_transactions, tmp_path, tiny_simulation))
    assert _failed(result) == {"TRANSACTION_ID unique"}
    check = result.check("TRANSACTION_ID unique")
    assert (check.unexpected_count, check.examples) == (2, ("'15'", "'15'"))
    assert [r["file"] for r in check.rows] == [
        _file_of(tiny_simulation, 15), _file_of(tiny_simulation, 3000)
    ]
    assert check.rows[0]["file"] != check.rows[1]["file"]


def test_unparseable_timestamps_in_csv(tmp_path: Path, tiny_transactions: pd.DataFrame) -> None:
    tx = tiny_transactions.astype({c.TX_DATETIME: str})
    tx.loc[[100, 200], c.TX_DATETIME] = ["yesterday", "31/04/2018 10:00"]
    path = tmp_path / "transactions.csv"
    tx.to_csv(path, index=False)
    result = validate_transactions(path)
    assert _failed(result) == {"TX_DATETIME parseable as timestamp", "TX_DATETIME not null"}
    check = result.check("TX_DATETIME parseable as timestamp")
    assert check.expectation == "vigil.data.ingest conversion"
    assert check.unexpected_count == 2
    assert check.examples == ("'yesterday'", "'31/04/2018 10:00'")
    assert check.rows[0]["file"] == "transactions.csv"
    assert check.line().startswith(
        "✗ TX_DATETIME parseable as timestamp: 2 unexpected (0.0"
    )
    assert check.line().endswith("e.g. ['yesterday', '31/04/2018 10:00']")
    assert result.check("TX_DATETIME not null").unexpected_count == 2
    assert FILE_DAY_CHECK not in [ch.name for ch in result.checks]


def test_timestamp_outside_its_files_day(
    tmp_path: Path, tiny_transactions: pd.DataFrame, tiny_simulation: Simulation
) -> None:
    row = 1234
    # Move the transaction one day later everywhere (consistently), but not to another file.
    _add(tiny_transactions, row, c.TX_DATETIME, pd.Timedelta(days=1))
    _add(tiny_transactions, row, c.TX_TIME_SECONDS, c.SECONDS_PER_DAY)
    _add(tiny_transactions, row, c.TX_TIME_DAYS, 1)
    result = validate_transactions(_write_days(tiny_transactions, tmp_path, tiny_simulation))
    assert _failed(result) == {FILE_DAY_CHECK}
    check = result.check(FILE_DAY_CHECK)
    assert check.unexpected_count == 1
    assert check.examples == (str(tiny_transactions[c.TX_DATETIME].iloc[row]),)
    assert check.rows[0]["file"] == _file_of(tiny_simulation, row)
    assert check.rows[0][c.TRANSACTION_ID] == str(row)


def test_fraud_share_below_bounds(
    tmp_path: Path, tiny_transactions: pd.DataFrame, tiny_simulation: Simulation
) -> None:
    tiny_transactions[c.TX_FRAUD] = np.int8(0)
    result = validate_transactions(_write_days(tiny_transactions, tmp_path, tiny_simulation))
    assert _failed(result) == {SHARE_CHECK}
    check = result.check(SHARE_CHECK)
    assert check.expectation == "expect_column_mean_to_be_between"
    assert check.observed == 0.0


def test_fraud_share_above_configured_bound(
    tiny_daily_dir: Path, tiny_simulation: Simulation
) -> None:
    config = ValidationConfig(max_fraud_share=0.01)
    result = validate_transactions(tiny_daily_dir, config=config)
    name = "share of frauds (mean TX_FRAUD) in [0.0001, 0.01]"
    assert _failed(result) == {name}
    observed = result.check(name).observed
    assert observed == pytest.approx(tiny_simulation.transactions[c.TX_FRAUD].mean())
    assert isinstance(observed, float) and observed > 0.01


def test_time_days_inconsistent_with_seconds(
    tmp_path: Path, tiny_transactions: pd.DataFrame, tiny_simulation: Simulation
) -> None:
    _add(tiny_transactions, 60, c.TX_TIME_DAYS, 1)
    result = validate_transactions(_write_days(tiny_transactions, tmp_path, tiny_simulation))
    name = "TX_TIME_DAYS = TX_TIME_SECONDS // 86400"
    assert _failed(result) == {name}
    check = result.check(name)
    assert check.unexpected_count == 1
    assert check.examples == (str(tiny_transactions[c.TX_TIME_DAYS].iloc[60]),)
    assert check.rows[0][c.TX_TIME_SECONDS] == str(tiny_transactions[c.TX_TIME_SECONDS].iloc[60])


def test_time_seconds_inconsistent_with_datetime(
    tmp_path: Path, tiny_transactions: pd.DataFrame, tiny_simulation: Simulation
) -> None:
    _add(tiny_transactions, 70, c.TX_TIME_SECONDS, 5)
    result = validate_transactions(_write_days(tiny_transactions, tmp_path, tiny_simulation))
    assert _failed(result) == {ORIGIN_CHECK}
    check = result.check(ORIGIN_CHECK)
    assert check.unexpected_count == 1
    when = pd.Timestamp(tiny_transactions[c.TX_DATETIME].iloc[70])
    assert check.rows[0][c.TX_DATETIME] == str(when)
    assert check.rows[0]["expected"] == str(when + pd.Timedelta(seconds=5))


def test_empty_data_set_fails(tmp_path: Path, tiny_simulation: Simulation) -> None:
    write_daily(tiny_simulation.transactions.iloc[:0], tmp_path, date(2018, 4, 1), 3)
    result = validate_transactions(tmp_path)
    assert _failed(result) == {"row count ≥ 1", SHARE_CHECK}
    assert result.check("row count ≥ 1").observed == 0
    assert result.check(SHARE_CHECK).observed == "none"


def test_unreadable_data_raises_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "2018-04-01.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=f"^file {bad}: cannot read"):
        validate_transactions(tmp_path)


def test_require_valid(
    tmp_path: Path, tiny_daily_dir: Path, tiny_transactions: pd.DataFrame,
    tiny_simulation: Simulation,
) -> None:
    assert require_valid(tiny_daily_dir).success
    tiny_transactions.loc[[1, 2, 3], c.TX_AMOUNT] = -1.0
    folder = _write_days(tiny_transactions, tmp_path / "bad", tiny_simulation)
    with pytest.raises(ValidationFailed) as info:
        require_valid(folder, report_dir=tmp_path / "report")
    message, result = str(info.value), info.value.result
    assert isinstance(result, ValidationResult)
    assert message.startswith(f"1 of {len(result.checks)} checks failed on {folder}: ")
    assert "TX_AMOUNT ≥ 0: 3 unexpected" in message and "e.g. [-1.0, -1.0, -1.0]" in message
    assert (tmp_path / "report" / JSON_REPORT).exists()


def test_config_rejects_inverted_bounds() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"min_fraud_share 0\.5 > max_fraud_share"):
        ValidationConfig(min_fraud_share=0.5, max_fraud_share=0.1)
    with pytest.raises(pydantic.ValidationError):
        ValidationConfig(unknown=1)  # type: ignore[call-arg]


def test_reports(
    tmp_path: Path, tiny_transactions: pd.DataFrame, tiny_simulation: Simulation
) -> None:
    tiny_transactions.loc[[10, 11], c.TX_FRAUD] = 7
    result = validate_transactions(_write_days(tiny_transactions, tmp_path / "d", tiny_simulation))
    json_path, html_path = write_reports(result, tmp_path / "report")
    data = json.loads(json_path.read_text())
    assert data == json.loads(result.to_json())
    assert data["success"] is False
    assert data["failed"] == ["TX_FRAUD in {0, 1}"]
    failed = next(ch for ch in data["checks"] if not ch["success"])
    assert (failed["unexpected_count"], failed["examples"]) == (2, ["7", "7"])
    assert failed["rows"][0] == {
        "file": _file_of(tiny_simulation, 10), c.TRANSACTION_ID: "10", c.TX_FRAUD: "7"
    }
    assert data["summary"]["transactions"]["rows"] == len(tiny_transactions)
    assert data["config"]["max_fraud_share"] == 0.2
    page = html_path.read_text()
    assert page.startswith("<!doctype html>")
    assert "failed: 1 of" in page
    assert "✗ TX_FRAUD in {0, 1}" in page
    assert _file_of(tiny_simulation, 10) in page


# --- CLI -----------------------------------------------------------------------------------


def test_cli_clean_exits_0(tmp_path: Path, tiny_daily_dir: Path, run_vigil: RunVigil) -> None:
    report = tmp_path / "report"
    run = run_vigil("validate", "--transactions", tiny_daily_dir, "--report", report)
    assert run.exit_code == 0, run.stderr
    assert "checks passed" in run.stdout
    assert "  ✓ TX_AMOUNT ≥ 0\n" in run.stdout
    assert "✗" not in run.stdout
    assert json.loads((report / JSON_REPORT).read_text())["success"] is True
    assert "passed" in (report / HTML_REPORT).read_text()


def test_cli_violations_exit_1(
    tmp_path: Path, tiny_transactions: pd.DataFrame, tiny_simulation: Simulation,
    run_vigil: RunVigil,
) -> None:
    tiny_transactions.loc[[10, 1500, 3000], c.TX_AMOUNT] = -2.5
    folder = _write_days(tiny_transactions, tmp_path / "data", tiny_simulation)
    report = tmp_path / "report"
    run = run_vigil("validate", "--transactions", folder, "--report", report)
    assert run.exit_code == 1
    assert "✗ TX_AMOUNT ≥ 0: 3 unexpected" in run.stdout
    assert "validation failed: 1 of " in run.stderr
    assert "TX_AMOUNT ≥ 0: 3 unexpected" in run.stderr
    data = json.loads((report / JSON_REPORT).read_text())
    assert data["failed"] == ["TX_AMOUNT ≥ 0"]
    assert _file_of(tiny_simulation, 1500) in (report / HTML_REPORT).read_text()


def test_cli_unreadable_exits_2(tmp_path: Path, run_vigil: RunVigil) -> None:
    bad = tmp_path / "2018-04-01.parquet"
    bad.write_bytes(b"\x00\x01 garbage")
    run = run_vigil("validate", "--transactions", tmp_path)
    assert run.exit_code == 2
    assert f"\nerror: file {bad}: cannot read" in run.stderr
    assert "Traceback" not in run.stderr


def test_cli_missing_column_exits_2(
    tmp_path: Path, tiny_transactions: pd.DataFrame, run_vigil: RunVigil
) -> None:
    path = tmp_path / "tx.parquet"
    tiny_transactions.drop(columns=[c.TX_AMOUNT]).to_parquet(path, index=False)
    run = run_vigil("validate", "--transactions", path)
    assert run.exit_code == 2
    assert f"error: file {path}, column TX_AMOUNT: missing required column(s)" in run.stderr


def test_cli_fraud_share_options(tiny_daily_dir: Path, run_vigil: RunVigil) -> None:
    run = run_vigil("validate", "--transactions", tiny_daily_dir, "--max-fraud-share", "0.001")
    assert run.exit_code == 1
    assert "✗ share of frauds (mean TX_FRAUD) in [0.0001, 0.001]: observed 0.0" in run.stdout
    run = run_vigil("validate", "--transactions", tiny_daily_dir,
                    "--min-fraud-share", "0.5", "--max-fraud-share", "0.1")
    assert run.exit_code == 2
    assert "invalid fraud share bounds" in run.stderr
