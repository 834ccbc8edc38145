"""The evaluation report people read: curves and charts as PNGs, ``metrics.json`` and one HTML page.

``write_evaluation_report`` writes into ``out_dir``:

* ``roc_curve.png`` — ROC curve with the AUC, in full and zoomed on low false positive rates,
  with the operating point at the threshold when given;
* ``precision_recall_curve.png`` — precision against recall with the fraud rate as the
  no-skill line and the operating point at the threshold;
* ``score_distribution.png`` — score densities of genuine and fraudulent transactions on a
  log scale (frauds are under 1 % of transactions), the threshold as a vertical line;
* ``feature_importance.png`` — features by importance (LightGBM gain), largest on top;
* ``metrics.json`` — the metrics dict exactly as given (numpy scalars become plain numbers);
* ``report.html`` — a self-contained page: the metrics table and the four pictures embedded
  as base64, readable offline and as a single artifact in MLflow or KFP.

Matplotlib draws on explicit Agg canvases (``Figure`` + ``FigureCanvasAgg``), so nothing here
touches pyplot's global state or the process-wide backend.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import auc as area_under_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from vigil.evaluation.metrics import as_labels, as_scores, require_both_classes

ROC_PNG = "roc_curve.png"
PR_PNG = "precision_recall_curve.png"
SCORES_PNG = "score_distribution.png"
IMPORTANCE_PNG = "feature_importance.png"
METRICS_JSON = "metrics.json"
REPORT_HTML = "report.html"

#: Features shown in the importance chart (the rest are summed in the caption).
MAX_FEATURES_SHOWN = 30
#: Right edge of the low-FPR zoom of the ROC figure.
ROC_ZOOM_FPR = 0.05
_DPI = 110
_GENUINE_COLOR = "#4C72B0"
_FRAUD_COLOR = "#C44E52"
_THRESHOLD_COLOR = "#333333"


def _new_figure(width: float, height: float) -> Figure:
    # An explicit Agg canvas per figure: no pyplot, no process-wide backend switch.
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def _operating_point(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall (TPR) and FPR of the alerts ``score >= threshold``."""
    alert = s >= threshold
    tp = int(np.sum(alert & (y == 1)))
    fp = int(np.sum(alert & (y == 0)))
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    return {
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / n_pos,
        "fpr": fp / n_neg,
        "alerts": float(tp + fp),
    }


