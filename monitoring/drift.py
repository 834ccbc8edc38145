"""The drift job: served traffic (a window of the inference log) against the served model's
training set, with Evidently, exported to Prometheus through a Pushgateway.

What is compared (one Evidently ``Report``):

* every model input feature (``ValueDrift`` per column) and the share of drifted features
  (``DriftedColumnsCount`` over the features);
* the model's score (``ValueDrift`` of ``score``) and its decisions (``ValueDrift`` of the 0/1
  ``decision``: the decision rate), the reference's scored by the model itself.

Results are read by metric and column (the metric objects built here are the keys), never by
position in Evidently's output. A column's drift is "detected" exactly when Evidently's own drift
test for it fails. Methods and thresholds come from settings (``monitoring.drift_method``,
``monitoring.drift_threshold``, ``monitoring.drift_share``); unset, Evidently picks per column:
with more than 1,000 reference rows, the normed Wasserstein distance for numeric columns with more
than 5 distinct values and the Jensen-Shannon distance otherwise, both drifted at >= 0.1; with
1,000 rows or fewer, the Kolmogorov-Smirnov test (numeric) or chi-square / Z-test (few values),
drifted at p < 0.05. The data set drifts when at least ``drift_share`` (Evidently's default 0.5)
of the features drift.

Key features (Vigil's rule, beside Evidently's): the served model's *key features* are the fewest
features that together carry ``monitoring.drift_key_gain_share`` (0.5) of its LightGBM gain, the
booster's own ``feature_importance("gain")``; the drift of any one of them is reported as key
feature drift (``vigil_drift_key_feature_drift_detected``, an input of ``VigilDriftDetected``).
Evidently's share counts every feature alike, so a shift that moves only the few features the
model leans on most (a new fraud pattern in 2% of the traffic moves a terminal's risk, which
carried 28% of the benchmark champion's gain) stays far below half of the features; a feature
the model barely uses (``TX_DURING_WEEKEND``, which "drifts" in every one-day window) is not
key. Whether a feature drifted is still Evidently's per-column test. Without the booster's
importance (no registered model) there are no key features and no key feature drift.

Fewer than ``monitoring.drift_min_rows`` rows on either side is :class:`NotEnoughData`: no drift
figures are computed or pushed (only the row counts and the attempt time), so a quiet hour is never
a drift alarm.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import urllib.error
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import push_to_gateway, pushadd_to_gateway

from vigil import contract as c
from vigil.errors import DataError, VigilError

log = logging.getLogger(__name__)

PUSH_JOB: Final = "vigil_drift"
SCORE: Final = "score"
DECISION: Final = "decision"
#: The decision the inference log records for a transaction at or above the threshold.
FRAUD: Final = c.FRAUD_DECISION
_WINDOW = re.compile(r"^(?P<n>\d+)(?P<unit>[hd])$")


class NotEnoughData(VigilError):
    """Too few rows to compare: no drift figures, not a false alarm."""

    def __init__(self, message: str, *, current_rows: int, reference_rows: int):
        super().__init__(message)
        self.current_rows = current_rows
        self.reference_rows = reference_rows


@dataclasses.dataclass(frozen=True)
class DriftOptions:
    """How columns are compared (see the module docstring for Evidently's defaults)."""

    method: str | None = None
    threshold: float | None = None
    drift_share: float = 0.5
    min_rows: int = 1_000
    #: Key features: the fewest that carry this share of the model's gain (0: none).
    key_gain_share: float = 0.5


@dataclasses.dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    threshold: float
    score: float
    detected: bool


@dataclasses.dataclass(frozen=True)
class Window:
    """``[start, end)`` in transaction time (``TX_DATETIME``, naive UTC)."""

    start: datetime
    end: datetime

    def describe(self) -> str:
        return f"{self.start.isoformat()} .. {self.end.isoformat()}"


@dataclasses.dataclass(frozen=True)
class DriftResult:
    model_name: str
    model_version: int | None
    features: tuple[ColumnDrift, ...]
    score: ColumnDrift
    decision: ColumnDrift
    drifted_features: int
    drifted_share: float
    drift_share: float
    decision_rate_current: float
    decision_rate_reference: float
    current_rows: int
    reference_rows: int
    current_window: Window | None
    reference: str
    seconds: float
    finished_at: datetime
    #: The model's key features (:func:`key_features`), most important first; () when the
    #: model's feature importance was not given.
    key_features: tuple[str, ...] = ()

    @property
    def dataset_drift(self) -> bool:
        return self.drifted_share >= self.drift_share

    def drifted(self) -> list[str]:
        return [f.column for f in self.features if f.detected]

    def drifted_key_features(self) -> list[str]:
        drifted = set(self.drifted())
        return [f for f in self.key_features if f in drifted]

    @property
    def key_feature_drift(self) -> bool:
        return bool(self.drifted_key_features())

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["dataset_drift"] = self.dataset_drift
        out["drifted"] = self.drifted()
        out["key_feature_drift"] = self.key_feature_drift
        out["drifted_key_features"] = self.drifted_key_features()
        out["finished_at"] = self.finished_at.isoformat()
        if self.current_window is not None:
            out["current_window"] = {
                "start": self.current_window.start.isoformat(),
                "end": self.current_window.end.isoformat(),
            }
        return out


# --------------------------------------------------------------------------------- input


def parse_window(text: str, newest: datetime | None) -> Window:
    """A window of transaction time: ``YYYY-MM-DD`` (that day), ``YYYY-MM-DD..YYYY-MM-DD`` (both
    days included) or ``<n>d`` / ``<n>h`` (the last n days / hours up to the newest logged
    transaction ``newest``)."""
    text = text.strip()
    relative = _WINDOW.match(text)
    if relative:
        n = int(relative["n"])
        if n < 1:
            raise VigilError(f"window {text!r}: must be at least 1{relative['unit']}")
        if newest is None:
            raise NotEnoughData("the inference log holds no rows", current_rows=0,
                                reference_rows=0)
        span = timedelta(days=n) if relative["unit"] == "d" else timedelta(hours=n)
        end = newest + timedelta(microseconds=1)
        return Window(end - span, end)
    first, sep, last = text.partition("..")
    try:
        start_day = date.fromisoformat(first)
        end_day = date.fromisoformat(last) if sep else start_day
    except ValueError as e:
        raise VigilError(
            f"window {text!r}: expected YYYY-MM-DD, YYYY-MM-DD..YYYY-MM-DD, <n>d or <n>h"
        ) from e
    if end_day < start_day:
        raise VigilError(f"window {text!r}: ends before it starts")
    return Window(datetime.combine(start_day, datetime.min.time()),
                  datetime.combine(end_day + timedelta(days=1), datetime.min.time()))


def _dataset(path: str | Path) -> pads.Dataset:
    """Parquet files under ``path`` (a file or a folder, hive-partitioned like the inference
    log; ``_``/``.`` entries such as the log's journal are skipped)."""
    p = Path(str(path).removeprefix("file://")).expanduser()
    if not p.exists():
        raise DataError("does not exist", file=str(p))
    try:
        return pads.dataset(str(p), format="parquet", partitioning="hive",
                            exclude_invalid_files=True)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"cannot read as parquet: {e}", file=str(p)) from e


