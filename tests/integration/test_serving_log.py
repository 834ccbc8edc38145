"""The inference log: rotated parquet files, flushed on graceful shutdown, failed writes kept."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from feature_store.names import FEATURE_SERVICE
from feature_store.transforms import DEFAULT_SPEC
from inference import log as inference_log
from inference.log import InferenceLog
from inference.schema import Transaction
from inference.scoring import ScoredBatch
from vigil import contract as c

pytestmark = pytest.mark.integration


def until(predicate, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for: {what}"
        time.sleep(0.1)


def test_rotation_and_flush_on_sigterm(serving_model, online_store, server_factory, tmp_path,
                                       tx_instance, read_log):
    store = online_store(serving={"log_rotate_rows": 10, "log_rotate_seconds": 3600})
    log_root = tmp_path / "log"
    server = server_factory(config=store.config, extra_args=["--log-root", str(log_root)])
    rows = serving_model.live.iloc[:35]
    instances = [tx_instance(row) for _, row in rows.iterrows()]
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for start in (0, 10, 20):  # three batches of 10: each fills the buffer up to the limit
            response = http.post("/v1/models/fraud:predict",
                                 json={"instances": instances[start : start + 10]})
            assert response.status_code == 200
        # Rotation by rows happens while serving.
        until(lambda: len(read_log(log_root)) == 30, "30 rows written while serving")
        response = http.post("/v1/models/fraud:predict", json={"instances": instances[30:]})
        assert response.status_code == 200
    assert server.stop() == 0
    files = sorted(log_root.rglob("*.parquet"), key=lambda f: f.stem.rsplit("-", 1)[1])
    assert all(f.parent.name.startswith("date=2") for f in files)
    # The 5 rows below the rotation limit were written by the graceful shutdown, alone.
    assert len(pd.read_parquet(files[-1])) == 5
    log = read_log(log_root)
    assert sorted(log[c.TRANSACTION_ID]) == sorted(rows[c.TRANSACTION_ID].astype(str))
    assert not list(log_root.rglob("*.tmp"))


def test_rotation_by_time(serving_model, online_store, server_factory, tmp_path, tx_instance,
                          read_log):
    store = online_store(serving={"log_rotate_rows": 100_000, "log_rotate_seconds": 1})
    log_root = tmp_path / "log"
    server = server_factory(config=store.config, extra_args=["--log-root", str(log_root)])
    row = serving_model.live.iloc[40]
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.post("/v1/models/fraud:predict",
                         json={"instances": [tx_instance(row)]}).status_code == 200
    until(lambda: len(read_log(log_root)) == 1, "a file written by age while serving")
    assert server.process.poll() is None


def batch(n: int, logged_at_us: int, first: int = 0) -> ScoredBatch:
    features = {name: np.arange(n, dtype=np.float64) for name in DEFAULT_SPEC.features}
    return ScoredBatch(
        transactions=[Transaction(f"t{i}", 1_527_000_000_000_000 + i, "c", "t", 1.0)
                      for i in range(first, first + n)],
        request_ids=["r"] * n,
        features=features,
        scores=np.full(n, 0.5),
        decisions=["fraud"] * n,
        degraded_reason=None,
        customer_freshness=["PRESENT"] * n,
        terminal_freshness=["PRESENT"] * n,
        model_name="fraud",
        model_version=3,
        feature_service=FEATURE_SERVICE,
        threshold=0.4,
        logged_at_us=logged_at_us,
    )


def test_failed_writes_keep_the_rows_until_a_write_succeeds(tmp_path, read_log):
    log = InferenceLog(tmp_path, feature_names=DEFAULT_SPEC.features, model_name="fraud",
                       rotate_rows=10_000, rotate_seconds=3600, flush_s=0.05)
    logged_at = 1_700_000_000_000_000
    blocker = tmp_path / "date=2023-11-14"
    blocker.write_text("a file where the day's folder should be")
    log.append(batch(5, logged_at))
    assert log.flush() == 0  # cannot create the folder: kept (in the journal)
    assert log.pending_rows == 5 and log.buffered_rows == 0
    log.append(batch(2, logged_at))
    blocker.unlink()
    assert log.close() == 7
    table = read_log(tmp_path)
    assert len(table) == 7
    assert (table["model_version"] == 3).all() and (table["decision"] == "fraud").all()
    with pytest.raises(RuntimeError, match="closed"):
        log.append(batch(1, logged_at))


def test_a_failed_publication_loses_nothing_and_files_keep_their_row_groups(
    tmp_path, read_log, monkeypatch
):
    """Rows reach the journal as they come (here: the test journals after each batch); when
    writing the parquet file fails, the partial file is removed and every row stays in the
    journal; the next try writes each row once, in order, in row groups of at least the
    size, and the rows journaled meanwhile go to the next file."""
    monkeypatch.setattr(inference_log, "ROW_GROUP_ROWS", 8)
    log = InferenceLog(tmp_path, feature_names=DEFAULT_SPEC.features, model_name="fraud",
                       rotate_rows=10_000, rotate_seconds=3600, flush_s=3600)
    logged_at = 1_700_000_000_000_000
    for k in range(5):
        log.append(batch(5, logged_at, first=5 * k))
        log._step(publish_now=False)  # journal it: one record batch per append
    assert log.buffered_rows == 0 and log.pending_rows == 25
    assert not list(tmp_path.rglob("*.parquet"))

    # The file's name taken by a folder: renaming the finished temporary file onto it fails.
    assert log._segment is not None
    taken = Path(log._segment.target)
    (taken / "in the way").mkdir(parents=True)
    assert log.flush() == 0
    assert log.pending_rows == 25
    assert not list(tmp_path.rglob("*.tmp"))
    assert [p for p in tmp_path.rglob("*.parquet") if p.is_file()] == []
    shutil.rmtree(taken)
    log.append(batch(2, logged_at, first=25))
    assert log.close() == 27
    files = sorted(tmp_path.rglob("*.parquet"), key=lambda f: f.stem.rsplit("-", 1)[1])
    groups = [pq.ParquetFile(f).metadata for f in files]
    assert [[g.row_group(i).num_rows for i in range(g.num_row_groups)] for g in groups] == [
        [10, 10, 5], [2]]
    assert read_log(tmp_path)[c.TRANSACTION_ID].tolist() == [f"t{i}" for i in range(27)]
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.arrows"))
