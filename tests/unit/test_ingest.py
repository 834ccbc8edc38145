"""The one reader for raw transactions: formats, layouts, id forms, and errors that name the file
and the column."""

from __future__ import annotations

import gzip
import itertools
import logging
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vigil import contract as c
from vigil.data import ingest
from vigil.data.ingest import read_transactions
from vigil.errors import DataError

pytestmark = pytest.mark.unit

EXPECTED_DTYPES = {
    c.TRANSACTION_ID: "string",
    c.TX_DATETIME: "datetime64[us]",
    c.CUSTOMER_ID: "string",
    c.TERMINAL_ID: "string",
    c.TX_AMOUNT: "float64",
    c.TX_TIME_SECONDS: "int64",
    c.TX_TIME_DAYS: "int64",
    c.TX_FRAUD: "int8",
    c.TX_FRAUD_SCENARIO: "int8",
}


def _canonical(tx: pd.DataFrame) -> pd.DataFrame:
    """What the reader returns for the simulator's frame: ids as strings."""
    out = tx.reset_index(drop=True).copy()
    for col in c.ID_COLUMNS:
        out[col] = out[col].astype(str).astype("string[pyarrow]")
    return out


@pytest.fixture
def sample(tiny_transactions: pd.DataFrame) -> pd.DataFrame:
    return tiny_transactions.iloc[:200].reset_index(drop=True)


# --- formats and layouts -------------------------------------------------------------------


