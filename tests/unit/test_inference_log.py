"""The inference log fed by a real scorer: its rows are exactly the scored batches, written
once each across flushes, and what is still pending is written by close(); what a killed
process left (journals, unfinished files) is recovered or set aside at the next start."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from pyarrow import ipc
from serving_support import THRESHOLD, transactions_of, world

from feature_store.transforms import DEFAULT_SPEC
from inference.log import RESULT_COLUMNS, InferenceLog, Rows, read_journal
from inference.schema import Transaction
from inference.scoring import ScoredBatch, Scorer
from vigil import contract as c

pytestmark = pytest.mark.unit

FEATURES = list(DEFAULT_SPEC.features)


def read_log(root) -> pd.DataFrame:
    files = sorted(root.rglob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def expected_rows(batches: list[ScoredBatch]) -> pd.DataFrame:
    frames = []
    for b in batches:
        n = len(b.transactions)
        frame = pd.DataFrame({
            c.TRANSACTION_ID: [t.transaction_id for t in b.transactions],
            c.CUSTOMER_ID: [t.customer_id for t in b.transactions],
            c.TERMINAL_ID: [t.terminal_id for t in b.transactions],
            "time_us": [t.time_us for t in b.transactions],
            **{name: np.asarray(b.features[name], np.float64) for name in FEATURES},
            "score": b.scores,
            "decision": b.decisions,
            "degraded": [b.degraded_reason is not None] * n,
            "degraded_reason": [b.degraded_reason] * n,
            "customer_freshness": b.customer_freshness,
            "terminal_freshness": b.terminal_freshness,
            "request_id": b.request_ids,
            "logged_at_us": [b.logged_at_us] * n,
        })
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_rows_equal_the_scored_batches_and_survive_close(tmp_path):
    w = world()
    store = w.store()
    root = tmp_path / "log"
    log = InferenceLog(root, feature_names=w.model.card.feature_names,
                       model_name=w.model.card.name, rotate_rows=1_000_000, rotate_seconds=3600,
                       flush_s=0.05)
    batches: list[ScoredBatch] = []

    def sink(batch: ScoredBatch) -> None:
        batches.append(batch)
        log.append(batch)

    now = [0.0]
    scorer = Scorer(w.model, store, retry_after_s=0.5, sink=sink, clock=lambda: now[0])
    txs = transactions_of(w.live.iloc[:70])
    for k in range(3):  # each transaction a request of its own: ids differ within a batch
        scorer.score(txs[10 * k : 10 * k + 10], [f"req-{k}-{i}" for i in range(10)])
    assert log.flush() == 30  # a first file
    store.read_error = redis.ConnectionError("down")
    scorer.score(txs[30:45], ["req-degraded"] * 15)
    store.read_error = None
    now[0] += 1.0
    scorer.score(txs[45:70], ["req-last"] * 25)
    assert log.pending_rows == 40
    assert log.close() == 40  # graceful shutdown: what is pending is written
    assert log.pending_rows == 0
    with pytest.raises(RuntimeError, match="closed"):
        log.append(batches[0])

    assert len(list(root.rglob("*.parquet"))) == 2 and not list(root.rglob("*.tmp"))
    assert not list(root.rglob("*.arrows"))  # journals deleted once published
    table = read_log(root)
    assert list(table.columns) == [c.TRANSACTION_ID, c.TX_DATETIME, c.CUSTOMER_ID,
                                   c.TERMINAL_ID, *FEATURES, *RESULT_COLUMNS]
    expected = expected_rows(batches)
    assert table[c.TRANSACTION_ID].tolist() == expected[c.TRANSACTION_ID].tolist()
    for column in (c.CUSTOMER_ID, c.TERMINAL_ID, "decision", "customer_freshness",
                   "terminal_freshness", "request_id", "degraded"):
        assert table[column].tolist() == expected[column].tolist(), column
    assert table["degraded_reason"].tolist() == [None] * 30 + ["unreachable"] * 15 + [None] * 25
    np.testing.assert_array_equal(
        table[c.TX_DATETIME].to_numpy("datetime64[us]").astype(np.int64), expected["time_us"])
    np.testing.assert_array_equal(table[FEATURES].to_numpy(np.float64),
                                  expected[FEATURES].to_numpy(np.float64))
    np.testing.assert_array_equal(table["score"].to_numpy(), expected["score"].to_numpy())
    np.testing.assert_array_equal(
        table["logged_at"].to_numpy("datetime64[us]").astype(np.int64),
        expected["logged_at_us"].to_numpy())
    assert set(table["model_name"]) == {w.model.card.name}
    assert set(table["model_version"]) == {w.model.card.version}
    assert set(table["feature_service"]) == {w.model.card.feature_service}
    assert set(table["threshold"]) == {THRESHOLD}


# --------------------------------------------------------------------------- crash recovery

T0 = 1_527_000_000_000_000  # 2018-05-22


def scored(n: int, first: int = 0) -> ScoredBatch:
    features = {name: np.arange(first, first + n, dtype=np.float64) for name in FEATURES}
    return ScoredBatch(
        transactions=[Transaction(f"t{i}", T0 + i, "c", "t", 1.0)
                      for i in range(first, first + n)],
        request_ids=["r"] * n, features=features, scores=np.full(n, 0.5),
        decisions=["legit"] * n, degraded_reason=None, customer_freshness=["PRESENT"] * n,
        terminal_freshness=["PRESENT"] * n, model_name="fraud_unit", model_version=4,
        feature_service="fraud_v1", threshold=0.3, logged_at_us=T0,
    )


def dead_pid() -> int:
    """The id of a process that has exited."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def new_log(root, **kwargs) -> InferenceLog:
    return InferenceLog(root, feature_names=FEATURES, model_name="fraud_unit",
                        rotate_rows=1_000_000, rotate_seconds=3600, flush_s=3600, **kwargs)