def _roc_figure(y: np.ndarray, s: np.ndarray, threshold: float | None, path: Path) -> Path:
    """Full ROC curve, and a zoom on low false positive rates, where a fraud system operates
    (alerting 1 % of genuine transactions already floods investigators)."""
    fpr, tpr, _ = roc_curve(y, s)
    auc = float(area_under_curve(fpr, tpr))
    op = _operating_point(y, s, threshold) if threshold is not None else None
    zoom = max(ROC_ZOOM_FPR, 2 * op["fpr"]) if op is not None else ROC_ZOOM_FPR
    fig = _new_figure(10.0, 4.8)
    full, low = fig.subplots(1, 2)
    for ax, xmax, title in ((full, 1.0, "ROC curve"), (low, zoom, f"ROC curve, FPR ≤ {zoom:.3g}")):
        ax.plot(fpr, tpr, color=_FRAUD_COLOR, lw=2, label=f"model (AUC = {auc:.3f})")
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="random (AUC = 0.5)")
        if op is not None:
            label = f"threshold {threshold:.3g}: TPR {op['recall']:.2f}, FPR {op['fpr']:.4f}"
            ax.plot(op["fpr"], op["recall"], "o", color=_THRESHOLD_COLOR, ms=7, label=label)
        ax.set(
            xlabel="false positive rate",
            ylabel="true positive rate (recall)",
            title=title,
            xlim=(0, xmax),
            ylim=(0, 1.01),
        )
        ax.grid(alpha=0.3)
    full.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _pr_figure(y: np.ndarray, s: np.ndarray, threshold: float | None, path: Path) -> Path:
    precision, recall, _ = precision_recall_curve(y, s)
    prevalence = float(y.mean())
    fig = _new_figure(5.5, 5.0)
    ax = fig.add_subplot()
    ax.step(recall, precision, where="post", color=_FRAUD_COLOR, lw=2, label="model")
    ax.axhline(
        prevalence, color="grey", ls="--", lw=1, label=f"no skill (fraud rate {prevalence:.2%})"
    )
    if threshold is not None:
        op = _operating_point(y, s, threshold)
        label = (
            f"threshold {threshold:.3g}: precision {op['precision']:.2f}, "
            f"recall {op['recall']:.2f}, {int(op['alerts']):,} alerts"
        )
        ax.plot(op["recall"], op["precision"], "o", color=_THRESHOLD_COLOR, ms=7, label=label)
    ax.set(
        xlabel="recall (share of frauds alerted)",
        ylabel="precision (share of alerts that are fraud)",
        title="Precision–recall curve",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def _scores_figure(y: np.ndarray, s: np.ndarray, threshold: float | None, path: Path) -> Path:
    lo, hi = float(s.min()), float(s.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 51).tolist()
    fig = _new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    for label, name, color in ((0, "genuine", _GENUINE_COLOR), (1, "fraud", _FRAUD_COLOR)):
        part = s[y == label]
        ax.hist(
            part,
            bins=bins,
            density=True,
            histtype="stepfilled",
            alpha=0.45,
            color=color,
            edgecolor=color,
            label=f"{name} ({part.size:,})",
        )
    if threshold is not None:
        ax.axvline(
            threshold, color=_THRESHOLD_COLOR, ls="--", lw=1.5, label=f"threshold {threshold:.3g}"
        )
    ax.set_yscale("log")
    ax.set(xlabel="score", ylabel="density (log scale)", title="Score distribution by class")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _importance_figure(importance: Mapping[str, float], path: Path) -> Path:
    items = sorted(importance.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = items[:MAX_FEATURES_SHOWN]
    hidden = items[MAX_FEATURES_SHOWN:]
    fig = _new_figure(7.5, max(2.5, 0.28 * len(shown) + 1.2))
    ax = fig.add_subplot()
    if shown:
        names = [name for name, _ in reversed(shown)]
        values = [value for _, value in reversed(shown)]
        ax.barh(names, values, color=_GENUINE_COLOR)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(alpha=0.3, axis="x")
    else:
        ax.text(0.5, 0.5, "no feature importances given", ha="center", va="center")
        ax.set_yticks([])
    title = "Feature importance (gain)"
    if hidden:
        title += f" — top {len(shown)}; {len(hidden)} more sum to {sum(v for _, v in hidden):.4g}"
    ax.set(xlabel="total gain", title=title)
    return _save(fig, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"metrics value {value!r} of type {type(value).__name__} is not JSON")


def _format_value(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) and abs(value) < 1e6 else f"{value:.6g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=_json_default)


def _html(
    metrics: Mapping[str, Any],
    threshold: float | None,
    pictures: list[tuple[str, Path]],
    n: int,
    n_frauds: int,
) -> str:
    rows = "\n".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_format_value(v))}</td></tr>"
        for k, v in metrics.items()
    )
    threshold_text = (
        f"decision threshold {threshold:.6g} (alert when score &ge; threshold)"
        if threshold is not None
        else "no decision threshold given"
    )
    figures = "\n".join(
        f'<figure id="{html.escape(path.stem)}"><img alt="{html.escape(caption)}" '
        f'data-file="{html.escape(path.name)}" '
        f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode("ascii")}">'
        f"<figcaption>{html.escape(caption)} · {html.escape(path.name)}</figcaption></figure>"
        for caption, path in pictures
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Vigil evaluation report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.8rem; text-align: left; }}
td {{ font-variant-numeric: tabular-nums; }}
.figures {{ display: flex; flex-wrap: wrap; gap: 1.5rem; }}
figure {{ margin: 0; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ font-size: 0.85rem; color: #555; }}
</style>
</head>
<body>
<h1>Evaluation report</h1>
<p>{n:,} transactions, {n_frauds:,} frauds ({n_frauds / n:.2%}); {threshold_text}.</p>
<h2>Metrics</h2>
<table>
{rows}
</table>
<h2>Figures</h2>
<div class="figures">
{figures}
</div>
</body>
</html>
"""


def write_evaluation_report(
    out_dir: Path | str,
    y_true: npt.ArrayLike,
    scores: npt.ArrayLike,
    feature_importance: Mapping[str, float],
    metrics: Mapping[str, Any],
    *,
    threshold: float | None = None,
) -> list[Path]:
    """Write the evaluation report into ``out_dir`` (created if missing); return the files.

    ``y_true``/``scores`` are the evaluated transactions (0/1 labels, higher score = more
    suspicious), ``feature_importance`` maps feature name to gain, ``metrics`` is written to
    ``metrics.json`` unchanged and shown in the HTML table, ``threshold`` (alert when
    ``score >= threshold``) is marked on the ROC and PR curves and the score distribution.
    Returns the paths in the order: the four PNGs, ``metrics.json``, ``report.html``.
    """
    y = as_labels(y_true)
    s = as_scores(scores, y.size)
    require_both_classes(y, "the evaluation report")
    if threshold is not None and not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    for name, value in feature_importance.items():
        if not math.isfinite(float(value)):
            raise ValueError(f"feature importance of {name!r} is not finite: {value}")
    # Serialise first: a metrics dict that is not JSON fails before any file is written.
    metrics_text = json.dumps(dict(metrics), indent=2, default=_json_default, allow_nan=False)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pictures = [
        ("ROC curve", _roc_figure(y, s, threshold, out / ROC_PNG)),
        ("Precision–recall curve", _pr_figure(y, s, threshold, out / PR_PNG)),
        ("Score distribution by class", _scores_figure(y, s, threshold, out / SCORES_PNG)),
        ("Feature importance (gain)", _importance_figure(feature_importance, out / IMPORTANCE_PNG)),
    ]
    metrics_path = out / METRICS_JSON
    metrics_path.write_text(metrics_text + "\n", encoding="utf-8")
    html_path = out / REPORT_HTML
    html_path.write_text(
        _html(metrics, threshold, pictures, int(y.size), int(y.sum())), encoding="utf-8"
    )
    return [path for _, path in pictures] + [metrics_path, html_path]
