"""The inference log: every scored transaction, appended to rotated parquet files.

One row per scored transaction: ``TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID``, the
model's input features under their training names (so drift jobs read the log exactly like
``features.parquet``), then ``score, decision, threshold, degraded, degraded_reason,
customer_freshness, terminal_freshness, model_name, model_version, feature_service,
request_id, logged_at``.

Files are ``<root>/date=YYYY-MM-DD/part-<UTC time>-<host>-<pid>-<seq>.parquet`` (hive
partitioning by logging day). ``root`` is a local folder or any URI pyarrow's file systems
understand (``s3://bucket/prefix``, ``gs://...``) on a cluster. A background thread starts a new
file after ``rotate_rows`` rows or ``rotate_seconds`` seconds, whichever comes first, and writes
each row group to the open file as soon as it is full, so that a rotation only writes the last
one and closes the file; local files appear atomically (written under a temporary name, then
renamed). :meth:`InferenceLog.close` — called on graceful shutdown — writes whatever is
buffered, so nothing scored is lost. A failed write keeps the rows buffered and is retried;
only beyond ``max_buffered_rows`` are the oldest rows dropped (and counted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from inference.scoring import ScoredBatch
from monitoring import metrics as m
from vigil import contract as c

log = logging.getLogger(__name__)

#: Rows per parquet row group (and per step of a write).
ROW_GROUP_ROWS: Final = 4_096
#: How often the writer thread writes the row groups that filled up meanwhile.
PREPARE_EVERY_S: Final = 0.25
#: Written batches freed per step.
RELEASE_BATCHES: Final = 64
#: Columns besides the features, in file order.
RESULT_COLUMNS: Final = (
    "score",
    "decision",
    "threshold",
    "degraded",
    "degraded_reason",
    "customer_freshness",
    "terminal_freshness",
    "model_name",
    "model_version",
    "feature_service",
    "request_id",
    "logged_at",
)


def open_root(uri: str | Path) -> tuple[pafs.FileSystem, str, bool]:
    """(file system, root path, is local) of a folder or object-storage URI."""
    text = str(uri)
    if "://" in text and not text.startswith("file://"):
        fs, path = pafs.FileSystem.from_uri(text)
        return fs, path.rstrip("/"), False
    local = Path(text.removeprefix("file://")).expanduser().resolve()
    return pafs.LocalFileSystem(), str(local), True


@dataclasses.dataclass(frozen=True)
class Rows:
    """A scored batch as columns of NumPy arrays: a handful of objects however many rows, so
    that buffered rows cost the garbage collector nothing (a buffer of Python objects per
    row made every full collection walk tens of thousands of them: 20+ ms pauses)."""

    n: int
    transaction_id: np.ndarray  # unicode
    time_us: np.ndarray  # int64
    customer_id: np.ndarray
    terminal_id: np.ndarray
    features: dict[str, np.ndarray]
    score: np.ndarray
    decision: np.ndarray
    customer_freshness: np.ndarray
    terminal_freshness: np.ndarray
    request_id: np.ndarray
    threshold: float
    degraded_reason: str | None
    model_name: str
    model_version: int
    feature_service: str
    logged_at_us: int

    @classmethod
    def of(cls, batch: ScoredBatch, feature_names: tuple[str, ...]) -> Rows:
        txs = batch.transactions
        n = len(txs)
        return cls(
            n=n,
            transaction_id=np.array([t.transaction_id for t in txs], dtype=np.str_),
            time_us=np.fromiter((t.time_us for t in txs), np.int64, n),
            customer_id=np.array([t.customer_id for t in txs], dtype=np.str_),
            terminal_id=np.array([t.terminal_id for t in txs], dtype=np.str_),
            features={name: np.asarray(batch.features[name]) for name in feature_names},
            score=np.asarray(batch.scores, dtype=np.float64),
            decision=np.array(batch.decisions, dtype=np.str_),
            customer_freshness=np.array(batch.customer_freshness, dtype=np.str_),
            terminal_freshness=np.array(batch.terminal_freshness, dtype=np.str_),
            request_id=np.array(batch.request_ids, dtype=np.str_),
            threshold=batch.threshold,
            degraded_reason=batch.degraded_reason,
            model_name=batch.model_name,
            model_version=batch.model_version,
            feature_service=batch.feature_service,
            logged_at_us=batch.logged_at_us,
        )


@dataclasses.dataclass
class _Buffer:
    batches: list[Rows] = dataclasses.field(default_factory=list)
    rows: int = 0
    since: float = 0.0  # monotonic time of the oldest buffered row
    #: The file being written: the first ``written`` batches are in it already (the writer
    #: thread writes each row group as soon as it is full); ``target`` becomes ``path`` when
    #: the file is complete.
    writer: pq.ParquetWriter | None = None
    written: int = 0
    target: str = ""
    path: str = ""


def _release(batches: list[Rows]) -> None:
    """Free written rows a slice at a time, yielding the GIL in between: a file's ~150,000
    arrays freed at once held the GIL for ~50-100 ms under load."""
    while batches:
        del batches[-RELEASE_BATCHES:]
        time.sleep(0)


def _row_groups(batches: list[Rows]) -> list[list[Rows]]:
    """Consecutive batches cut into groups of at least ``ROW_GROUP_ROWS`` rows (the last one
    may be smaller)."""
    groups: list[list[Rows]] = [[]]
    rows = 0
    for batch in batches:
        if rows >= ROW_GROUP_ROWS:
            groups.append([])
            rows = 0
        groups[-1].append(batch)
        rows += batch.n
    return groups if groups[0] else []


class InferenceLog:
    def __init__(
        self,
        root: str | Path,
        *,
        feature_names: tuple[str, ...] | list[str],
        model_name: str,
        rotate_rows: int,
        rotate_seconds: float,
        max_buffered_rows: int = 1_000_000,
    ):
        self.fs, self.root, self.local = open_root(root)
        self.feature_names = tuple(feature_names)
        self.rotate_rows = rotate_rows
        self.rotate_seconds = rotate_seconds
        self.max_buffered_rows = max_buffered_rows
        self._buffer = _Buffer()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._seq = itertools.count()
        self._tag = f"{socket.gethostname()}-{os.getpid()}"
        self._m_rows = m.INFERENCE_LOG_ROWS.labels(model_name)
        self._m_errors = m.INFERENCE_LOG_WRITE_ERRORS.labels(model_name)
        self._m_dropped = m.INFERENCE_LOG_DROPPED.labels(model_name)
        self.fs.create_dir(self.root, recursive=True)
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------ intake

    def append(self, batch: ScoredBatch) -> None:
        """Buffer a scored batch (as columns, see :class:`Rows`)."""
        rows = Rows.of(batch, self.feature_names)
        n = rows.n
        with self._lock:
            if self._closed:
                raise RuntimeError("inference log is closed")
            if not self._buffer.rows:
                self._buffer.since = time.monotonic()
            self._buffer.batches.append(rows)
            self._buffer.rows += n
            full = self._buffer.rows >= self.rotate_rows
        if full:
            self._wake.set()

    @property
    def buffered_rows(self) -> int:
        with self._lock:
            return self._buffer.rows

    # ------------------------------------------------------------------------------ output

    def flush(self) -> int:
        """Complete the file of everything buffered now; returns the rows written."""
        with self._write_lock:
            with self._lock:
                taken, self._buffer = self._buffer, _Buffer()
            if not taken.rows:
                return 0
            try:
                for group in _row_groups(taken.batches[taken.written :]):
                    self._write_group(taken, group)
                self._commit(taken)
            except OSError as e:
                self._failed(taken, e)
                self._put_back(taken)
                return 0
            self._m_rows.inc(taken.rows)
            _release(taken.batches)
            return taken.rows

    def _put_back(self, taken: _Buffer) -> None:
        with self._lock:
            merged = _Buffer(taken.batches + self._buffer.batches,
                             taken.rows + self._buffer.rows, taken.since)
            while merged.rows > self.max_buffered_rows and len(merged.batches) > 1:
                dropped = merged.batches.pop(0)
                merged.rows -= dropped.n
                self._m_dropped.inc(dropped.n)
            self._buffer = merged

    def _prepare(self) -> None:
        """Write the row groups that are full already, so that a rotation only completes the
        file: building and compressing a file's 50,000 rows at once took the event loop's GIL
        and a core for long enough to show in the serving p99 (a 50-90 ms stall at each
        rotation at 32 clients). A failure drops the partial file; the rows stay buffered."""
        with self._write_lock:
            with self._lock:
                buffer = self._buffer  # only swapped under the write lock: stays ours
                pending = buffer.batches[buffer.written :]
            try:
                for group in _row_groups(pending):
                    if sum(b.n for b in group) < ROW_GROUP_ROWS:
                        return
                    self._write_group(buffer, group)
            except OSError as e:
                self._failed(buffer, e)

    def _failed(self, buffer: _Buffer, error: OSError) -> None:
        self._m_errors.inc()
        log.error("writing inference log rows under %s failed (%d rows kept, retrying): %s",
                  self.root, buffer.rows, error)
        if buffer.writer is not None:
            with contextlib.suppress(OSError):
                buffer.writer.close()
        if buffer.target:
            with contextlib.suppress(OSError):
                self.fs.delete_file(buffer.target)  # no partial file
        buffer.writer, buffer.written, buffer.target, buffer.path = None, 0, "", ""

    def _run(self) -> None:
        while True:
            self._wake.wait(timeout=min(PREPARE_EVERY_S, self.rotate_seconds))
            self._wake.clear()
            with self._lock:
                closed = self._closed
                rows, since = self._buffer.rows, self._buffer.since
            if closed:
                return
            if rows >= self.rotate_rows or (
                rows and time.monotonic() - since >= self.rotate_seconds
            ):
                self.flush()
            else:
                self._prepare()

    def close(self) -> int:
        """Stop the writer thread and write what is buffered (graceful shutdown)."""
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
        self._wake.set()
        self._thread.join(timeout=30)
        written = self.flush()
        if self.buffered_rows:  # the last write failed: one more try
            written += self.flush()
        return written

    # ----------------------------------------------------------------------------- files

    def table(self, batches: list[Rows]) -> pa.Table:
        def cat(column: str) -> np.ndarray:
            return np.concatenate([getattr(b, column) for b in batches])

        def repeat(values: list[object], typ: pa.DataType) -> pa.Array:
            return pa.array(
                [v for b, v in zip(batches, values, strict=True) for _ in range(b.n)], type=typ
            )

        columns: dict[str, pa.Array] = {
            c.TRANSACTION_ID: pa.array(cat("transaction_id"), pa.string()),
            c.TX_DATETIME: pa.array(cat("time_us").astype("datetime64[us]")),
            c.CUSTOMER_ID: pa.array(cat("customer_id"), pa.string()),
            c.TERMINAL_ID: pa.array(cat("terminal_id"), pa.string()),
        }
        for name in self.feature_names:
            columns[name] = pa.array(np.concatenate([b.features[name] for b in batches]))
        columns["score"] = pa.array(cat("score"))
        columns["decision"] = pa.array(cat("decision"), pa.string())
        columns["threshold"] = repeat([b.threshold for b in batches], pa.float64())
        columns["degraded"] = repeat([b.degraded_reason is not None for b in batches],
                                     pa.bool_())
        columns["degraded_reason"] = repeat([b.degraded_reason for b in batches], pa.string())
        columns["customer_freshness"] = pa.array(cat("customer_freshness"), pa.string())
        columns["terminal_freshness"] = pa.array(cat("terminal_freshness"), pa.string())
        columns["model_name"] = repeat([b.model_name for b in batches], pa.string())
        columns["model_version"] = repeat([b.model_version for b in batches], pa.int64())
        columns["feature_service"] = repeat([b.feature_service for b in batches], pa.string())
        columns["request_id"] = pa.array(cat("request_id"), pa.string())
        columns["logged_at"] = repeat(
            [b.logged_at_us for b in batches], pa.timestamp("us", tz="UTC")
        )
        return pa.table(columns)

    def _write_group(self, buffer: _Buffer, group: list[Rows]) -> None:
        """Append one row group to the buffer's file (opened with the first group), then
        yield the GIL."""
        table = self.table(group)
        if buffer.writer is None:
            first = datetime.fromtimestamp(buffer.batches[0].logged_at_us / 1e6, tz=UTC)
            folder = f"{self.root}/date={first:%Y-%m-%d}"
            name = f"part-{first:%Y%m%dT%H%M%S}-{self._tag}-{next(self._seq):06d}.parquet"
            self.fs.create_dir(folder, recursive=True)
            buffer.path = f"{folder}/{name}"
            buffer.target = (
                f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp" if self.local else buffer.path
            )
            buffer.writer = pq.ParquetWriter(buffer.target, table.schema, filesystem=self.fs)
        buffer.writer.write_table(table)
        with self._lock:
            buffer.written += len(group)
        time.sleep(0)

    def _commit(self, buffer: _Buffer) -> None:
        if buffer.writer is None:
            return
        buffer.writer.close()
        buffer.writer = None
        if self.local:
            self.fs.move(buffer.target, buffer.path)
        log.debug("wrote %d inference log rows to %s", buffer.rows, buffer.path)
