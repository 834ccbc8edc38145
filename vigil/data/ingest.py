"""One reader for raw transactions: parquet or CSV, one file or a folder of (daily) files.

Columns are matched to the handbook's names case-insensitively. Ids arrive as ints or strings
and leave as strings (the canonical form of entity keys everywhere in Vigil). Anything that
cannot be read raises :class:`~vigil.errors.DataError` naming the file and the column.

``on_bad_values="null"`` is for the validation gate: values that do not convert become nulls
and are listed in :attr:`RawTransactions.coercions`, so the gate can report every problem
instead of stopping at the first.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from vigil import contract as c
from vigil.errors import DataError

log = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz")
_DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
#: Columns that writers add by accident (pandas index) and that carry no data.
_INDEX_ARTIFACTS = re.compile(r"^(__index_level_\d+__|unnamed: ?\d+|index|)$", re.IGNORECASE)
#: Integer ids as a CSV writer prints them once the column held a missing value: ``12.0``.
_FLOAT_TEXT_ID = r"-?\d+\.0+"
_EXAMPLES = 5

BadValues = Literal["raise", "null"]
#: Types of the columns of a file without rows (others: integers).
_EMPTY_TYPES: Final = {
    **{col: pa.string() for col in c.ID_COLUMNS},
    c.TX_DATETIME: pa.timestamp("us"),
    c.TX_AMOUNT: pa.float64(),
}


@dataclasses.dataclass(frozen=True)
class SourceFile:
    path: Path
    rows: int
    #: The calendar day in the file's name (``2018-04-01.parquet``), when it has one.
    day: date | None


@dataclasses.dataclass(frozen=True)
class Coercion:
    """Values of one column of one file that did not convert to the contract's type."""

    file: str
    column: str
    expected: str
    count: int
    examples: list[str]


@dataclasses.dataclass
class RawTransactions:
    frame: pd.DataFrame
    #: Source files in the order their rows appear in ``frame``.
    files: list[SourceFile]
    coercions: list[Coercion] = dataclasses.field(default_factory=list)

    def file_of_rows(self) -> np.ndarray:
        """Index into :attr:`files` for every row of :attr:`frame`."""
        return np.repeat(np.arange(len(self.files)), [f.rows for f in self.files])


def list_files(path: Path) -> list[Path]:
    """The transaction files at ``path`` (a file, or a folder read non-recursively, sorted)."""
    if not path.exists():
        raise DataError("no such file or folder", file=str(path))
    if path.is_file():
        if not _is_supported(path):
            raise DataError(
                f"unsupported file type; expected one of {PARQUET_SUFFIXES + CSV_SUFFIXES}",
                file=str(path),
            )
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and _is_supported(p))
    if not files:
        raise DataError(
            f"folder holds no {'/'.join(PARQUET_SUFFIXES + CSV_SUFFIXES)} files", file=str(path)
        )
    return files


def read_transactions(
    path: str | Path,
    *,
    require_labels: bool = True,
    on_bad_values: BadValues = "raise",
    allow_empty: bool = False,
    columns: Iterable[str] | None = None,
) -> RawTransactions:
    """Read raw transactions from a file or folder into the contract's types. Data without a
    single row is a :class:`DataError` unless ``allow_empty`` (the validation gate reads it to
    report it); a file without rows in a folder of daily files is a day without transactions.

    ``columns`` (contract names) limits the frame to the columns a job uses; the required
    columns must still be present in every file, but only these are converted."""
    wanted = None if columns is None else frozenset(columns)
    files = list_files(Path(path))
    frames: list[pd.DataFrame] = []
    sources: list[SourceFile] = []
    coercions: list[Coercion] = []
    required = c.REQUIRED_COLUMNS if require_labels else tuple(
        col for col in c.REQUIRED_COLUMNS if col != c.TX_FRAUD
    )
    together = _read_together(files)
    if together is not None:
        table, rows = together
    else:
        tables = [_read_table(file) for file in files]
        table, rows = None, [t.num_rows for t in tables]
    for file, n_rows in zip(files, rows, strict=True):
        match = _DATE_IN_NAME.search(file.name)
        day = _parse_day(match.group(1)) if match else None
        sources.append(SourceFile(path=file, rows=n_rows, day=day))
    if not allow_empty and not any(source.rows for source in sources):
        where = "" if Path(path).is_file() else f" in {len(files)} file{'s' * (len(files) > 1)}"
        raise DataError(f"holds no rows{where}", file=str(path))
    frame = None if table is None else _conform_together(table, Path(path), required, wanted)
    if frame is None:
        if together is not None:
            tables = [_read_table(file) for file in files]
        for file, file_table in zip(files, tables, strict=True):
            file_frame, file_coercions = _conform(
                file_table, file, required, on_bad_values, wanted
            )
            frames.append(file_frame)
            coercions.extend(file_coercions)
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return RawTransactions(frame=frame, files=sources, coercions=coercions)


