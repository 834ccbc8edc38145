"""The inference log: every scored transaction, in parquet files, and a journal that a crash
does not lose.

One row per scored transaction: ``TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID``, the
model's input features under their training names (so drift jobs read the log exactly like
``features.parquet``), then ``score, decision, threshold, degraded, degraded_reason,
customer_freshness, terminal_freshness, model_name, model_version, feature_service,
request_id, logged_at``.

Files are ``<root>/date=YYYY-MM-DD/part-<UTC time>-<host>-<pid>-<seq>.parquet`` (hive
partitioning by logging day). ``root`` is a local folder or any URI pyarrow's file systems
understand (``s3://bucket/prefix``, ``gs://...``) on a cluster.

**Crash safety.** The scorer hands each scored batch to :meth:`InferenceLog.append` (columns
in memory, no I/O on the event loop). A writer thread appends what arrived to the current
file's *journal* — an Arrow IPC stream in a local folder (``serving.log_journal_dir``; by
default ``_journal`` under a local root, which readers of the log skip) — at least every
``flush_s`` seconds (``serving.log_flush_s``, 0.5 s), each write going straight to the
operating system. A process killed with SIGKILL therefore loses at most the rows of its last
``flush_s`` seconds (plus the write in progress): what the journal holds survives it. After
``rotate_rows`` rows or ``rotate_seconds`` seconds the journal is *published*: read back and
written as the parquet file (row groups of at least :data:`ROW_GROUP_ROWS`, yielding the GIL
in between so that the event loop is never held for long; local files appear atomically,
written under a hidden temporary name, then renamed), then deleted. :meth:`InferenceLog.close`
— graceful shutdown — publishes what is left.

**Recovery.** At start, journals a dead process of this host left behind (or a process with
this process's id: a restarted container) are published — every complete record batch in
them, a batch cut short by the kill dropped — and deleted; a journal already published is
deleted. Hidden temporary parquet files such a process left are deleted when their journal
holds their rows, else set aside (moved, not deleted: ``_aside`` under the root or the
journal folder, which readers skip) and named in a warning, as is a journal that cannot be
read at all. Journals of live processes and of other hosts are left alone.

A failed write (disk full, object storage down) keeps the rows — in memory before they reach
the journal, in the journal before they reach their parquet file — and is retried; only beyond
``max_buffered_rows`` unjournaled rows are the oldest dropped (and counted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import re
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
from pyarrow import ipc

from inference.scoring import ScoredBatch
from monitoring import metrics as m
from vigil import contract as c

log = logging.getLogger(__name__)

#: Rows per parquet row group (and per step of a publication).
ROW_GROUP_ROWS: Final = 4_096
JOURNAL_SUFFIX: Final = ".arrows"
#: Where files a crash left that cannot be recovered are moved (readers skip ``_`` folders).
ASIDE: Final = "_aside"
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
#: ``part-<time>-<host>-<pid>-<seq>``: a file's name without suffix; the owner's host and pid.
_PART = re.compile(r"^part-\d{8}T\d{6}-(?P<host>.+)-(?P<pid>\d+)-(?P<seq>\d+)$")
_TMP = re.compile(r"^\.(?P<name>part-.+)\.[0-9a-f]{8}\.tmp$")


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
class _Segment:
    """One parquet file in the making: its journal, open for appending."""

    journal: Path
    target: str  # the parquet file's path in the log's file system
    opened: float  # monotonic time of its first row
    writer: ipc.RecordBatchStreamWriter | None = None
    sink: pa.NativeFile | None = None
    schema: pa.Schema | None = None
    rows: int = 0

    def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(OSError, pa.ArrowException):
                self.writer.close()
        if self.sink is not None:
            with contextlib.suppress(OSError, pa.ArrowException):
                self.sink.close()
        self.writer = self.sink = None
        _OPEN_JOURNALS.discard(self.journal)


def _owner(name: str) -> tuple[str, int] | None:
    """(host, pid) of a log file's name without suffix, None if not one of ours."""
    match = _PART.match(name)
    return (match.group("host"), int(match.group("pid"))) if match else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


#: Journals this process has open (a second log on the same folder must not "recover" them).
_OPEN_JOURNALS: set[Path] = set()


def read_journal(path: Path) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """The complete record batches of a journal; one cut short by a crash is dropped. Raises
    ``pa.ArrowInvalid`` or ``OSError`` when not even the schema can be read."""
    with pa.OSFile(str(path), "rb") as source:
        reader = ipc.open_stream(source)
        batches = []
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError):  # the write a kill interrupted
                break
        return reader.schema, batches