def newest_time(path: str | Path) -> datetime | None:
    """The newest ``TX_DATETIME`` in the parquet files under ``path`` (None when empty)."""
    ds = _dataset(path)
    if c.TX_DATETIME not in ds.schema.names:
        raise DataError(f"no {c.TX_DATETIME} column", file=str(path))
    column = ds.to_table(columns=[c.TX_DATETIME]).column(c.TX_DATETIME)
    if len(column) == 0 or column.null_count == len(column):
        return None
    value = pc.max(column).as_py()
    return value.replace(tzinfo=None) if value.tzinfo else value


def read_rows(
    path: str | Path,
    columns: Sequence[str],
    window: Window | None = None,
    model_version: int | None = None,
) -> pd.DataFrame:
    """``columns`` of the rows under ``path`` inside ``window`` (transaction time) and, when
    the files have a ``model_version`` column and ``model_version`` is given, of that version."""
    ds = _dataset(path)
    missing = [col for col in columns if col not in ds.schema.names]
    if missing:
        raise DataError(f"missing columns {missing} (have {ds.schema.names})", file=str(path))
    condition = None
    if window is not None:
        if c.TX_DATETIME not in ds.schema.names:
            raise DataError(f"no {c.TX_DATETIME} column to select a window", file=str(path))
        typ = ds.schema.field(c.TX_DATETIME).type
        tz = getattr(typ, "tz", None)
        start, end = (pd.Timestamp(t) for t in (window.start, window.end))
        if tz:
            start, end = start.tz_localize("UTC"), end.tz_localize("UTC")
        field = pads.field(c.TX_DATETIME)
        condition = (field >= pa.scalar(start, typ)) & (field < pa.scalar(end, typ))
    if model_version is not None and "model_version" in ds.schema.names:
        version = pads.field("model_version") == model_version
        condition = version if condition is None else condition & version
    return ds.to_table(columns=list(columns), filter=condition).to_pandas()


