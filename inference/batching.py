"""Adaptive batching: requests that arrive while a batch is being scored are scored together.

There is no waiting window: a request alone is scored at once (one client sees no added
latency), and under load every model call takes all requests that queued up meanwhile — among
them those that arrived while the previous batch waited for Redis — so N concurrent clients
cost one online-store round trip and one ``Booster.predict`` per batch instead of N (Triton's
dynamic batcher with zero queue delay).

Batches are scored strictly one after the other on the event loop, between I/O events: no
thread hand-off and no GIL contention with the HTTP layer, and each batch sees the near-real-time
appends of the previous one. A ``reader`` (an awaitable online-store read) is optional; the
server uses the scorer's blocking read (see :mod:`inference.online` for why).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from inference.schema import Transaction
from inference.scoring import AsyncReader, ScoredTransaction, Scorer

_Item = tuple[Sequence[Transaction], str, "asyncio.Future[list[ScoredTransaction]]"]


class MicroBatcher:
    def __init__(self, scorer: Scorer, *, max_batch: int, reader: AsyncReader | None = None):
        """``reader``: awaitable online-store reads (None: the scorer's blocking read).
        ``max_batch``: transactions per model call (a request is never split; a request
        larger than this is scored alone)."""
        self.scorer = scorer
        self.reader = reader
        self.max_batch = max_batch
        self._queue: list[_Item] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(
        self, transactions: Sequence[Transaction], request_id: str
    ) -> list[ScoredTransaction]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[ScoredTransaction]] = loop.create_future()
        self._queue.append((transactions, request_id, future))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await future

    def _take(self) -> list[_Item]:
        batch = [self._queue.pop(0)]
        size = len(batch[0][0])
        while self._queue and size + len(self._queue[0][0]) <= self.max_batch:
            item = self._queue.pop(0)
            batch.append(item)
            size += len(item[0])
        return [item for item in batch if not item[2].done()]  # clients that went away

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                if batch:
                    await self._run(batch)
        finally:
            self._task = None

    async def _run(self, batch: list[_Item]) -> None:
        transactions: list[Transaction] = []
        request_ids: list[str] = []
        for txs, request_id, _ in batch:
            transactions.extend(txs)
            request_ids.extend([request_id] * len(txs))
        scorer = self.scorer
        try:
            prepared = scorer.prepare(transactions, request_ids)
            if self.reader is not None:
                read = await scorer.read_async(prepared, self.reader)
            else:
                read = scorer.read(prepared)
            results = scorer.finish(prepared, read)
        except Exception as e:  # noqa: BLE001 - delivered to every waiting request, not swallowed
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        start = 0
        for txs, _, future in batch:
            if not future.done():
                future.set_result(results[start : start + len(txs)])
            start += len(txs)
