"""Live performance from delayed labels: the inference log joined with the labels that have
arrived, scored with the evaluation code the pipeline's gate uses (:mod:`vigil.evaluation`).

For each served model version: AUC ROC, average precision and Card Precision@100 per day and
over the labelled window (CP@100: the handbook's mean over days, cards detected on earlier days
removed), and the realised decision cost (:func:`vigil.evaluation.metrics.decision_cost`: every
FRAUD decision costs ``alert_cost``, every missed fraud its amount). Next to them, the version's
evaluated figures from its registry card. Exported as ``vigil_live_*`` through a Pushgateway and
drawn as one PNG over time, the evaluated figures as dashed lines.

Like for like: every labelled served transaction counts (production does not leave out cards it
has not yet learnt are compromised), so the evaluated figures are the card's over every
transaction of the version's test window (``all_transactions_*``, written by the evaluate step),
not its handbook-protocol figures, which leave known-compromised cards out and read a few
hundredths lower. The handbook figures are kept alongside for reading. A card without
``all_transactions_*`` figures has no reference: nothing is exported as evaluated for it.

A day needs both classes for AUC/AP (else they are NaN for that day); the window needs at least
``min_labelled`` labelled rows with both classes, else :class:`NotEnoughLabels`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import urllib.error
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import push_to_gateway

from monitoring.drift import decisions_of
from vigil import contract as c
from vigil.errors import DataError, VigilError
from vigil.evaluation.metrics import (
    ALL_TRANSACTIONS,
    METRICS,
    SCORE_COLUMN,
    auc_roc,
    average_precision,
    card_precision_at_k,
    decision_cost,
)

PUSH_JOB: Final = "vigil_live"
LABEL_COLUMNS: Final = (c.TRANSACTION_ID, c.TX_FRAUD)
_LOG_COLUMNS: Final = (c.TRANSACTION_ID, c.TX_DATETIME, c.CUSTOMER_ID, c.TX_AMOUNT,
                       SCORE_COLUMN, "decision", "model_version")


class NotEnoughLabels(VigilError):  # the message says what is missing
    """Too few labelled served transactions (or one class only) to measure anything."""


@dataclasses.dataclass(frozen=True)
class DayFigures:
    day: str
    transactions: int
    frauds: int
    auc_roc: float
    average_precision: float
    card_precision_at_100: float
    decision_cost: float


@dataclasses.dataclass(frozen=True)
class LivePerformance:
    model_name: str
    model_version: int
    days: tuple[DayFigures, ...]
    auc_roc: float
    average_precision: float
    card_precision_at_100: float
    decision_cost: float
    decision_cost_per_transaction: float
    transactions: int
    frauds: int
    #: The reference: the version's evaluated figures over every transaction of its test
    #: window (registry card, ``all_transactions_*``), by metric name.
    evaluated: Mapping[str, float]
    finished_at: datetime
    #: Its evaluated figures under the handbook protocol (known-compromised cards left out).
    evaluated_handbook: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["evaluated"] = dict(self.evaluated)
        out["evaluated_handbook"] = dict(self.evaluated_handbook)
        out["finished_at"] = self.finished_at.isoformat()
        return out


def read_labels(path: str | Path) -> pd.DataFrame:
    """``TRANSACTION_ID, TX_FRAUD`` of the labels that arrived: parquet or CSV, a file or a folder
    (raw transaction files work: other columns are ignored). Ids as strings."""
    p = Path(path)
    if not p.exists():
        raise DataError("does not exist", file=str(p))
    files = sorted(q for q in (p.rglob("*") if p.is_dir() else [p])
                   if q.suffix in (".parquet", ".csv") and not q.name.startswith((".", "_")))
    if not files:
        raise DataError("no .parquet or .csv files", file=str(p))
    frames = []
    for f in files:
        try:
            frame = (pd.read_parquet(f) if f.suffix == ".parquet" else pd.read_csv(f))
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read labels: {e}", file=str(f)) from e
        missing = [col for col in LABEL_COLUMNS if col not in frame.columns]
        if missing:
            raise DataError(f"labels need columns {list(LABEL_COLUMNS)}", file=str(f),
                            column=", ".join(missing))
        frames.append(frame[list(LABEL_COLUMNS)])
    labels = pd.concat(frames, ignore_index=True)
    labels[c.TRANSACTION_ID] = labels[c.TRANSACTION_ID].astype(str)
    bad = ~labels[c.TX_FRAUD].isin((0, 1))
    if bad.any():
        raise DataError(f"labels must be 0/1, found {labels.loc[bad, c.TX_FRAUD].unique()[:5]}",
                        file=str(p), column=c.TX_FRAUD)
    return labels.drop_duplicates(c.TRANSACTION_ID, keep="last")


def read_log(root: str | Path) -> pd.DataFrame:
    """The columns the live figures need from the inference log under ``root``."""
    p = Path(str(root).removeprefix("file://")).expanduser()
    if not p.exists():
        raise DataError("inference log does not exist", file=str(p))
    ds = pads.dataset(str(p), format="parquet", partitioning="hive", exclude_invalid_files=True)
    missing = [col for col in _LOG_COLUMNS if col not in ds.schema.names]
    if missing:
        raise DataError(f"inference log lacks columns {missing}", file=str(p))
    frame = ds.to_table(columns=list(_LOG_COLUMNS)).to_pandas()
    frame[c.TRANSACTION_ID] = frame[c.TRANSACTION_ID].astype(str)
    # A transaction scored twice (a retried request) counts once: its last scoring.
    return frame.drop_duplicates([c.TRANSACTION_ID, "model_version"], keep="last")


def _nan_if_one_class(fn: Any, y: np.ndarray, s: np.ndarray) -> float:
    return float(fn(y, s)) if 0 < y.sum() < y.size else math.nan


def measure(
    log: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    model_name: str,
    model_version: int,
    evaluated: Mapping[str, float],
    alert_cost: float,
    min_labelled: int,
) -> LivePerformance:
    """The live figures of ``model_version``'s logged transactions that have labels;
    ``evaluated`` is its card's metrics (the reference: their ``all_transactions_*``)."""
    served = log[log["model_version"] == model_version]
    joined = served.merge(labels, on=c.TRANSACTION_ID, how="inner")
    y = joined[c.TX_FRAUD].to_numpy().astype(np.int8) if len(joined) else np.zeros(0, np.int8)
    if len(joined) < min_labelled or not 0 < y.sum() < y.size:
        raise NotEnoughLabels(
            f"not enough labels: {len(joined):,} of {len(served):,} transactions served by "
            f"{model_name} version {model_version} have labels ({int(y.sum())} frauds); at "
            f"least {min_labelled:,} with both classes needed (monitoring.live_min_labelled)"
        )
    joined = joined.sort_values(c.TX_DATETIME, kind="stable").reset_index(drop=True)
    day = joined[c.TX_DATETIME].dt.floor("D")
    joined[c.TX_TIME_DAYS] = (day - day.min()).dt.days
    scores = joined[SCORE_COLUMN].to_numpy(np.float64)
    alerts = decisions_of(joined).astype(np.int8)
    amounts = joined[c.TX_AMOUNT].to_numpy(np.float64)
    cp = card_precision_at_k(joined)
    per_day_cp = dict(zip(cp.days, cp.per_day, strict=True))
    days = []
    for d, idx in joined.groupby(c.TX_TIME_DAYS).indices.items():
        yd, sd = y[idx], scores[idx]
        days.append(DayFigures(
            day=str(day.iloc[idx[0]].date()),
            transactions=len(idx),
            frauds=int(yd.sum()),
            auc_roc=_nan_if_one_class(auc_roc, yd, sd),
            average_precision=_nan_if_one_class(average_precision, yd, sd),
            card_precision_at_100=float(per_day_cp[d]),
            decision_cost=decision_cost(yd, alerts[idx], amounts[idx],
                                        alert_cost=alert_cost).total,
        ))
    cost = decision_cost(y, alerts, amounts, alert_cost=alert_cost)
    return LivePerformance(
        model_name=model_name,
        model_version=model_version,
        days=tuple(days),
        auc_roc=auc_roc(y, scores),
        average_precision=average_precision(y, scores),
        card_precision_at_100=cp.mean,
        decision_cost=cost.total,
        decision_cost_per_transaction=cost.per_transaction,
        transactions=len(joined),
        frauds=int(y.sum()),
        evaluated=reference_of(evaluated),
        finished_at=datetime.now(UTC),
        evaluated_handbook={k: float(evaluated[k]) for k in METRICS if k in evaluated},
    )