class InferenceLog:
    def __init__(
        self,
        root: str | Path,
        *,
        feature_names: tuple[str, ...] | list[str],
        model_name: str,
        rotate_rows: int,
        rotate_seconds: float,
        flush_s: float,
        journal_dir: str | Path | None = None,
        max_buffered_rows: int = 1_000_000,
    ):
        """``journal_dir``: a local folder (default: ``_journal`` under a local ``root``)."""
        self.fs, self.root, self.local = open_root(root)
        if journal_dir is None:
            if not self.local:
                raise ValueError(f"inference log at {root}: a local journal folder is needed")
            journal_dir = Path(self.root) / "_journal"
        self.journal_dir = Path(journal_dir).expanduser().resolve()
        self.feature_names = tuple(feature_names)
        self.rotate_rows = rotate_rows
        self.rotate_seconds = rotate_seconds
        self.flush_s = flush_s
        self.max_buffered_rows = max_buffered_rows
        self._buffer: list[Rows] = []
        self._buffered = 0
        self._segment: _Segment | None = None
        #: Journals complete but not published yet (a failed publication is retried).
        self._unpublished: list[tuple[_Segment, int]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._seq = itertools.count()
        self._host = socket.gethostname()
        self._tag = f"{self._host}-{os.getpid()}"
        self._m_rows = m.INFERENCE_LOG_ROWS.labels(model_name)
        self._m_errors = m.INFERENCE_LOG_WRITE_ERRORS.labels(model_name)
        self._m_dropped = m.INFERENCE_LOG_DROPPED.labels(model_name)
        self.fs.create_dir(self.root, recursive=True)
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self.recovered = self.recover()
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------ intake

    def append(self, batch: ScoredBatch) -> None:
        """Buffer a scored batch (as columns, see :class:`Rows`); the writer thread journals
        it within ``flush_s``."""
        rows = Rows.of(batch, self.feature_names)
        with self._lock:
            if self._closed:
                raise RuntimeError("inference log is closed")
            self._buffer.append(rows)
            self._buffered += rows.n

    @property
    def buffered_rows(self) -> int:
        """Rows not in the journal yet."""
        with self._lock:
            return self._buffered

    @property
    def pending_rows(self) -> int:
        """Rows not in a published parquet file yet (buffered or journaled)."""
        with self._lock:
            buffered = self._buffered
        segment = self._segment
        return (buffered + (segment.rows if segment else 0)
                + sum(rows for _, rows in self._unpublished))

    # ------------------------------------------------------------------------------ writing

    def _run(self) -> None:
        while not self._wake.wait(timeout=self.flush_s):
            self._step(publish_now=False)
        # close() sets the event and does the last step itself

    def _step(self, *, publish_now: bool) -> int:
        """Journal what is buffered; publish the segment when it is due (or ``publish_now``)
        and any earlier one whose publication failed. Returns the rows published."""
        with self._write_lock:
            self._journal_buffered()
            segment = self._segment
            if segment is not None and segment.rows and (
                publish_now
                or segment.rows >= self.rotate_rows
                or time.monotonic() - segment.opened >= self.rotate_seconds
            ):
                segment.close()
                self._unpublished.append((segment, segment.rows))
                self._segment = None
            published = 0
            for entry in list(self._unpublished):
                segment, rows = entry
                try:
                    self._publish(segment.journal, segment.target)
                except (OSError, pa.ArrowException) as e:
                    self._failed(f"publishing {rows} rows to {segment.target}", e)
                    break
                self._unpublished.remove(entry)
                self._m_rows.inc(rows)
                published += rows
            return published

    def _journal_buffered(self) -> None:
        with self._lock:
            taken, self._buffer = self._buffer, []
            rows, self._buffered = self._buffered, 0
        if not taken:
            return
        try:
            table = self.table(taken)
            segment = self._segment or self._open_segment(taken[0].logged_at_us)
            if segment.writer is None:
                segment.schema = table.schema
                _OPEN_JOURNALS.add(segment.journal)
                segment.sink = pa.OSFile(str(segment.journal), "wb")
                segment.writer = ipc.new_stream(segment.sink, table.schema)
            elif table.schema != segment.schema:
                table = table.cast(segment.schema)
            # One write() per batch message: in the operating system, not in this process.
            segment.writer.write_table(table)
            segment.rows += rows
            self._segment = segment
        except (OSError, pa.ArrowException) as e:
            self._failed(f"journaling {rows} rows", e)
            if self._segment is not None:  # what it holds is complete: publish that
                self._segment.close()
                if self._segment.rows:
                    self._unpublished.append((self._segment, self._segment.rows))
                self._segment = None
            self._put_back(taken, rows)

    def _open_segment(self, logged_at_us: int) -> _Segment:
        first = datetime.fromtimestamp(logged_at_us / 1e6, tz=UTC)
        day = f"date={first:%Y-%m-%d}"
        name = f"part-{first:%Y%m%dT%H%M%S}-{self._tag}-{next(self._seq):06d}"
        (self.journal_dir / day).mkdir(parents=True, exist_ok=True)
        return _Segment(
            journal=self.journal_dir / day / f"{name}{JOURNAL_SUFFIX}",
            target=f"{self.root}/{day}/{name}.parquet",
            opened=time.monotonic(),
        )

    def _put_back(self, taken: list[Rows], rows: int) -> None:
        with self._lock:
            self._buffer = taken + self._buffer
            self._buffered += rows
            while self._buffered > self.max_buffered_rows and len(self._buffer) > 1:
                dropped = self._buffer.pop(0)
                self._buffered -= dropped.n
                self._m_dropped.inc(dropped.n)

    def _failed(self, what: str, error: BaseException) -> None:
        self._m_errors.inc()
        log.error("inference log under %s: %s failed (rows kept, retrying): %s", self.root, what,
                  error)

    def _publish(self, journal: Path, target: str) -> int:
        """Write a journal's rows as the parquet file ``target``, then delete the journal;
        returns the rows."""
        schema, batches = read_journal(journal)
        rows = self._write_parquet(schema, batches, target)
        journal.unlink()
        return rows

    def _write_parquet(self, schema: pa.Schema, batches: list[pa.RecordBatch],
                       target: str) -> int:
        """``batches`` as the parquet file ``target`` (atomically for a local root), in row
        groups of at least :data:`ROW_GROUP_ROWS`; returns the rows."""
        rows = sum(b.num_rows for b in batches)
        if rows:
            folder = target.rsplit("/", 1)[0]
            self.fs.create_dir(folder, recursive=True)
            name = target.rsplit("/", 1)[1]
            path = f"{folder}/.{name.removesuffix('.parquet')}.{uuid.uuid4().hex[:8]}.tmp" \
                if self.local else target
            try:
                with pq.ParquetWriter(path, schema, filesystem=self.fs) as writer:
                    group: list[pa.RecordBatch] = []
                    size = 0
                    for batch in batches:
                        group.append(batch)
                        size += batch.num_rows
                        if size >= ROW_GROUP_ROWS:
                            writer.write_table(pa.Table.from_batches(group, schema))
                            group, size = [], 0
                            time.sleep(0)  # let the event loop have the GIL
                    if group:
                        writer.write_table(pa.Table.from_batches(group, schema))
                if self.local:
                    self.fs.move(path, target)
            except BaseException:
                if self.local:
                    with contextlib.suppress(OSError):
                        self.fs.delete_file(path)  # no partial file
                raise
            log.debug("wrote %d inference log rows to %s", rows, target)
        return rows

    def flush(self) -> int:
        """Journal what is buffered and publish it now; returns the rows published."""
        return self._step(publish_now=True)

    def close(self) -> int:
        """Stop the writer thread and publish everything (graceful shutdown); returns the rows
        published by this call."""
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
        self._wake.set()
        self._thread.join(timeout=30)
        published = self._step(publish_now=True)
        if self.pending_rows:  # the last write failed: one more try
            published += self._step(publish_now=True)
        return published

    # ----------------------------------------------------------------------------- recovery

    def recover(self) -> int:
        """Publish or set aside what crashed processes left (see the module docstring);
        returns the rows recovered."""
        recovered = 0
        journals = {}
        for path in sorted(self.journal_dir.glob(f"date=*/*{JOURNAL_SUFFIX}")):
            name = path.name.removesuffix(JOURNAL_SUFFIX)
            if path not in _OPEN_JOURNALS and self._abandoned(name):
                journals[name] = path
        if self.local:
            for tmp in sorted(Path(self.root).glob("date=*/.part-*.tmp")):
                match = _TMP.match(tmp.name)
                if match is None or not self._abandoned(match.group("name")):
                    continue
                if match.group("name") in journals:
                    tmp.unlink()  # a publication cut short: its journal still holds the rows
                else:
                    self._set_aside(tmp, Path(self.root), "an unfinished parquet file")
        for name, path in journals.items():
            target = f"{self.root}/{path.parent.name}/{name}.parquet"
            if self.fs.get_file_info(target).type != pafs.FileType.NotFound:
                path.unlink()  # published, then killed before the journal was deleted
                continue
            try:
                schema, batches = read_journal(path)
            except (pa.ArrowInvalid, OSError) as e:
                self._set_aside(path, self.journal_dir, f"an unreadable journal ({e})")
                continue
            try:
                rows = self._write_parquet(schema, batches, target)
            except (OSError, pa.ArrowException) as e:  # left for the next start
                self._failed(f"recovering {path} into {target}", e)
                continue
            path.unlink()
            recovered += rows
            self._m_rows.inc(rows)
            log.warning("recovered %d inference log rows a stopped process left in %s into %s",
                        rows, path, target)
        return recovered

    def _abandoned(self, name: str) -> bool:
        owner = _owner(name)
        if owner is None:
            return False
        host, pid = owner
        return host == self._host and (pid == os.getpid() or not _alive(pid))

    def _set_aside(self, path: Path, base: Path, what: str) -> None:
        aside = base / ASIDE
        aside.mkdir(parents=True, exist_ok=True)
        destination = aside / f"{path.parent.name}-{path.name.lstrip('.')}"
        path.rename(destination)
        log.warning("inference log: set aside %s a stopped process left: %s", what, destination)

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