def decisions_of(frame: pd.DataFrame) -> np.ndarray:
    """0/1 decisions of inference-log rows (``decision`` is one of
    :data:`vigil.contract.DECISIONS`, or already 0/1); a value in neither is a
    :class:`DataError`, never read as a legit decision."""
    values = frame[DECISION]
    if values.dtype == object or str(values.dtype).startswith("string"):
        text = values.astype(str).to_numpy()
        unknown = sorted(set(text.tolist()) - set(c.DECISIONS))
        if unknown:
            raise DataError(f"decision values {unknown[:5]} are not the model server's "
                            f"{list(c.DECISIONS)}", column=DECISION)
        return (text == FRAUD).astype(np.int64)
    numbers = values.to_numpy().astype(np.int64)
    if not np.isin(numbers, (0, 1)).all():
        raise DataError(f"decision values {sorted(set(numbers.tolist()) - {0, 1})[:5]} are "
                        "not 0/1", column=DECISION)
    return numbers


# ------------------------------------------------------------------------------- compare


def key_features(importance: Mapping[str, float], gain_share: float) -> tuple[str, ...]:
    """The fewest features, most important first (ties by name), whose importance adds up to
    at least ``gain_share`` of the total; () for a share of 0 or a model without any gain."""
    if gain_share < 0 or gain_share > 1:
        raise VigilError(f"key feature gain share must be within 0..1, got {gain_share}")
    total = float(sum(max(float(v), 0.0) for v in importance.values()))
    if gain_share == 0 or total <= 0:
        return ()
    ranked = sorted(importance.items(), key=lambda kv: (-float(kv[1]), kv[0]))
    out: list[str] = []
    carried = 0.0
    for name, gain in ranked:
        if carried >= gain_share * total:
            break
        out.append(name)
        carried += max(float(gain), 0.0)
    return tuple(out)


def gain_importance(booster: Any) -> dict[str, float]:
    """A LightGBM booster's total gain per feature (its own ``feature_importance``)."""
    gains = booster.feature_importance(importance_type="gain")
    return {str(n): float(g) for n, g in zip(booster.feature_name(), gains, strict=True)}


