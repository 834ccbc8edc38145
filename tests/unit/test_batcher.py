"""The adaptive batcher on a real scorer and an in-memory store: concurrent requests scored
together, each answered with its own results, never split, errors delivered to every waiter."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from serving_support import MemoryHistories, transactions_of, world

from inference.batching import MicroBatcher
from inference.schema import Transaction
from inference.scoring import ScoredBatch, ScoredTransaction, Scorer

pytestmark = pytest.mark.unit


def make(max_batch: int) -> tuple[MicroBatcher, MemoryHistories, list[ScoredBatch]]:
    store = world().store()
    batches: list[ScoredBatch] = []
    scorer = Scorer(world().model, store, retry_after_s=0.5, sink=batches.append)
    return MicroBatcher(scorer, max_batch=max_batch), store, batches


def requests_of(sizes: Sequence[int], first: int = 0) -> list[list[Transaction]]:
    txs = transactions_of(world().live.iloc[first : first + sum(sizes)])
    out, start = [], 0
    for size in sizes:
        out.append(txs[start : start + size])
        start += size
    return out


#: Turns a request left waiting forever into a failure (not a speed limit).
HANG_S = 60


async def submit_all(batcher: MicroBatcher, requests: list[list[Transaction]]
                     ) -> list[list[ScoredTransaction] | BaseException]:
    return await asyncio.wait_for(
        asyncio.gather(
            *(batcher.submit(txs, f"req-{k}") for k, txs in enumerate(requests)),
            return_exceptions=True,
        ),
        HANG_S,
    )


def test_concurrent_requests_share_one_model_call_and_get_their_own_results():
    batcher, _, batches = make(max_batch=256)
    # Interleaved slices of the same stretch of traffic: customers repeat across requests.
    txs = transactions_of(world().live.iloc[:30])
    requests = [txs[k::5] for k in range(5)]
    answers = asyncio.run(submit_all(batcher, requests))
    assert len(batches) == 1 and len(batches[0].transactions) == 30
    scores = {t.transaction_id: float(s) for t, s in zip(batches[0].transactions,
                                                          batches[0].scores, strict=True)}
    request_of = {t.transaction_id: f"req-{k}" for k, r in enumerate(requests) for t in r}
    assert batches[0].request_ids == [request_of[t.transaction_id]
                                      for t in batches[0].transactions]
    for request, answer in zip(requests, answers, strict=True):
        assert isinstance(answer, list)
        assert [r.transaction for r in answer] == request  # its own, in its order
        assert [r.score for r in answer] == [scores[t.transaction_id] for t in request]


def test_batches_respect_max_batch_and_never_split_a_request():
    batcher, _, batches = make(max_batch=4)
    requests = requests_of([3, 2, 5, 1, 1])
    answers = asyncio.run(submit_all(batcher, requests))
    # [3] (3 + 2 > 4), [2] (2 + 5 > 4), [5] alone (larger than max_batch), [1, 1].
    assert [len(b.transactions) for b in batches] == [3, 2, 5, 2]
    assert [[r.transaction for r in a] for a in answers if isinstance(a, list)] == requests


def test_a_scorer_error_reaches_every_waiting_request_and_the_batcher_goes_on():
    batcher, store, batches = make(max_batch=256)
    store.read_error = RuntimeError("a bug in the scorer's store")
    answers = asyncio.run(submit_all(batcher, requests_of([2, 3, 1])))
    assert all(isinstance(a, RuntimeError) and "a bug" in str(a) for a in answers), answers
    assert not batches
    store.read_error = None
    answers = asyncio.run(submit_all(batcher, requests_of([2], first=10)))
    assert isinstance(answers[0], list) and len(answers[0]) == 2


def test_a_request_whose_client_went_away_is_not_scored():
    batcher, store, batches = make(max_batch=256)
    requests = requests_of([2, 2, 2])

    async def scenario() -> list[list[ScoredTransaction] | BaseException]:
        tasks = [asyncio.create_task(batcher.submit(txs, f"req-{k}"))
                 for k, txs in enumerate(requests)]
        await asyncio.sleep(0)  # every request queued, the batch not taken yet
        tasks[1].cancel()
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), HANG_S)

    answers = asyncio.run(scenario())
    assert isinstance(answers[1], asyncio.CancelledError)
    assert [[r.transaction for r in a] for a in (answers[0], answers[2])
            if isinstance(a, list)] == [requests[0], requests[2]]
    scored = [t.transaction_id for b in batches for t in b.transactions]
    assert sorted(scored) == sorted(t.transaction_id for t in requests[0] + requests[2])
    gone = requests[1][0]
    assert gone.transaction_id not in store.ids(gone.customer_id)