def test_parquet_file(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = tmp_path / "tx.parquet"
    sample.to_parquet(path, index=False)
    raw = read_transactions(path)
    assert {col: str(t) for col, t in raw.frame.dtypes.items()} == EXPECTED_DTYPES
    pd.testing.assert_frame_equal(raw.frame, _canonical(sample))
    assert [(f.path, f.rows, f.day) for f in raw.files] == [(path, 200, None)]
    assert raw.coercions == []


@pytest.mark.parametrize("name", ["tx.csv", "tx.csv.gz"])
def test_csv_file(tmp_path: Path, sample: pd.DataFrame, name: str) -> None:
    path = tmp_path / name
    sample.to_csv(path, index=False)
    raw = read_transactions(path)
    assert {col: str(t) for col, t in raw.frame.dtypes.items()} == EXPECTED_DTYPES
    pd.testing.assert_frame_equal(raw.frame, _canonical(sample))
    assert raw.coercions == []


def test_csv_keeps_zero_padded_string_ids(tmp_path: Path, sample: pd.DataFrame) -> None:
    tx = sample.copy()
    tx[c.CUSTOMER_ID] = [f"C{i:05d}" for i in tx[c.CUSTOMER_ID]]
    tx[c.TERMINAL_ID] = [f"{i:06d}" for i in tx[c.TERMINAL_ID]]
    path = tmp_path / "tx.csv"
    tx.to_csv(path, index=False)
    frame = read_transactions(path).frame
    assert frame[c.CUSTOMER_ID].tolist() == tx[c.CUSTOMER_ID].tolist()
    assert frame[c.TERMINAL_ID].tolist() == tx[c.TERMINAL_ID].tolist()
    assert frame[c.TERMINAL_ID].iloc[0].startswith("0")


def test_folder_of_daily_files(tmp_path: Path, sample: pd.DataFrame) -> None:
    first, second = sample.iloc[:120], sample.iloc[120:]
    second.to_csv(tmp_path / "2018-04-02.csv", index=False)
    first.to_parquet(tmp_path / "2018-04-01.parquet", index=False)
    (tmp_path / "README.txt").write_text("not data")  # ignored: unsupported suffix
    (tmp_path / "nested").mkdir()  # ignored: folders are read non-recursively
    second.to_parquet(tmp_path / "nested" / "2018-04-03.parquet", index=False)

    raw = read_transactions(tmp_path)
    assert [(f.path.name, f.rows, f.day) for f in raw.files] == [
        ("2018-04-01.parquet", 120, date(2018, 4, 1)),
        ("2018-04-02.csv", 80, date(2018, 4, 2)),
    ]
    np.testing.assert_array_equal(raw.file_of_rows(), [0] * 120 + [1] * 80)
    pd.testing.assert_frame_equal(raw.frame, _canonical(sample))


def test_ids_as_ints_and_as_strings_read_the_same(tmp_path: Path, sample: pd.DataFrame) -> None:
    as_strings = sample.copy()
    for col in c.ID_COLUMNS:
        as_strings[col] = [f" {v} " for v in sample[col]]  # whitespace is stripped
    sample.to_parquet(tmp_path / "ints.parquet", index=False)
    as_strings.to_parquet(tmp_path / "strings.parquet", index=False)
    ints = read_transactions(tmp_path / "ints.parquet").frame
    strings = read_transactions(tmp_path / "strings.parquet").frame
    pd.testing.assert_frame_equal(ints, strings)
    assert ints[c.CUSTOMER_ID].iloc[0] == str(sample[c.CUSTOMER_ID].iloc[0])


def test_float_ids_from_a_csv_writer_that_met_missing_values(
    tmp_path: Path, sample: pd.DataFrame
) -> None:
    """pandas writes an integer column holding NaN as floats ("12.0"); ids must stay "12"."""
    tx = sample.copy()
    tx[c.CUSTOMER_ID] = tx[c.CUSTOMER_ID].astype("float64")
    tx.loc[[3, 7], c.CUSTOMER_ID] = np.nan
    path = tmp_path / "tx.csv"
    tx.to_csv(path, index=False)
    assert ".0," in path.read_text().splitlines()[1]  # the file really holds float text

    raw = read_transactions(path, on_bad_values="null")
    ids = raw.frame[c.CUSTOMER_ID]
    assert str(ids.dtype) == "string"
    expected = [str(v) for v in sample[c.CUSTOMER_ID]]
    assert ids.isna().sum() == 2
    assert ids.isna()[[3, 7]].all()
    assert ids.drop([3, 7]).tolist() == [e for i, e in enumerate(expected) if i not in (3, 7)]
    assert [(k.column, k.count) for k in raw.coercions] == [(c.CUSTOMER_ID, 2)]


def test_float_ids_in_parquet(tmp_path: Path, sample: pd.DataFrame) -> None:
    tx = sample.copy()
    tx[c.TERMINAL_ID] = tx[c.TERMINAL_ID].astype("float64")
    tx.loc[5, c.TERMINAL_ID] = np.nan
    tx.loc[6, c.TERMINAL_ID] = 12.5
    path = tmp_path / "tx.parquet"
    tx.to_parquet(path, index=False)
    with pytest.raises(DataError) as info:
        read_transactions(path)
    assert str(info.value) == (
        f"file {path}, column TERMINAL_ID: 1 value(s) are not integer or string ids, e.g. ['12.5']"
    )
    raw = read_transactions(path, on_bad_values="null")
    ids = raw.frame[c.TERMINAL_ID]
    assert ids.iloc[0] == str(sample[c.TERMINAL_ID].iloc[0])
    assert ids.isna()[[5, 6]].all() and ids.isna().sum() == 2


def test_column_names_in_other_letter_case(tmp_path: Path, sample: pd.DataFrame) -> None:
    renamed = sample.rename(columns={
        c.TRANSACTION_ID: "transaction_id", c.TX_AMOUNT: "Tx_Amount", c.TX_FRAUD: " tx_fraud "
    })
    path = tmp_path / "tx.parquet"
    renamed.to_parquet(path, index=False)
    raw = read_transactions(path)
    assert tuple(raw.frame.columns) == c.RAW_COLUMNS
    pd.testing.assert_frame_equal(raw.frame, _canonical(sample))


def test_optional_and_unknown_columns(
    tmp_path: Path, sample: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    tx = sample.drop(columns=[c.TX_FRAUD_SCENARIO]).assign(MERCHANT="m")
    path = tmp_path / "tx.csv"
    tx.to_csv(path)  # with the pandas index: an "Unnamed: 0"-style artifact
    with caplog.at_level(logging.WARNING, logger="vigil.data.ingest"):
        raw = read_transactions(path)
    assert tuple(raw.frame.columns) == tuple(
        col for col in c.RAW_COLUMNS if col != c.TX_FRAUD_SCENARIO
    )
    assert "ignoring columns not in the data contract: ['MERCHANT']" in caplog.text


def test_labels_optional_when_not_required(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = tmp_path / "tx.parquet"
    sample.drop(columns=[c.TX_FRAUD, c.TX_FRAUD_SCENARIO]).to_parquet(path, index=False)
    raw = read_transactions(path, require_labels=False)
    assert c.TX_FRAUD not in raw.frame.columns
    with pytest.raises(DataError, match=r"missing required column\(s\) \['TX_FRAUD'\]"):
        read_transactions(path)


def test_timezone_aware_timestamps_become_naive_utc(tmp_path: Path, sample: pd.DataFrame) -> None:
    tx = sample.copy()
    tx[c.TX_DATETIME] = tx[c.TX_DATETIME].dt.tz_localize("UTC").dt.tz_convert("Europe/Brussels")
    path = tmp_path / "tx.parquet"
    tx.to_parquet(path, index=False)
    frame = read_transactions(path).frame
    pd.testing.assert_series_equal(frame[c.TX_DATETIME], sample[c.TX_DATETIME])


def test_bad_values_become_nulls_and_are_listed(tmp_path: Path, sample: pd.DataFrame) -> None:
    tx = sample.astype({c.TX_DATETIME: str, c.TX_AMOUNT: object, c.TX_FRAUD: object})
    tx.loc[[2, 9, 11], c.TX_DATETIME] = ["yesterday", "2018-13-45", "soon"]
    tx.loc[4, c.TX_AMOUNT] = "12,50"
    tx.loc[5, c.TX_FRAUD] = "maybe"
    path = tmp_path / "tx.csv"
    tx.to_csv(path, index=False)

    raw = read_transactions(path, on_bad_values="null")
    found = {k.column: (k.count, k.examples, k.file) for k in raw.coercions}
    assert found == {
        c.TX_DATETIME: (3, ["'yesterday'", "'2018-13-45'", "'soon'"], str(path)),
        c.TX_AMOUNT: (1, ["'12,50'"], str(path)),
        c.TX_FRAUD: (1, ["'maybe'"], str(path)),
    }
    frame = raw.frame
    assert frame[c.TX_DATETIME].isna().sum() == 3
    assert np.isnan(frame[c.TX_AMOUNT].iloc[4])
    assert frame[c.TX_FRAUD].isna().tolist() == [i == 5 for i in range(len(frame))]


# --- errors name the file and the column ---------------------------------------------------


def test_error_missing_column(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = tmp_path / "2018-04-01.parquet"
    sample.drop(columns=[c.TX_AMOUNT]).rename(columns={c.TX_FRAUD: "label"}).to_parquet(
        path, index=False
    )
    with pytest.raises(DataError) as info:
        read_transactions(tmp_path)
    assert info.value.file == str(path)
    assert info.value.column == c.TX_AMOUNT
    assert str(info.value) == (
        f"file {path}, column TX_AMOUNT: missing required column(s) ['TX_AMOUNT', 'TX_FRAUD']; "
        "unknown columns present: ['label']"
    )


def test_error_unreadable_file(tmp_path: Path, sample: pd.DataFrame) -> None:
    sample.to_parquet(tmp_path / "2018-04-01.parquet", index=False)
    bad = tmp_path / "2018-04-02.parquet"
    bad.write_bytes(b"\x00garbage, not parquet\xff" * 10)
    with pytest.raises(DataError) as info:
        read_transactions(tmp_path)
    assert info.value.file == str(bad)
    assert str(info.value).startswith(f"file {bad}: cannot read: ")


def test_error_unreadable_gzip_csv(tmp_path: Path) -> None:
    bad = tmp_path / "tx.csv.gz"
    bad.write_bytes(b"plain text is not gzip")
    with pytest.raises(DataError, match=f"^file {bad}: cannot read: "):
        read_transactions(bad)


def test_error_non_numeric_amounts(tmp_path: Path, sample: pd.DataFrame) -> None:
    tx = sample.astype({c.TX_AMOUNT: object})
    tx.loc[[0, 1, 2], c.TX_AMOUNT] = ["ten", "n/a", "1.2.3"]
    path = tmp_path / "tx.csv"
    tx.to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        read_transactions(path)
    assert (info.value.file, info.value.column) == (str(path), c.TX_AMOUNT)
    assert str(info.value) == (
        f"file {path}, column TX_AMOUNT: 3 value(s) are not numbers, "
        "e.g. [\"'ten'\", \"'n/a'\", \"'1.2.3'\"]"
    )


def test_error_column_of_the_wrong_kind(tmp_path: Path, sample: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(sample, preserve_index=False)
    table = table.set_column(
        table.schema.get_field_index(c.TX_DATETIME), c.TX_DATETIME,
        pa.array([True] * len(sample)),
    )
    path = tmp_path / "tx.parquet"
    pq.write_table(table, path)
    for mode in ("raise", "null"):
        with pytest.raises(DataError) as info:
            read_transactions(path, on_bad_values=mode)
        assert str(info.value) == (
            f"file {path}, column TX_DATETIME: has type bool, "
            "expected timestamps (or ISO-8601 text)"
        )


def test_error_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("no data here")
    with pytest.raises(DataError) as info:
        read_transactions(tmp_path)
    assert str(info.value) == (
        f"file {tmp_path}: folder holds no .parquet/.pq/.csv/.csv.gz files"
    )


def test_error_unsupported_suffix(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = tmp_path / "tx.json"
    sample.to_json(path)
    with pytest.raises(DataError) as info:
        read_transactions(path)
    assert str(info.value).startswith(f"file {path}: unsupported file type; expected one of (")


def test_error_no_such_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"^file {tmp_path / 'nope'}: no such file or folder$"):
        read_transactions(tmp_path / "nope")


def test_error_duplicate_columns_differing_by_case(tmp_path: Path, sample: pd.DataFrame) -> None:
    tx = sample.assign(tx_amount=sample[c.TX_AMOUNT])
    path = tmp_path / "tx.parquet"
    tx.to_parquet(path, index=False)
    with pytest.raises(DataError) as info:
        read_transactions(path)
    assert (info.value.file, info.value.column) == (str(path), c.TX_AMOUNT)
    assert str(info.value) == (
        f"file {path}, column TX_AMOUNT: columns 'TX_AMOUNT' and 'tx_amount' both map to TX_AMOUNT"
    )


def test_error_blank_ids(tmp_path: Path, sample: pd.DataFrame) -> None:
    tx = sample.astype({c.TERMINAL_ID: str})
    tx.loc[[1, 2], c.TERMINAL_ID] = "   "
    path = tmp_path / "tx.parquet"
    tx.to_parquet(path, index=False)
    with pytest.raises(DataError, match=f"^file {path}, column TERMINAL_ID: 2 value"):
        read_transactions(path)
    raw = read_transactions(path, on_bad_values="null")
    assert raw.frame[c.TERMINAL_ID].isna().sum() == 2


def test_gzip_csv_is_really_decompressed(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = tmp_path / "tx.csv.gz"
    with gzip.open(path, "wt") as f:
        sample.to_csv(f, index=False)
    assert read_transactions(path).frame[c.TX_AMOUNT].sum() == pytest.approx(
        sample[c.TX_AMOUNT].sum()
    )


def test_error_no_rows(tmp_path: Path, sample: pd.DataFrame) -> None:
    """Issue 14: a CSV with a header only was reported as "column TX_AMOUNT: has type null"."""
    path = tmp_path / "empty.csv"
    sample.iloc[:0].to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        read_transactions(path)
    assert str(info.value) == f"file {path}: holds no rows"
    empty_parquet = tmp_path / "empty.parquet"
    sample.iloc[:0].to_parquet(empty_parquet, index=False)
    with pytest.raises(DataError, match="holds no rows"):
        read_transactions(empty_parquet)


def test_days_without_rows_in_a_folder(tmp_path: Path, sample: pd.DataFrame) -> None:
    """A day with a header only counts as a day without transactions; a folder without any
    row is an error; the validation gate reads empty data (and reports it)."""
    sample.to_csv(tmp_path / "2018-04-01.csv", index=False)
    sample.iloc[:0].to_csv(tmp_path / "2018-04-02.csv", index=False)
    raw = read_transactions(tmp_path)
    assert [f.rows for f in raw.files] == [200, 0]
    assert {col: str(t) for col, t in raw.frame.dtypes.items()} == EXPECTED_DTYPES
    pd.testing.assert_frame_equal(raw.frame, _canonical(sample))
    empty = tmp_path / "empty"
    empty.mkdir()
    sample.iloc[:0].to_csv(empty / "2018-04-02.csv", index=False)
    with pytest.raises(DataError, match=f"^file {empty}: holds no rows in 1 file"):
        read_transactions(empty)
    gate = read_transactions(empty, on_bad_values="null", allow_empty=True)
    assert len(gate.frame) == 0
    assert {col: str(t) for col, t in gate.frame.dtypes.items()} == EXPECTED_DTYPES


def test_a_bad_value_in_a_folder_of_one_schema_names_its_file(
    tmp_path: Path, sample: pd.DataFrame
) -> None:
    """Daily files of one schema are conformed together; a value that does not convert is
    still reported with the file it is in."""
    tx = sample.astype({c.TX_AMOUNT: str})
    tx.loc[150, c.TX_AMOUNT] = "ten"
    first, second = tmp_path / "2018-04-01.parquet", tmp_path / "2018-04-02.parquet"
    tx.iloc[:100].to_parquet(first, index=False)
    tx.iloc[100:].to_parquet(second, index=False)
    with pytest.raises(DataError) as info:
        read_transactions(tmp_path)
    assert (info.value.file, info.value.column) == (str(second), c.TX_AMOUNT)
    tx.loc[150, c.TX_AMOUNT] = "10"
    tx.iloc[100:].to_parquet(second, index=False)
    raw = read_transactions(tmp_path)
    assert raw.frame[c.TX_AMOUNT].tolist() == sample[c.TX_AMOUNT].where(
        sample.index != 150, 10.0).tolist()
    assert [f.rows for f in raw.files] == [100, 100]


def test_many_daily_parquet_files_read_together_keep_file_order(
    tmp_path: Path, tiny_transactions: pd.DataFrame
) -> None:
    """Daily parquet files of one schema are read in parallel: rows still come in file order,
    each file's rows in its own order, with an empty day among them."""
    tx = tiny_transactions.sample(frac=1.0, random_state=1).reset_index(drop=True)
    bounds = np.linspace(0, len(tx), 41).astype(int)
    for day, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        part = tx.iloc[lo:hi] if day != 7 else tx.iloc[:0]
        part.to_parquet(tmp_path / f"part-{day:03d}.parquet", index=False)
    assert ingest._read_together(ingest.list_files(tmp_path)) is not None
    raw = read_transactions(tmp_path)
    kept = np.concatenate([np.arange(lo, hi) for day, (lo, hi)
                           in enumerate(itertools.pairwise(bounds)) if day != 7])
    assert [f.rows for f in raw.files][6:9] == [bounds[7] - bounds[6], 0, bounds[9] - bounds[8]]
    pd.testing.assert_frame_equal(raw.frame, _canonical(tx.iloc[kept]))


def test_only_the_columns_a_job_uses_are_converted(tmp_path: Path, sample: pd.DataFrame) -> None:
    sample.to_parquet(tmp_path / "2018-04-01.parquet", index=False)
    sample.to_parquet(tmp_path / "2018-04-02.parquet", index=False)
    wanted = [c.TRANSACTION_ID, c.TX_DATETIME, c.TX_AMOUNT]
    raw = read_transactions(tmp_path, columns=wanted)
    assert list(raw.frame.columns) == wanted
    expected = _canonical(pd.concat([sample, sample]))[wanted]
    pd.testing.assert_frame_equal(raw.frame, expected)
    # required columns must still be there
    sample.drop(columns=[c.TX_TIME_DAYS]).to_parquet(tmp_path / "2018-04-02.parquet", index=False)
    with pytest.raises(DataError, match="missing required column"):
        read_transactions(tmp_path, columns=wanted)