def compare(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    feature_names: Sequence[str],
    options: DriftOptions,
    *,
    model_name: str,
    model_version: int | None = None,
    current_window: Window | None = None,
    reference_source: str = "",
    importance: Mapping[str, float] | None = None,
) -> tuple[DriftResult, Any]:
    """Evidently's report of ``current`` against ``reference`` (both with the features,
    ``score`` and 0/1 ``decision``); returns the result and Evidently's snapshot.
    ``importance`` (the model's gain per feature) names the key features."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    if len(current) < options.min_rows or len(reference) < options.min_rows:
        raise NotEnoughData(
            f"not enough data: {len(current):,} current and {len(reference):,} reference rows, "
            f"at least {options.min_rows:,} each needed (monitoring.drift_min_rows)",
            current_rows=len(current), reference_rows=len(reference),
        )
    t0 = time.perf_counter()
    columns = [*feature_names, SCORE, DECISION]
    definition = DataDefinition(numerical_columns=[*feature_names, SCORE],
                                categorical_columns=[DECISION])
    per_column = {
        col: ValueDrift(column=col, method=options.method, threshold=options.threshold)
        for col in columns
    }
    count = DriftedColumnsCount(columns=list(feature_names), drift_share=options.drift_share,
                                method=options.method, threshold=options.threshold)
    report = Report([count, *per_column.values()], include_tests=True)
    snapshot = report.run(
        current_data=Dataset.from_pandas(current[columns].reset_index(drop=True),
                                         data_definition=definition),
        reference_data=Dataset.from_pandas(reference[columns].reset_index(drop=True),
                                           data_definition=definition),
    )
    drifts = {col: _column_drift(snapshot, col, metric) for col, metric in per_column.items()}
    counted = snapshot.context.get_metric_result(count)
    result = DriftResult(
        model_name=model_name,
        model_version=model_version,
        features=tuple(drifts[f] for f in feature_names),
        score=drifts[SCORE],
        decision=drifts[DECISION],
        drifted_features=int(counted.count.value),
        drifted_share=float(counted.share.value),
        drift_share=options.drift_share,
        decision_rate_current=float(current[DECISION].mean()),
        decision_rate_reference=float(reference[DECISION].mean()),
        current_rows=len(current),
        reference_rows=len(reference),
        current_window=current_window,
        reference=reference_source,
        seconds=time.perf_counter() - t0,
        finished_at=datetime.now(UTC),
        key_features=key_features(
            {f: (importance or {}).get(f, 0.0) for f in feature_names}, options.key_gain_share
        ) if importance else (),
    )
    return result, snapshot


def _column_drift(snapshot: Any, column: str, metric: Any) -> ColumnDrift:
    result = snapshot.context.get_metric_result(metric)
    params = result.metric_value_location.metric.params
    tests = [t for t in result.tests if t.id == "drift"]
    if len(tests) != 1:
        raise VigilError(f"Evidently gave no drift test for column {column!r}")
    return ColumnDrift(
        column=column,
        method=str(params["method"]),
        threshold=float(params["threshold"]),
        score=float(result.value),
        detected=tests[0].status.value == "FAIL",
    )


# -------------------------------------------------------------------------------- output


def write_report(result: DriftResult, snapshot: Any, out_dir: Path) -> tuple[Path, Path]:
    """``report.html`` (Evidently's) and ``drift.json`` (this result plus Evidently's metrics)
    in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    html, js = out_dir / "report.html", out_dir / "drift.json"
    snapshot.save_html(str(html))
    body = {"vigil": result.to_dict(), "evidently": snapshot.dict()}
    js.write_text(json.dumps(body, indent=2, default=str) + "\n", encoding="utf-8")
    return html, js


def _gauges(registry: CollectorRegistry) -> dict[str, Gauge]:
    def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, doc, ["model_name", *labels], registry=registry)

    return {
        "feature_score": gauge(
            "vigil_drift_feature_score",
            "Drift score of one model input feature, served traffic against the training set "
            "(the method's statistic: a distance, or a p-value).", ["feature", "method"]),
        "feature_threshold": gauge(
            "vigil_drift_feature_threshold",
            "Threshold of the feature's drift method (distance >= it, or p-value < it, drifts).",
            ["feature", "method"]),
        "feature_detected": gauge(
            "vigil_drift_feature_detected",
            "1 when the feature's drift was detected in the last run, else 0.", ["feature"]),
        "drifted_share": gauge(
            "vigil_drift_drifted_features_share",
            "Share of the model's features whose drift was detected in the last run."),
        "drifted": gauge(
            "vigil_drift_drifted_features", "Features whose drift was detected in the last run."),
        "dataset": gauge(
            "vigil_drift_dataset_drift_detected",
            "1 when the drifted share reached the configured drift share, else 0."),
        "score": gauge(
            "vigil_drift_score_drift", "Drift score of the model's score.", ["method"]),
        "score_detected": gauge(
            "vigil_drift_score_drift_detected", "1 when the model's score drifted, else 0."),
        "decision": gauge(
            "vigil_drift_decision_drift", "Drift score of the model's 0/1 decisions.", ["method"]),
        "decision_detected": gauge(
            "vigil_drift_decision_drift_detected",
            "1 when the model's decision rate drifted, else 0."),
        "decision_rate": gauge(
            "vigil_drift_decision_rate", "Share of FRAUD decisions.", ["dataset"]),
        "key": gauge(
            "vigil_drift_key_feature", "1 for each of the model's key features (the fewest "
            "carrying monitoring.drift_key_gain_share of its gain).", ["feature"]),
        "key_detected": gauge(
            "vigil_drift_key_feature_drift_detected",
            "1 when any of the model's key features drifted in the last run, else 0."),
    }


