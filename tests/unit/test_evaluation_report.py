"""The evaluation report: pictures, metrics.json and a self-contained HTML page."""

from __future__ import annotations

import base64
import json
import re
import struct
import sys
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest

from vigil.evaluation.metrics import choose_threshold
from vigil.evaluation.report import write_evaluation_report

pytestmark = pytest.mark.unit

Written = tuple[Path, list[Path], dict[str, Any], float]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PICTURES = (
    "roc_curve.png",
    "precision_recall_curve.png",
    "score_distribution.png",
    "feature_importance.png",
)


def _scored(n: int = 5_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.01).astype(int)
    y[:3] = 1  # at least a few frauds whatever the seed
    logits = rng.normal(-4, 1.5, n) + y * rng.normal(3.5, 1.5, n)
    return y, 1 / (1 + np.exp(-logits))


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    y, s = _scored()
    metrics: dict[str, Any] = {
        "auc_roc": np.float64(0.8712),
        "average_precision": 0.61,
        "card_precision_at_100": 0.29,
        "n_transactions": np.int64(len(y)),
        "card_precision_per_day": [0.3, 0.28],
        "model": "lightgbm",
    }
    importance = {
        "TX_AMOUNT": 1200.5,
        "TERMINAL_ID_RISK_7DAY_WINDOW": 900.0,
        "TX_DURING_NIGHT": 3.0,
    }
    threshold = choose_threshold(y, s).threshold
    out = tmp_path_factory.mktemp("evaluation") / "report"  # does not exist yet
    paths = write_evaluation_report(out, y, s, importance, metrics, threshold=threshold)
    return out, paths, metrics, threshold


def test_report_writes_every_file(written: Written) -> None:
    out, paths, _, _ = written
    assert [p.name for p in paths] == [*PICTURES, "metrics.json", "report.html"]
    assert all(p.parent == out and p.is_file() for p in paths)


def test_pictures_are_real_pngs(written: Written) -> None:
    out, _, _, _ = written
    for name in PICTURES:
        data = (out / name).read_bytes()
        width, height = _png_size(data)
        assert width >= 300 and height >= 200, name
        assert len(data) > 10_000, f"{name} is suspiciously small ({len(data)} bytes)"
        assert data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"), f"{name} is truncated"


def test_metrics_json_round_trips(written: Written) -> None:
    out, _, metrics, _ = written
    loaded = json.loads((out / "metrics.json").read_text())
    assert loaded == metrics
    assert type(loaded["n_transactions"]) is int  # numpy scalars became plain numbers


def test_html_embeds_each_picture_and_the_metrics(written: Written) -> None:
    out, _, metrics, threshold = written
    page = (out / "report.html").read_text()
    for name in PICTURES:
        match = re.search(
            rf'data-file="{re.escape(name)}" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page
        )
        assert match, f"{name} is not embedded"
        assert base64.b64decode(match.group(1)) == (out / name).read_bytes()
    for key in metrics:
        assert f"<th>{key}</th>" in page
    assert "<td>0.8712</td>" in page and "<td>lightgbm</td>" in page
    assert f"decision threshold {threshold:.6g}" in page
    # Self-contained: nothing is fetched from elsewhere.
    assert not re.search(r'(src|href)="(?!data:)', page)


def test_report_without_threshold_and_with_many_features(tmp_path: Path, written: Written) -> None:
    with_threshold, _, _, _ = written
    y, s = _scored()  # the same data as the report with a threshold
    importance = {f"feature_{i:02d}": float(i) for i in range(45)}
    paths = write_evaluation_report(tmp_path, y, s, importance, {"auc_roc": 0.9})
    assert len(paths) == 6
    page = (tmp_path / "report.html").read_text()
    assert "no decision threshold given" in page
    _png_size((tmp_path / "feature_importance.png").read_bytes())
    # The threshold marks are drawn: the same curves without one give different pictures.
    for name in ("roc_curve.png", "precision_recall_curve.png", "score_distribution.png"):
        assert (tmp_path / name).read_bytes() != (with_threshold / name).read_bytes(), name


def test_report_rejects_bad_input_before_writing(tmp_path: Path) -> None:
    y, s = _scored()
    with pytest.raises(ValueError, match="single class"):
        write_evaluation_report(tmp_path / "x", np.zeros_like(y), s, {}, {})
    with pytest.raises(TypeError, match="not JSON"):
        write_evaluation_report(tmp_path / "y", y, s, {}, {"bad": object()})
    with pytest.raises(ValueError, match="threshold must be finite"):
        write_evaluation_report(tmp_path / "z", y, s, {}, {}, threshold=float("nan"))
    assert not any((tmp_path / d).exists() for d in ("x", "y", "z"))


def test_report_leaves_global_matplotlib_state_alone(tmp_path: Path) -> None:
    # dict.__getitem__: reading rcParams["backend"] normally may resolve (and import) a backend.
    backend = dict.__getitem__(matplotlib.rcParams, "backend")
    had_pyplot = "matplotlib.pyplot" in sys.modules
    y, s = _scored(n=500)
    write_evaluation_report(tmp_path, y, s, {"x": 1.0}, {})
    assert dict.__getitem__(matplotlib.rcParams, "backend") == backend
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot
