"""Adaptive batching with admission control: requests that arrive while a batch is being
scored are scored together, within bounds, and beyond the bounds they are shed.

There is no waiting window: a request alone is scored at once (one client sees no added
latency), and under load every model call takes the requests that queued up meanwhile — among
them those that arrived while the previous batch waited for Redis — so N concurrent clients
cost one online-store round trip and one ``Booster.predict`` per batch instead of N (Triton's
dynamic batcher with zero queue delay).

Bounds (``serving.*`` settings):

* **admission** — a request is admitted only if the transactions queued (admitted, not yet
  scored) stay within ``max_queued`` and each of its customers' within
  ``max_queued_per_customer``; otherwise :class:`Overloaded` (HTTP 429 with Retry-After), so
  that latency stays bounded and a card sending faster than it is scored is shed while other
  cards are not. A request always fits when nothing of it (of its customers) is queued.
* **a model call** takes at most ``max_batch`` transactions, at most
  ``max_batch_per_customer`` of one customer. A request that fits a model call is never split;
  a larger one (or one with more of a customer than its share) is scored a slice at a time, in
  event order, and goes to the back of the queue after each slice, so other requests are
  scored in between: one large request, or one busy card, delays the others by one slice, not
  by all of its work. Its later slices see its earlier ones (near-real-time appends), so its
  results are those of one model call.

Batches are scored one after the other on the event loop, between I/O events: after each one
the loop answers, reads and admits requests before the next. No thread hand-off and no GIL
contention with the HTTP layer, and each batch sees the near-real-time appends of the previous
one. A ``reader`` (an awaitable online-store read) is optional; the server uses the scorer's
blocking read (see :mod:`inference.online` for why).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Sequence
from typing import Final

from inference.schema import Transaction
from inference.scoring import AsyncReader, ScoredTransaction, Scorer, event_order

#: Why a request was shed (the ``reason`` label of ``vigil_serving_shed_requests_total``).
QUEUE: Final = "queue"
CUSTOMER: Final = "customer"


class Overloaded(Exception):
    """A request not admitted: the queue (``reason`` :data:`QUEUE`) or one of its customers'
    share of it (:data:`CUSTOMER`) is full. HTTP 429 with ``Retry-After``."""

    def __init__(self, reason: str, message: str, retry_after_s: int):
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclasses.dataclass(eq=False)
class _Request:
    #: The request's transactions in event order, and each one's position in the request.
    transactions: list[Transaction]
    positions: list[int]
    request_id: str
    future: asyncio.Future[list[ScoredTransaction]]
    results: list[ScoredTransaction | None]
    #: Transactions taken into model calls so far (a prefix of ``transactions``).
    taken: int = 0
    #: Whether all of it fits one model call (then it is never split).
    whole: bool = True


class MicroBatcher:
    def __init__(
        self,
        scorer: Scorer,
        *,
        max_batch: int,
        max_batch_per_customer: int,
        max_queued: int,
        max_queued_per_customer: int,
        retry_after_s: int,
        reader: AsyncReader | None = None,
    ):
        """See the module docstring for the bounds; ``retry_after_s`` is what a shed request is
        told. ``reader``: awaitable online-store reads (None: the scorer's blocking read)."""
        self.scorer = scorer
        self.reader = reader
        self.max_batch = max_batch
        self.max_batch_per_customer = max_batch_per_customer
        self.max_queued = max_queued
        self.max_queued_per_customer = max_queued_per_customer
        self.retry_after_s = retry_after_s
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued = 0
        self._queued_by_customer: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ admission

    @property
    def queued(self) -> int:
        """Transactions admitted and not yet scored."""
        return self._queued

    @property
    def full(self) -> bool:
        """Whether no request can be admitted now (checked before a body is parsed)."""
        return self._queued >= self.max_queued

    def shed_if_full(self) -> None:
        if self.full:
            raise self._overloaded(QUEUE, f"{self._queued:,} transactions are waiting")

    def _overloaded(self, reason: str, why: str) -> Overloaded:
        return Overloaded(reason, f"server busy: {why}; retry after {self.retry_after_s} s",
                          self.retry_after_s)

    def _admit(self, transactions: Sequence[Transaction]) -> None:
        n = len(transactions)
        if self._queued and self._queued + n > self.max_queued:
            raise self._overloaded(QUEUE, f"{self._queued:,} transactions are waiting")
        by_customer = self._queued_by_customer
        if n == 1:
            counts = {transactions[0].customer_id: 1}
        else:
            counts = collections.Counter(t.customer_id for t in transactions)
        for customer, count in counts.items():
            waiting = by_customer.get(customer, 0)
            if waiting and waiting + count > self.max_queued_per_customer:
                raise self._overloaded(
                    CUSTOMER, f"{waiting:,} transactions of customer {customer[:64]!r} are waiting"
                )
        for customer, count in counts.items():
            by_customer[customer] = by_customer.get(customer, 0) + count
        self._queued += n

    def _release(self, transactions: Sequence[Transaction]) -> None:
        by_customer = self._queued_by_customer
        for t in transactions:
            left = by_customer[t.customer_id] - 1
            if left:
                by_customer[t.customer_id] = left
            else:
                del by_customer[t.customer_id]
        self._queued -= len(transactions)

    # ------------------------------------------------------------------ queue

    async def submit(
        self, transactions: Sequence[Transaction], request_id: str
    ) -> list[ScoredTransaction]:
        """Score ``transactions`` (results in their order); :class:`Overloaded` if not
        admitted."""
        self._admit(transactions)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[ScoredTransaction]] = loop.create_future()
        n = len(transactions)
        if n == 1:
            order = [0]
            ordered = list(transactions)
        else:
            order = event_order(transactions)
            ordered = [transactions[i] for i in order]
        request = _Request(ordered, order, request_id, future, [None] * n)
        if n > self.max_batch:
            request.whole = False
        elif n > self.max_batch_per_customer:
            counts = collections.Counter(t.customer_id for t in ordered)
            request.whole = max(counts.values()) <= self.max_batch_per_customer
        self._queue.append(request)
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[_Request, int, int]]:
        """The next model call: (request, first, end) slices of queued requests, in queue
        order, within the bounds. A request that fits a model call is taken whole or not at
        all; a larger one gives the longest prefix that fits and goes to the back."""
        taken: list[tuple[_Request, int, int]] = []
        size = 0
        in_call: dict[str, int] = {}
        kept: list[_Request] = []  # not taken at all: keep their places
        served: list[_Request] = []  # a slice taken, more to come: to the back
        queue = self._queue
        max_batch, share = self.max_batch, self.max_batch_per_customer
        while queue:
            request = queue.popleft()
            txs, start = request.transactions, request.taken
            if request.future.done():  # the client went away: never scored
                self._release(txs[start:])
                continue
            if size >= max_batch:
                kept.append(request)
                kept.extend(queue)
                queue.clear()
                break
            end = start
            while end < len(txs) and size < max_batch:
                customer = txs[end].customer_id
                used = in_call.get(customer, 0)
                if used >= share:
                    break
                in_call[customer] = used + 1
                size += 1
                end += 1
            if request.whole and end < len(txs):  # fits the next call whole: wait for it
                for t in txs[start:end]:
                    in_call[t.customer_id] -= 1
                size -= end - start
                end = start
            if end > start:
                taken.append((request, start, end))
                request.taken = end
                self._release(txs[start:end])
            if request.taken < len(txs):
                (served if end > start else kept).append(request)
        queue.extend(kept)
        queue.extend(served)
        return taken

    async def _drain(self) -> None:
        try:
            while self._queue:
                taken = self._take()
                if taken:
                    await self._run(taken)
                # Let the event loop answer, read and admit requests before the next call.
                await asyncio.sleep(0)
        finally:
            self._task = None

    async def _run(self, taken: list[tuple[_Request, int, int]]) -> None:
        transactions: list[Transaction] = []
        request_ids: list[str] = []
        for request, start, end in taken:
            transactions.extend(request.transactions[start:end])
            request_ids.extend([request.request_id] * (end - start))
        scorer = self.scorer
        try:
            prepared = scorer.prepare(transactions, request_ids)
            if self.reader is not None:
                read = await scorer.read_async(prepared, self.reader)
            else:
                read = scorer.read(prepared)
            results = scorer.finish(prepared, read)
        except Exception as e:  # noqa: BLE001 - delivered to every waiting request, not swallowed
            for request, _, _ in taken:
                if not request.future.done():
                    request.future.set_exception(e)
            return
        k = 0
        for request, start, end in taken:
            request.results[start:end] = results[k : k + end - start]
            k += end - start
            if request.taken == len(request.transactions) and not request.future.done():
                answer: list[ScoredTransaction | None] = [None] * len(request.results)
                for position, result in zip(request.positions, request.results, strict=True):
                    answer[position] = result
                request.future.set_result([r for r in answer if r is not None])