def _bookkeeping(registry: CollectorRegistry) -> dict[str, Gauge]:
    return {
        "rows": Gauge("vigil_drift_rows", "Rows compared in the last run, by data set.",
                      ["model_name", "dataset"], registry=registry),
        "attempt": Gauge("vigil_drift_last_run_timestamp_seconds",
                         "When the drift job last ran (any outcome).", ["model_name"],
                         registry=registry),
        "enough": Gauge("vigil_drift_enough_data",
                        "1 when the last run had enough rows to compare, else 0.",
                        ["model_name"], registry=registry),
    }


def result_registry(result: DriftResult) -> CollectorRegistry:
    """A registry holding the drift metrics of ``result`` (what :func:`push` sends)."""
    registry = CollectorRegistry()
    g = _gauges(registry)
    b = _bookkeeping(registry)
    name = result.model_name
    for f in result.features:
        g["feature_score"].labels(name, f.column, f.method).set(f.score)
        g["feature_threshold"].labels(name, f.column, f.method).set(f.threshold)
        g["feature_detected"].labels(name, f.column).set(int(f.detected))
    g["drifted_share"].labels(name).set(result.drifted_share)
    g["drifted"].labels(name).set(result.drifted_features)
    g["dataset"].labels(name).set(int(result.dataset_drift))
    g["score"].labels(name, result.score.method).set(result.score.score)
    g["score_detected"].labels(name).set(int(result.score.detected))
    g["decision"].labels(name, result.decision.method).set(result.decision.score)
    g["decision_detected"].labels(name).set(int(result.decision.detected))
    g["decision_rate"].labels(name, "current").set(result.decision_rate_current)
    g["decision_rate"].labels(name, "reference").set(result.decision_rate_reference)
    for feature in result.key_features:
        g["key"].labels(name, feature).set(1)
    g["key_detected"].labels(name).set(int(result.key_feature_drift))
    b["rows"].labels(name, "current").set(result.current_rows)
    b["rows"].labels(name, "reference").set(result.reference_rows)
    finished = result.finished_at.timestamp()
    b["attempt"].labels(name).set(finished)
    b["enough"].labels(name).set(1)
    Gauge("vigil_drift_last_success_timestamp_seconds",
          "When the drift job last compared enough data successfully.", ["model_name"],
          registry=registry).labels(name).set(finished)
    return registry


def push(url: str, result: DriftResult, timeout_s: float = 10.0) -> None:
    """Replace the drift metrics of ``result.model_name`` on the Pushgateway at ``url``."""
    _send(push_to_gateway, url, result.model_name, result_registry(result), timeout_s)


def push_not_enough(url: str, error: NotEnoughData, model_name: str,
                    timeout_s: float = 10.0) -> None:
    """Record an attempt without enough data: row counts and the attempt time only; the last
    drift figures (and the last success time) stay as they were."""
    registry = CollectorRegistry()
    b = _bookkeeping(registry)
    b["rows"].labels(model_name, "current").set(error.current_rows)
    b["rows"].labels(model_name, "reference").set(error.reference_rows)
    b["attempt"].labels(model_name).set(time.time())
    b["enough"].labels(model_name).set(0)
    _send(pushadd_to_gateway, url, model_name, registry, timeout_s)


