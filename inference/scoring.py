"""Scoring a batch of transactions: online histories, request-time features, LightGBM, appends.

:class:`Scorer` is plain synchronous code with no HTTP in it; the KServe model
(:mod:`inference.model`) hands it every transaction that arrived while the previous batch was
being scored (:mod:`inference.batching`), so concurrent requests share one online-store round
trip and one model call.

For a batch, :meth:`Scorer.score`:

1. orders the transactions like batch featurization does, by ``(TX_DATETIME, TRANSACTION_ID)``,
   ids compared by the one rule of :mod:`vigil.ordering` (numeric ids by value, before others);
2. reads the histories of feature service ``fraud_v1_online`` (customer transactions, terminal
   labels) for all of them in one pipelined Redis round trip, statuses judged at each
   transaction's own time;
3. gives each transaction the history as it stands *before* it: a customer seen earlier in the
   same batch has those earlier transactions appended (batch semantics), and a transaction
   already in the stored history (a retry or a replay) is taken out of its own history, so it
   is never counted twice;
4. computes ``fraud_v1`` with :func:`feature_store.transforms.online_features` — the transform
   training used — and scores the whole batch with one ``Booster.predict`` call;
5. hands the transactions to the :class:`Appender`, which appends them to their customers'
   histories in Redis (atomic compare-and-set) off the response path; until confirmed they stay
   in an in-process overlay merged into later reads, so the next transaction of the customer
   sees them (near-real-time features);
6. hands the scored batch (inputs, features, scores) to the inference log.

**Bounded work per card.** A customer's history as features see it — stored, plus the
overlay, plus earlier transactions of the batch — holds at most ``history_bound`` entries, the
newest (:mod:`feature_store.online.limits`, the online store's own bound), so the work of one
transaction does not grow with how busy its card is, nor with how far appends lag behind.

**Degradation.** When the read fails (connection refused or reset, no answer within the Redis
timeout, an error reply or an undecodable value), the batch is scored with the documented
default features: every history empty — the features of a customer and a terminal without
history, exactly what batch featurization computes for them (counts 0 except the transaction
itself, averages equal to the amount, ratios 1, z-score 0, terminal risks 0). Such transactions
are flagged ``degraded`` with freshness ``DEFAULT`` and counted. For ``retry_after_s`` after a
failure the store is not asked at all (no request pays the timeout twice in a row); then the
next batch tries again, so the server recovers by itself. Transactions scored while the store
was down, or whose append failed, stay queued in the appender and are appended once it answers.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import lightgbm
import numpy as np
import redis
from google.protobuf.message import DecodeError

from feature_store.online import HistoryLimits, OnlineRead
from feature_store.online.limits import newest
from feature_store.transforms import (
    DEFAULT_SPEC,
    CustomerHistory,
    FeatureSpec,
    OnlineRequest,
    TerminalHistory,
    online_features,
)
from inference.schema import Transaction
from monitoring import metrics as m
from vigil import contract as c
from vigil.ordering import id_order_key
from vigil.registry import LoadedModel

log = logging.getLogger(__name__)

#: Freshness of a transaction's features when the online store was not read.
DEFAULT: Final = "DEFAULT"
FRAUD: Final = c.FRAUD_DECISION
LEGIT: Final = c.LEGIT_DECISION


class OnlineHistories(Protocol):
    """What serving needs from :class:`feature_store.online.RedisHistories`."""

    def read(self, requests: Sequence[OnlineRequest]) -> OnlineRead: ...

    def append(self, requests: Sequence[OnlineRequest], read: OnlineRead | None = None) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class ScoredTransaction:
    transaction: Transaction
    score: float
    decision: str  # FRAUD or LEGIT
    degraded: bool
    customer_freshness: str  # PRESENT, NOT_FOUND, OUTSIDE_MAX_AGE or DEFAULT
    terminal_freshness: str


@dataclasses.dataclass(frozen=True)
class ScoredBatch:
    """One model call, in scoring order; what the inference log records."""

    transactions: list[Transaction]
    request_ids: list[str]
    features: dict[str, np.ndarray]
    scores: np.ndarray
    decisions: list[str]
    degraded_reason: str | None
    customer_freshness: list[str]
    terminal_freshness: list[str]
    model_name: str
    model_version: int
    feature_service: str
    threshold: float
    logged_at_us: int


def event_order(transactions: Sequence[Transaction]) -> list[int]:
    """Positions of ``transactions`` in event order: by time, then TRANSACTION_ID under the
    one rule batch and offline use (:func:`vigil.ordering.id_order_key`)."""
    return sorted(
        range(len(transactions)),
        key=lambda i: (transactions[i].time_us, id_order_key(transactions[i].transaction_id)),
    )


def without_transaction(history: CustomerHistory, transaction_id: str) -> CustomerHistory:
    """``history`` minus the transaction itself (a retried or replayed transaction)."""
    if transaction_id not in history.transaction_id:
        return history
    keep = np.array([t != transaction_id for t in history.transaction_id], dtype=bool)
    return CustomerHistory(
        history.time_us[keep],
        history.amount[keep],
        [t for t in history.transaction_id if t != transaction_id],
    )


def histories_before(
    requests: Sequence[OnlineRequest], stored: Sequence[CustomerHistory], max_entries: int
) -> list[CustomerHistory]:
    """Each request's customer history as of just before it, for requests in event order:
    the stored history, plus the customer's earlier requests of the same batch, minus the
    request itself; at most ``max_entries`` entries, the newest (what the store keeps)."""
    counts = collections.Counter(r.customer_id for r in requests)
    local: dict[str, CustomerHistory] = {}
    out: list[CustomerHistory] = []
    for request, history in zip(requests, stored, strict=True):
        base = local.get(request.customer_id, history)
        before = newest(without_transaction(base, request.transaction_id), max_entries)
        out.append(before)
        if counts[request.customer_id] > 1:
            local[request.customer_id] = before.append(
                request.time_us, request.amount, request.transaction_id
            )
    return out


class AsyncReader(Protocol):
    async def read(self, requests: Sequence[OnlineRequest]) -> OnlineRead: ...


@dataclasses.dataclass
class Prepared:
    """A batch between the steps of :class:`Scorer` (event order)."""

    order: list[int]  # positions in the caller's order, in event order
    transactions: list[Transaction]
    request_ids: list[str]
    requests: list[OnlineRequest]
    #: Appended transactions not yet confirmed in the store, by customer (taken before the read).
    unconfirmed: dict[str, list[tuple[int, float, str]]] = dataclasses.field(default_factory=dict)
    #: Why the online store was not used (a :data:`monitoring.metrics.DEGRADED_REASONS`).
    reason: str | None = None


def _failure_reason(error: BaseException) -> str:
    if isinstance(error, redis.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(error, redis.ConnectionError):
        return "unreachable"
    return "error"


_STORE_ERRORS: Final = (redis.RedisError, DecodeError, OSError)


class Appender:
    """Near-real-time appends of scored transactions to their customers' histories, off the
    response path.

    The scorer submits each scored batch; a thread of its own (own Redis connection) appends
    what is queued in bundles of at most ``max_bundle`` transactions — several queued batches
    in one call, a large one split — with ``RedisHistories.append`` (atomic per customer,
    idempotent). Until a transaction is confirmed in Redis it stays in an in-process overlay
    that the scorer merges into what it reads, so the next transaction of a customer sees it
    even if it arrives before the append completed (read-your-writes within the process).

    On failure (Redis down, slow, erroring or busy) the bundle stays queued, first, and is
    retried every ``retry_after_s``; bundles appended before it stay confirmed. A bundle, and
    each script call inside it, is bounded, so a retry takes as long as the first attempt:
    a backlog never grows into a call that cannot finish within the timeout. Beyond
    ``max_pending`` transactions the oldest are given up (counted). :meth:`close` drains the
    queue on graceful shutdown and says which transactions, if any, are not in the store.
    """

    def __init__(
        self,
        histories: OnlineHistories,
        *,
        model_name: str,
        retry_after_s: float,
        max_pending: int = 100_000,
        max_bundle: int = 1_024,
        history_bound: int | None = None,
        threaded: bool = True,
        coalesce_s: float = 0.002,
    ):
        """``coalesce_s``: after the first queued batch, wait this long for more, so that
        one append (one compare-and-set per customer) covers several batches.
        ``history_bound``: the most unconfirmed transactions of one customer
        :meth:`pending_events` hands out (the newest; a history keeps no more)."""
        self.histories = histories
        self.retry_after_s = retry_after_s
        self.coalesce_s = coalesce_s
        self.max_pending = max_pending
        self.max_bundle = max_bundle
        self.history_bound = history_bound or HistoryLimits().max_entries
        self._jobs: collections.deque[tuple[list[OnlineRequest], OnlineRead | None]] = (
            collections.deque()
        )
        self._pending: dict[str, dict[str, tuple[int, float]]] = {}
        self._pending_count = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._busy = threading.Lock()
        self._m_failed = m.FEATURE_UPDATE_FAILURES.labels(model_name)
        self._m_dropped = m.FEATURE_UPDATES_DROPPED.labels(model_name)
        self._m_newest = m.FEATURE_APPEND_NEWEST.labels(model_name)
        self._m_appended_at = m.FEATURE_APPEND_LAST_SUCCESS.labels(model_name)
        self._newest_us = 0
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="appender", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ scorer side

    def submit(self, requests: list[OnlineRequest], read: OnlineRead | None) -> None:
        with self._lock:
            for r in requests:
                events = self._pending.setdefault(r.customer_id, {})
                if r.transaction_id not in events:
                    events[r.transaction_id] = (r.time_us, r.amount)
                    self._pending_count += 1
            self._jobs.append((requests, read))
            while self._pending_count > self.max_pending and len(self._jobs) > 1:
                dropped, _ = self._jobs.popleft()
                self._forget(dropped)
                self._m_dropped.inc(len(dropped))
        self._wake.set()

    def pending_events(self, customer_ids: set[str]) -> dict[str, list[tuple[int, float, str]]]:
        """Submitted but unconfirmed transactions of these customers, in submission order: the
        newest ``history_bound`` of each (however long the backlog of a busy card)."""
        with self._lock:
            if not self._pending:
                return {}
            out = {}
            for cid in customer_ids:
                events = self._pending.get(cid)
                if events is None:
                    continue
                newest_first = itertools.islice(reversed(events.items()), self.history_bound)
                out[cid] = [(t, a, tid) for tid, (t, a) in newest_first][::-1]
            return out

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending_count

    def _forget(self, requests: list[OnlineRequest]) -> None:
        """Drop confirmed (or given-up) transactions from the overlay; caller holds the lock."""
        for r in requests:
            events = self._pending.get(r.customer_id)
            if events is not None and events.pop(r.transaction_id, None) is not None:
                self._pending_count -= 1
                if not events:
                    del self._pending[r.customer_id]

    # ------------------------------------------------------------------ appending side

    def _take(self) -> tuple[list[OnlineRequest], OnlineRead | None]:
        """The next bundle: queued batches up to ``max_bundle`` transactions (the first one
        split if larger); caller holds the lock."""
        if not self._jobs:
            return [], None
        requests, read = self._jobs.popleft()
        if len(requests) > self.max_bundle:
            self._jobs.appendleft((requests[self.max_bundle :], None))
            return requests[: self.max_bundle], read
        bundle = list(requests)
        while self._jobs and len(bundle) + len(self._jobs[0][0]) <= self.max_bundle:
            bundle += self._jobs.popleft()[0]
            read = None  # several batches: no single read covers them all
        return bundle, read

    def drain(self) -> bool:
        """Append everything queued, a bundle at a time, in the calling thread; False at the
        first failure (the failed bundle stays queued, first; those before it are confirmed)."""
        with self._busy:
            while True:
                with self._lock:
                    bundle, read = self._take()
                if not bundle:
                    return True
                try:
                    self.histories.append(bundle, read)
                except _STORE_ERRORS as e:
                    self._m_failed.inc(len(bundle))
                    with self._lock:
                        self._jobs.appendleft((bundle, None))
                        queued = self._pending_count
                    log.warning("appending %d transactions to customer histories failed "
                                "(%d queued, retrying in %.1f s): %s", len(bundle), queued,
                                self.retry_after_s, e)
                    return False
                with self._lock:
                    self._forget(bundle)
                self._newest_us = max(self._newest_us, *(r.time_us for r in bundle))
                self._m_newest.set(self._newest_us / 1e6)
                self._m_appended_at.set_to_current_time()

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._closed.is_set():
                return
            self._closed.wait(self.coalesce_s)
            if not self.drain():
                self._closed.wait(self.retry_after_s)

    def close(self, timeout_s: float = 10.0) -> int:
        """Stop the thread and append what is left (graceful shutdown); returns the
        transactions that are not in the online store.

        What could not be confirmed by then is looked up in the store: an append whose reply
        timed out may have been written all the same (Redis finishes a script it started), and
        the log says which is which."""
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while self._jobs and time.monotonic() < deadline:
            if not self.drain():
                time.sleep(min(self.retry_after_s, max(0.0, deadline - time.monotonic())))
        with self._lock:
            unconfirmed = {cid: dict(events) for cid, events in self._pending.items()}
        left = sum(len(events) for events in unconfirmed.values())
        if not left:
            return 0
        try:
            found = self._look_up(unconfirmed)
        except _STORE_ERRORS as e:
            log.error("%d scored transactions could not be confirmed as appended to the online "
                      "store, which did not answer (%s); those sent before it stopped "
                      "answering may be there", left, e)
            return left
        if found:
            log.warning("%d scored transactions whose appends timed out are in the online "
                        "store all the same", found)
        if left - found:
            log.error("%d scored transactions are not in the online store: their appends "
                      "failed", left - found)
        return left - found

    def _look_up(self, unconfirmed: dict[str, dict[str, tuple[int, float]]]) -> int:
        """How many of these unconfirmed transactions the store holds (read at each customer's
        newest unconfirmed time, so that a history is judged fresh)."""
        customers = list(unconfirmed)
        found = 0
        for start in range(0, len(customers), self.max_bundle):
            part = customers[start : start + self.max_bundle]
            requests = [
                OnlineRequest("", max(t for t, _ in unconfirmed[cid].values()), cid, "", 0.0)
                for cid in part
            ]
            read = self.histories.read(requests)
            for cid, history in zip(part, read.customers, strict=True):
                held = set(history.transaction_id)
                found += sum(tid in held for tid in unconfirmed[cid])
        return found


def with_events(
    history: CustomerHistory, events: list[tuple[int, float, str]], max_entries: int
) -> CustomerHistory:
    """``history`` plus the events whose ids it does not hold yet; at most ``max_entries``
    entries, the newest."""
    known = set(history.transaction_id)
    new = [e for e in events if e[2] not in known]
    if not new:
        return newest(history, max_entries)
    return newest(CustomerHistory(
        np.concatenate([history.time_us, np.array([e[0] for e in new], np.int64)]),
        np.concatenate([history.amount, np.array([e[1] for e in new], np.float64)]),
        [*history.transaction_id, *(e[2] for e in new)],
    ), max_entries)


class Scorer:
    """Scores batches of transactions with one model version (see the module docstring).

    Not thread-safe: one scorer is driven by one thread (the server's event loop). Without an
    ``appender`` the near-real-time appends run inline (tests, tools); the server passes one.
    """

    def __init__(
        self,
        model: LoadedModel,
        histories: OnlineHistories,
        *,
        appender: Appender | None = None,
        spec: FeatureSpec = DEFAULT_SPEC,
        retry_after_s: float,
        sink: Callable[[ScoredBatch], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        history_bound: int | None = None,
    ):
        """``history_bound``: entries of a customer's history features see, the newest
        (default: the online store's default bound, ``redis.history_max_entries``)."""
        card = model.card
        missing = [n for n in card.feature_names if n not in spec.features]
        if missing:
            raise ValueError(
                f"{card.label} needs features {missing} that {card.feature_service} does not "
                f"compute (it computes {spec.features})"
            )
        self.booster: lightgbm.Booster = model.booster
        self.card = card
        self.histories = histories
        self.history_bound = history_bound or HistoryLimits().max_entries
        self.appender = appender or Appender(
            histories, model_name=card.name, retry_after_s=retry_after_s, threaded=False,
            history_bound=self.history_bound,
        )
        self._inline_appends = appender is None
        self.spec = spec
        self.retry_after_s = retry_after_s
        self.sink = sink
        self.clock = clock
        self._retry_at = 0.0
        name, version = card.name, str(card.version)
        self._m_fetch = m.FEATURE_FETCH_SECONDS.labels(name)
        self._m_predict = m.PREDICT_SECONDS.labels(name, version)
        self._m_batch = m.BATCH_SIZE.labels(name)
        self._m_score = m.SCORE.labels(name, version)
        self._m_fraud = m.TRANSACTIONS.labels(name, version, FRAUD)
        self._m_legit = m.TRANSACTIONS.labels(name, version, LEGIT)
        self._m_degraded = {r: m.DEGRADED.labels(name, r) for r in m.DEGRADED_REASONS}
        self._m_missing = {
            (entity, status): m.MISSING_FEATURES.labels(name, entity, status)
            for entity in ("customer", "terminal")
            for status in ("NOT_FOUND", "OUTSIDE_MAX_AGE")
        }

    # ------------------------------------------------------------------------------ steps

    def prepare(
        self, transactions: Sequence[Transaction], request_ids: Sequence[str] | None = None
    ) -> Prepared:
        """Step 1: the batch in event order, as online-store requests."""
        n = len(transactions)
        ids = list(request_ids) if request_ids is not None else [""] * n
        order = event_order(transactions)
        ordered = [transactions[i] for i in order]
        return Prepared(
            order=order,
            transactions=ordered,
            request_ids=[ids[i] for i in order],
            requests=[
                OnlineRequest(t.transaction_id, t.time_us, t.customer_id, t.terminal_id,
                              t.amount)
                for t in ordered
            ],
            # Before the read: an append confirmed in between is then in what is read.
            unconfirmed=self.appender.pending_events({t.customer_id for t in ordered}),
        )

    def read(self, prepared: Prepared) -> OnlineRead | None:
        """Step 2 (blocking): the histories, or None when degraded (``prepared.reason``)."""
        if not self._may_read(prepared):
            return None
        t0 = time.perf_counter()
        try:
            return self.histories.read(prepared.requests)
        except _STORE_ERRORS as e:
            self._failed(prepared, e)
            return None
        finally:
            self._m_fetch.observe(time.perf_counter() - t0)

    async def read_async(self, prepared: Prepared, reader: AsyncReader) -> OnlineRead | None:
        """Step 2 (awaitable): like :meth:`read`, the event loop serving other requests
        during the round trip."""
        if not self._may_read(prepared):
            return None
        t0 = time.perf_counter()
        try:
            return await reader.read(prepared.requests)
        except _STORE_ERRORS as e:
            self._failed(prepared, e)
            return None
        finally:
            self._m_fetch.observe(time.perf_counter() - t0)

    def _may_read(self, prepared: Prepared) -> bool:
        if self.clock() < self._retry_at:
            prepared.reason = "backoff"
            return False
        return True

    def _failed(self, prepared: Prepared, error: BaseException) -> None:
        self._retry_at = self.clock() + self.retry_after_s
        prepared.reason = _failure_reason(error)
        log.warning("online store read failed (%s), scoring with default features: %s",
                    prepared.reason, error)

    @property
    def store_available(self) -> bool:
        """False while in back-off after a failure."""
        return self.clock() >= self._retry_at

    def score(
        self, transactions: Sequence[Transaction], request_ids: Sequence[str] | None = None
    ) -> list[ScoredTransaction]:
        """Scores, decisions and freshness of ``transactions``, in their order (all steps)."""
        if not transactions:
            return []
        prepared = self.prepare(transactions, request_ids)
        return self.finish(prepared, self.read(prepared))

    def finish(self, prepared: Prepared, read: OnlineRead | None) -> list[ScoredTransaction]:
        """Step 3: features, model, appends, log, metrics; results in the caller's order."""
        requests, ordered = prepared.requests, prepared.transactions
        n = len(requests)
        reason = prepared.reason if read is None else None
        if read is None:
            stored: list[CustomerHistory] = [CustomerHistory.empty()] * n
            terminals: Sequence[TerminalHistory] = [TerminalHistory.empty()] * n
            c_fresh = [DEFAULT] * n
            t_fresh = [DEFAULT] * n
        else:
            bound = self.history_bound
            stored = [newest(h, bound) for h in read.customers]
            terminals = read.terminals
            c_fresh = [str(s) for s in read.customer_status]
            t_fresh = [str(s) for s in read.terminal_status]
            for k, r in enumerate(requests):
                events = prepared.unconfirmed.get(r.customer_id)
                if events:
                    stored[k] = with_events(stored[k], events, bound)
        customers = histories_before(requests, stored, self.history_bound)
        features = online_features(requests, customers, terminals, self.spec)
        matrix = np.column_stack(
            [np.asarray(features[name], dtype=np.float64) for name in self.card.feature_names]
        )
        t0 = time.perf_counter()
        scores = np.asarray(self.booster.predict(matrix), dtype=np.float64)
        self._m_predict.observe(time.perf_counter() - t0)
        threshold = self.card.threshold
        decisions = [FRAUD if s >= threshold else LEGIT for s in scores.tolist()]

        self.appender.submit(requests, read)
        if self._inline_appends:
            self.appender.drain()
        self._record(n, scores, decisions, reason, c_fresh, t_fresh)
        if self.sink is not None:
            self.sink(
                ScoredBatch(
                    transactions=ordered,
                    request_ids=prepared.request_ids,
                    features=features,
                    scores=scores,
                    decisions=decisions,
                    degraded_reason=reason,
                    customer_freshness=c_fresh,
                    terminal_freshness=t_fresh,
                    model_name=self.card.name,
                    model_version=self.card.version,
                    feature_service=self.card.feature_service,
                    threshold=threshold,
                    logged_at_us=time.time_ns() // 1000,
                )
            )
        results: list[ScoredTransaction | None] = [None] * n
        degraded = reason is not None
        for k, i in enumerate(prepared.order):
            results[i] = ScoredTransaction(
                transaction=ordered[k],
                score=float(scores[k]),
                decision=decisions[k],
                degraded=degraded,
                customer_freshness=c_fresh[k],
                terminal_freshness=t_fresh[k],
            )
        return [r for r in results if r is not None]

    def _record(
        self,
        n: int,
        scores: np.ndarray,
        decisions: list[str],
        reason: str | None,
        c_fresh: list[str],
        t_fresh: list[str],
    ) -> None:
        self._m_batch.observe(n)
        for s in scores.tolist():
            self._m_score.observe(s)
        frauds = decisions.count(FRAUD)
        if frauds:
            self._m_fraud.inc(frauds)
        if n - frauds:
            self._m_legit.inc(n - frauds)
        if reason is not None:
            self._m_degraded[reason].inc(n)
            return
        for entity, statuses in (("customer", c_fresh), ("terminal", t_fresh)):
            for status in ("NOT_FOUND", "OUTSIDE_MAX_AGE"):
                count = statuses.count(status)
                if count:
                    self._m_missing[(entity, status)].inc(count)