def leave_journal(root, host: str, pid: int, batches: list[ScoredBatch], seq: int = 0,
                  cut: int = 0):
    """A journal as a process (host, pid) leaves it when killed; ``cut`` bytes cut off its end
    (a write the kill interrupted)."""
    writer = new_log(root / "scratch")
    table = writer.table([Rows.of(b, tuple(FEATURES)) for b in batches[:1]])
    writer.close()
    folder = root / "_journal" / "date=2018-05-22"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-20180522T144000-{host}-{pid}-{seq:06d}.arrows"
    with pa.OSFile(str(path), "wb") as sink, ipc.new_stream(sink, table.schema) as stream:
        for batch in batches:
            stream.write_table(writer.table([Rows.of(batch, tuple(FEATURES))]))
    if cut:
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size - cut)
    return path


def test_a_killed_processs_journal_is_published_at_the_next_start(tmp_path, caplog):
    """Issue 14: SIGKILL lost every row not yet in a parquet file (up to 300 s or 50,000 rows).
    The journal a dead process left is published at the next start, every complete record
    batch of it (one cut short by the kill dropped), and deleted."""
    root = tmp_path / "log"
    pid = dead_pid()
    host = socket.gethostname()
    whole = leave_journal(root, host, pid, [scored(3), scored(4, 3)], seq=0)
    cut = leave_journal(root, host, pid, [scored(2, 7), scored(5, 9)], seq=1, cut=10)
    with caplog.at_level(logging.WARNING, logger="inference.log"):
        log = new_log(root)
    assert log.recovered == 3 + 4 + 2
    table = read_log(root)
    assert sorted(table[c.TRANSACTION_ID], key=lambda t: int(t[1:])) == [
        f"t{i}" for i in range(9)]
    assert not whole.exists() and not cut.exists()
    assert sum("recovered" in r.getMessage() for r in caplog.records) == 2
    log.close()


def test_journals_of_live_processes_and_other_hosts_are_left_alone(tmp_path):
    root = tmp_path / "log"
    host = socket.gethostname()
    live = leave_journal(root, host, os.getppid(), [scored(2)], seq=0)
    other = leave_journal(root, "another-host", dead_pid(), [scored(2)], seq=1)
    log = new_log(root)
    assert log.recovered == 0 and live.exists() and other.exists()
    assert not list(root.glob("date=*/*.parquet"))
    log.close()


def test_what_cannot_be_recovered_is_set_aside_and_unfinished_files_removed(tmp_path):
    """A journal that cannot be read at all, and a hidden unfinished parquet file without a
    journal (what the previous version left on SIGKILL), are moved aside, not deleted; an
    unfinished file whose journal holds its rows is removed; a journal already published is
    deleted without a second copy."""
    root = tmp_path / "log"
    host, pid = socket.gethostname(), dead_pid()
    garbage = root / "_journal" / "date=2018-05-22" / f"part-20180522T144000-{host}-{pid}-000009"
    garbage = garbage.with_suffix(".arrows")
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"not an arrow stream")
    day = root / "date=2018-05-22"
    day.mkdir(parents=True)
    orphan = day / f".part-20180522T144000-{host}-{pid}-000003.0123abcd.tmp"
    orphan.write_bytes(b"PAR1 and then nothing")
    with_journal = leave_journal(root, host, pid, [scored(2)], seq=4)
    unfinished = day / f".part-20180522T144000-{host}-{pid}-000004.89abcdef.tmp"
    unfinished.write_bytes(b"PAR1 cut")
    published = leave_journal(root, host, pid, [scored(3, 10)], seq=5)
    pq.write_table(pa.table({"x": [1]}), day / f"{published.stem}.parquet")
    log = new_log(root)
    assert log.recovered == 2
    assert not garbage.exists() and not orphan.exists() and not unfinished.exists()
    assert not with_journal.exists() and not published.exists()
    assert [p.name for p in (root / "_journal" / "_aside").iterdir()] == [
        f"date=2018-05-22-{garbage.name}"]
    assert [p.name for p in (root / "_aside").iterdir()] == [
        f"date=2018-05-22-{orphan.name.lstrip('.')}"]
    assert len(pq.read_table(day / f"{published.stem}.parquet")) == 1  # not published twice
    log.close()


def test_rows_reach_the_journal_within_the_flush_interval(tmp_path):
    """What a SIGKILL would leave: the journal holds every row appended more than flush_s
    ago, before any parquet file exists."""
    root = tmp_path / "log"
    log = InferenceLog(root, feature_names=FEATURES, model_name="fraud_unit",
                       rotate_rows=1_000_000, rotate_seconds=3600, flush_s=0.05)
    for k in range(5):
        log.append(scored(3, 3 * k))

    def journaled() -> int:
        rows = 0
        for path in (root / "_journal").rglob("*.arrows"):
            rows += sum(b.num_rows for b in read_journal(path)[1])
        return rows

    deadline = time.monotonic() + 60
    while journaled() < 15:
        assert time.monotonic() < deadline, "rows never reached the journal"
        time.sleep(0.02)
    assert log.buffered_rows == 0 and not list(root.glob("date=*/*.parquet"))
    assert log.close() == 15