def _read_together(files: list[Path]) -> tuple[pa.Table, list[int]] | None:
    """Parquet files of one schema (a folder of daily files) as one table, read in parallel
    across files, in file order, and the rows of each file. None when there is one file, any
    file is not parquet or not readable, or the schemas differ: then files are read one by
    one."""
    if len(files) < 2 or not all(f.name.lower().endswith(PARQUET_SUFFIXES) for f in files):
        return None
    try:
        schema = pq.read_schema(files[0])
        if any(not pq.read_schema(f).equals(schema) for f in files[1:]):
            return None
        dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
        fragments = list(dataset.get_fragments())
        rows = [fragment.count_rows() for fragment in fragments]
        table = dataset.to_table()  # fragments in the order given, as the scanner keeps it
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
        return None
    if [Path(f.path) for f in fragments] != files or table.num_rows != sum(rows):
        return None
    return table, rows


def _conform_together(
    table: pa.Table, path: Path, required: tuple[str, ...], wanted: frozenset[str] | None
) -> pd.DataFrame | None:
    """The files of :func:`_read_together` conformed as one table: the conversions and the
    frame are built once instead of once per file. None when any value does not convert:
    then each file is conformed on its own, so that a message names the file and the
    column."""
    try:
        frame, coercions = _conform(table, path, required, "null", wanted)
    except DataError:
        return None
    return None if coercions else frame