def _send(how: Any, url: str, model_name: str, registry: CollectorRegistry,
          timeout_s: float) -> None:
    try:
        how(url, job=PUSH_JOB, registry=registry, grouping_key={"model_name": model_name},
            timeout=timeout_s)
    except (urllib.error.URLError, OSError) as e:
        raise VigilError(f"cannot push drift metrics to the Pushgateway at {url}: {e}") from e


# ----------------------------------------------------------------------------------- job


@dataclasses.dataclass(frozen=True)
class DriftRun:
    result: DriftResult
    html: Path
    json: Path
    pushed_to: str | None


def run_job(
    *,
    model_name: str,
    log_root: str,
    reference: str,
    options: DriftOptions,
    out_root: Path,
    current_window: str = "1d",
    reference_window: str | None = None,
    registry: Any = None,
    version: int | None = None,
    pushgateway_url: str | None = None,
) -> DriftRun:
    """The whole job: read, compare, write, push. ``registry`` (a
    :class:`vigil.registry.Registry`) names the served model (``version``, default the
    champion): its features, its version's rows in the log, its training window of
    ``reference`` (unless ``reference_window``: a window, or ``all``) and its booster to score the
    reference when it has no ``score``. A :class:`NotEnoughData` is pushed as such and raised."""
    from feature_store.transforms import DEFAULT_SPEC

    card = None
    if registry is not None:
        card = (registry.get_card(model_name, version=version) if version is not None
                else registry.find(model_name, "champion"))
    features = tuple(card.feature_names) if card else tuple(DEFAULT_SPEC.features)
    served_version = card.version if card else version
    try:
        window = parse_window(current_window, newest_time(log_root))
        current = read_rows(log_root, [c.TX_DATETIME, *features, SCORE, DECISION], window,
                            model_version=served_version)
        current[DECISION] = decisions_of(current)
        ref_window: Window | None = None
        if reference_window and reference_window != "all":
            ref_window = parse_window(reference_window, newest_time(reference))
        elif reference_window is None and card is not None:
            ref_window = Window(
                datetime.combine(card.train_start, datetime.min.time()),
                datetime.combine(card.train_end + timedelta(days=1), datetime.min.time()),
            )
        booster = (registry.load_model(card.name, version=card.version).booster
                   if card is not None else None)
        ref = _reference(reference, features, ref_window, card, booster)
        what = f"{model_name} version {served_version}" if served_version else model_name
        if len(ref) == 0 and ref_window is not None:
            raise NotEnoughData(
                f"not enough data: {reference} holds no rows in {what}'s reference window "
                f"{ref_window.describe()}", current_rows=len(current), reference_rows=0)
        result, snapshot = compare(
            current, ref, features, options, model_name=model_name,
            model_version=served_version, current_window=window, reference_source=reference,
            importance=gain_importance(booster) if booster is not None else None,
        )
    except NotEnoughData as e:
        if pushgateway_url:
            push_not_enough(pushgateway_url, e, model_name)
        raise
    stamp = result.finished_at.strftime("%Y%m%dT%H%M%SZ")
    html, js = write_report(result, snapshot, out_root / model_name / stamp)
    if pushgateway_url:
        push(pushgateway_url, result)
    return DriftRun(result=result, html=html, json=js, pushed_to=pushgateway_url)


def _reference(path: str, features: Sequence[str], window: Window | None, card: Any,
               booster: Any) -> pd.DataFrame:
    names = _dataset(path).schema.names
    scored = SCORE in names and DECISION in names
    columns = [*features, SCORE, DECISION] if scored else list(features)
    frame = read_rows(path, columns, window)
    if scored:
        frame[DECISION] = decisions_of(frame)
        return frame
    if card is None or booster is None:
        raise VigilError(
            f"reference {path} has no {SCORE}/{DECISION} columns and no registered model can "
            "score it: register the model, or give an inference-log folder as the reference"
        )
    matrix = frame[list(card.feature_names)].to_numpy(dtype=np.float64)
    frame[SCORE] = np.asarray(booster.predict(matrix), dtype=np.float64) if len(frame) else []
    frame[DECISION] = (frame[SCORE] >= card.threshold).astype(np.int64)
    return frame