def reference_of(card_metrics: Mapping[str, float]) -> dict[str, float]:
    """The figures live performance is compared with: the card's over every transaction of its
    test window, by metric name (empty for a card that does not record them)."""
    return {k: float(card_metrics[ALL_TRANSACTIONS + k]) for k in METRICS
            if ALL_TRANSACTIONS + k in card_metrics}


# ------------------------------------------------------------------------------ outputs


def draw(perf: LivePerformance, path: Path) -> Path:
    """Per-day AUC, AP and CP@100 over time; the evaluated figures as dashed lines."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5), dpi=100)
    ax = fig.subplots()
    x = pd.to_datetime([d.day for d in perf.days]).to_numpy()
    for key, label, colour in (("auc_roc", "AUC ROC", "tab:blue"),
                               ("average_precision", "AP", "tab:orange"),
                               ("card_precision_at_100", "CP@100", "tab:green")):
        ax.plot(x, [getattr(d, key) for d in perf.days], marker="o", color=colour,
                label=f"{label} live")
        if key in perf.evaluated:
            ax.axhline(perf.evaluated[key], color=colour, linestyle="--", linewidth=1,
                       label=f"{label} evaluated {perf.evaluated[key]:.3f} (whole test window)")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("metric")
    ax.set_title(f"{perf.model_name} version {perf.model_version}: live performance by day "
                 f"({perf.transactions:,} labelled transactions)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, ncols=2)
    fig.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def write(perf: LivePerformance, out_dir: Path) -> tuple[Path, Path]:
    png = draw(perf, out_dir / "performance.png")
    js = out_dir / "performance.json"
    js.write_text(json.dumps(perf.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    return png, js


def live_registry(perfs: Sequence[LivePerformance]) -> CollectorRegistry:
    """The ``vigil_live_*`` metrics of ``perfs`` (one per served version)."""
    registry = CollectorRegistry()
    labels = ["model_name", "model_version"]

    def gauge(name: str, doc: str) -> Gauge:
        return Gauge(name, doc, labels, registry=registry)

    live = {
        "auc_roc": gauge("vigil_live_auc_roc",
                         "AUC ROC of the served version's labelled transactions."),
        "average_precision": gauge(
            "vigil_live_average_precision",
            "Average precision of the served version's labelled transactions."),
        "card_precision_at_100": gauge(
            "vigil_live_card_precision_at_100",
            "Card Precision@100 of the served version's labelled days (mean over days)."),
    }
    evaluated = {
        "auc_roc": gauge("vigil_live_evaluated_auc_roc",
                         "AUC ROC of the version over every transaction of its test window "
                         "(registry card)."),
        "average_precision": gauge(
            "vigil_live_evaluated_average_precision",
            "Average precision of the version over every transaction of its test window "
            "(registry card)."),
        "card_precision_at_100": gauge(
            "vigil_live_evaluated_card_precision_at_100",
            "Card Precision@100 of the version over every transaction of its test window "
            "(registry card)."),
    }
    cost = gauge("vigil_live_decision_cost",
                 "Realised cost of the version's decisions on its labelled transactions: "
                 "alerts x alert cost + amounts of missed frauds.")
    cost_per = gauge("vigil_live_decision_cost_per_transaction",
                     "Realised decision cost per labelled transaction.")
    rows = gauge("vigil_live_labelled_transactions",
                 "Served transactions of the version whose labels have arrived.")
    frauds = gauge("vigil_live_labelled_frauds", "Frauds among them.")
    last_day = gauge("vigil_live_last_labelled_day_timestamp_seconds",
                     "Start of the newest day with labelled transactions (Unix time).")
    success = Gauge("vigil_live_last_success_timestamp_seconds",
                    "When the live-performance job last measured.", ["model_name"],
                    registry=registry)
    for p in perfs:
        key = (p.model_name, str(p.model_version))
        for name, g in live.items():
            g.labels(*key).set(getattr(p, name))
        for name, g in evaluated.items():
            if name in p.evaluated:
                g.labels(*key).set(p.evaluated[name])
        cost.labels(*key).set(p.decision_cost)
        cost_per.labels(*key).set(p.decision_cost_per_transaction)
        rows.labels(*key).set(p.transactions)
        frauds.labels(*key).set(p.frauds)
        last_day.labels(*key).set(pd.Timestamp(p.days[-1].day, tz="UTC").timestamp())
        success.labels(p.model_name).set(p.finished_at.timestamp())
    return registry


def push(url: str, model_name: str, perfs: Sequence[LivePerformance],
         timeout_s: float = 10.0) -> None:
    try:
        push_to_gateway(url, job=PUSH_JOB, registry=live_registry(perfs),
                        grouping_key={"model_name": model_name}, timeout=timeout_s)
    except (urllib.error.URLError, OSError) as e:
        raise VigilError(f"cannot push live metrics to the Pushgateway at {url}: {e}") from e


@dataclasses.dataclass(frozen=True)
class PerformanceRun:
    results: tuple[LivePerformance, ...]
    pngs: tuple[Path, ...]
    jsons: tuple[Path, ...]
    #: Why versions were not measured (not enough labels).
    skipped: tuple[str, ...]
    pushed_to: str | None


def run_job(*, model_name: str, log_root: str, labels: str, registry: Any,
            versions: Sequence[int] | None, alert_cost: float, min_labelled: int,
            out_root: Path, pushgateway_url: str | None) -> PerformanceRun:
    """Measure ``versions`` (default: every version in the log) of ``model_name``; write a PNG
    and a JSON per version; push them all."""
    log = read_log(log_root)
    arrived = read_labels(labels)
    wanted = sorted(set(versions) if versions else set(log["model_version"].unique().tolist()))
    if not wanted:
        raise NotEnoughLabels(f"not enough labels: the inference log {log_root} is empty")
    results, pngs, jsons, skipped = [], [], [], []
    for version in wanted:
        card = registry.get_card(model_name, version=int(version)) if registry else None
        try:
            perf = measure(log, arrived, model_name=model_name, model_version=int(version),
                           evaluated=dict(card.metrics) if card else {},
                           alert_cost=alert_cost, min_labelled=min_labelled)
        except NotEnoughLabels as e:
            skipped.append(str(e))
            continue
        stamp = perf.finished_at.strftime("%Y%m%dT%H%M%SZ")
        png, js = write(perf, out_root / model_name / f"v{version}" / stamp)
        results.append(perf)
        pngs.append(png)
        jsons.append(js)
    if not results:
        raise NotEnoughLabels("; ".join(skipped))
    if pushgateway_url:
        push(pushgateway_url, model_name, results)
    return PerformanceRun(tuple(results), tuple(pngs), tuple(jsons), tuple(skipped),
                          pushgateway_url)