def _is_supported(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(PARQUET_SUFFIXES + CSV_SUFFIXES)


def _parse_day(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _read_table(file: Path) -> pa.Table:
    try:
        if file.name.lower().endswith(PARQUET_SUFFIXES):
            return pq.read_table(file)
        # Ids and timestamps are read as text and converted below, so that a single odd value
        # is reported as such instead of changing how the whole column is inferred.
        with pacsv.open_csv(file) as reader:  # reads the header and the first block only
            names = reader.schema.names
        as_text = {
            n: pa.string() for n in names if n.strip().upper() in (*c.ID_COLUMNS, c.TX_DATETIME)
        }
        return pacsv.read_csv(file, convert_options=pacsv.ConvertOptions(column_types=as_text))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
        raise DataError(f"cannot read: {e}", file=str(file)) from e


def _conform(
    table: pa.Table,
    file: Path,
    required: tuple[str, ...],
    on_bad_values: BadValues,
    wanted: frozenset[str] | None = None,
) -> tuple[pd.DataFrame, list[Coercion]]:
    by_contract: dict[str, str] = {}
    unknown: list[str] = []
    for name in table.column_names:
        key = name.strip().upper()
        if key in c.RAW_COLUMNS:
            if key in by_contract:
                raise DataError(
                    f"columns {by_contract[key]!r} and {name!r} both map to {key}",
                    file=str(file),
                    column=key,
                )
            by_contract[key] = name
        elif not _INDEX_ARTIFACTS.match(name.strip()):
            unknown.append(name)
    missing = [col for col in required if col not in by_contract]
    if missing:
        hint = f"; unknown columns present: {unknown}" if unknown else ""
        raise DataError(
            f"missing required column(s) {missing}{hint}", file=str(file), column=missing[0]
        )
    if unknown:
        log.warning("%s: ignoring columns not in the data contract: %s", file, unknown)

    out: dict[str, pd.Series | np.ndarray] = {}
    coercions: list[Coercion] = []
    for col in c.RAW_COLUMNS:
        if col not in by_contract or (wanted is not None and col not in wanted):
            continue
        array = table.column(by_contract[col])
        if pa.types.is_null(array.type) and not table.num_rows:
            # A CSV with a header only: nothing to infer the column's type from.
            array = array.cast(_EMPTY_TYPES.get(col, pa.int64()))
        if col in c.ID_COLUMNS:
            values, bad = _to_id(array, file, col)
        elif col == c.TX_DATETIME:
            values, bad = _to_timestamp(array, file, col)
        elif col == c.TX_AMOUNT:
            values, bad = _to_float(array, file, col)
        else:
            values, bad = _to_int(array, file, col)
        if bad is not None:
            if on_bad_values == "raise":
                raise DataError(
                    f"{bad.count} value(s) are not {bad.expected}, e.g. {bad.examples}",
                    file=str(file),
                    column=col,
                )
            coercions.append(bad)
        out[col] = values
    return pd.DataFrame(out), coercions


def _examples(values: Iterable[object]) -> list[str]:
    return [repr(v.item() if isinstance(v, np.generic) else v) for v in list(values)[:_EXAMPLES]]


def _kind_error(array: pa.ChunkedArray, file: Path, col: str, expected: str) -> DataError:
    return DataError(f"has type {array.type}, expected {expected}", file=str(file), column=col)


def _to_id(array: pa.ChunkedArray, file: Path, col: str) -> tuple[pd.Series, Coercion | None]:
    t = array.type
    if pa.types.is_integer(t):
        return _strings(_integers_as_text(array)), None
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        series = _strings(array.cast(pa.string()))
        stripped = series.str.strip()
        blank = stripped.eq("").fillna(False)
        stripped = stripped.mask(blank)
        present = stripped.dropna()
        if len(present) and present.str.fullmatch(_FLOAT_TEXT_ID).all():
            # Integer ids written as floats (CSV ids are read as text): "12.0" is id "12".
            stripped = stripped.str.replace(r"\.0+$", "", regex=True)
        bad = None
        if blank.any():
            bad = Coercion(str(file), col, "non-empty ids", int(blank.sum()), ["''"])
        return stripped, bad
    if pa.types.is_floating(t):
        # Integer ids become floats when a CSV writer meets a missing value.
        values = array.to_numpy()
        finite = np.isfinite(values)
        integral = finite & (np.floor(np.where(finite, values, 0)) == values)
        series = pd.Series(pd.array([None] * len(values), dtype="string[pyarrow]"))
        series[integral] = values[integral].astype(np.int64).astype(str)
        bad_mask = finite & ~integral
        bad = None
        if bad_mask.any():
            bad = Coercion(str(file), col, "integer or string ids", int(bad_mask.sum()),
                           _examples(values[bad_mask]))
        return series, bad
    raise _kind_error(array, file, col, "integer or string ids")


def _integers_as_text(array: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Integer ids as decimal text. Entity ids repeat (a customer's transactions): each distinct
    value is formatted once, then taken per row, which is several times faster than
    formatting every row."""
    values = array.combine_chunks()
    sample = values.slice(0, 10_000)
    if pc.count_distinct(sample).as_py() > len(sample) // 4:  # mostly distinct: transaction ids
        return values.cast(pa.string())
    encoded = pc.dictionary_encode(values)
    return encoded.dictionary.cast(pa.string()).take(encoded.indices)


def _strings(array: pa.Array | pa.ChunkedArray) -> pd.Series:
    return pd.Series(array.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get))


def _to_timestamp(
    array: pa.ChunkedArray, file: Path, col: str
) -> tuple[pd.Series, Coercion | None]:
    t = array.type
    if pa.types.is_timestamp(t):
        series = pd.Series(array.to_pandas())
        if series.dt.tz is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        return series.astype("datetime64[us]"), None
    if pa.types.is_date(t):
        return pd.Series(array.to_pandas()).astype("datetime64[us]"), None
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        raw = pd.Series(array.to_pandas())
        parsed = pd.to_datetime(raw, errors="coerce", format="ISO8601", utc=True)
        parsed = parsed.dt.tz_localize(None).astype("datetime64[us]")
        bad_mask = parsed.isna() & raw.notna()
        bad = None
        if bad_mask.any():
            bad = Coercion(str(file), col, "ISO-8601 timestamps", int(bad_mask.sum()),
                           _examples(raw[bad_mask]))
        return parsed, bad
    raise _kind_error(array, file, col, "timestamps (or ISO-8601 text)")


def _to_float(array: pa.ChunkedArray, file: Path, col: str) -> tuple[pd.Series, Coercion | None]:
    t = array.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return pd.Series(array.cast(pa.float64()).to_numpy(zero_copy_only=False)), None
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        raw = pd.Series(array.to_pandas())
        parsed = pd.to_numeric(raw, errors="coerce").astype("float64")
        bad_mask = parsed.isna() & raw.notna()
        bad = None
        if bad_mask.any():
            bad = Coercion(str(file), col, "numbers", int(bad_mask.sum()), _examples(raw[bad_mask]))
        return parsed, bad
    raise _kind_error(array, file, col, "numbers")


def _to_int(array: pa.ChunkedArray, file: Path, col: str) -> tuple[pd.Series, Coercion | None]:
    t = array.type
    dtype = "int8" if col in (c.TX_FRAUD, c.TX_FRAUD_SCENARIO) else "int64"
    if pa.types.is_boolean(t):
        array = array.cast(pa.int8())
        t = array.type
    if pa.types.is_integer(t):
        if array.null_count:
            return pd.Series(array.to_pandas()).astype("Int64"), None
        return pd.Series(array.to_numpy().astype(dtype)), None
    if pa.types.is_floating(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        raw = pd.Series(array.to_pandas())
        numeric = pd.to_numeric(raw, errors="coerce")
        integral = numeric.notna() & np.isfinite(numeric) & (numeric == np.floor(numeric))
        bad_mask = raw.notna() & ~integral
        result = pd.Series(pd.array([None] * len(raw), dtype="Int64"))
        result[integral] = numeric[integral].astype(np.int64)
        bad = None
        if bad_mask.any():
            examples = _examples(raw[bad_mask])
            bad = Coercion(str(file), col, "integers", int(bad_mask.sum()), examples)
        if not result.isna().any():
            return result.astype(np.dtype(dtype)), bad
        return result, bad
    raise _kind_error(array, file, col, "integers")
