"""The adaptive batcher on a real scorer and an in-memory store: concurrent requests scored
together, each answered with its own results; a request that fits a model call never split, a
larger one (or a busy card's) scored a slice at a time with other requests in between; beyond
the queue bounds, requests shed; errors delivered to every waiter."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY
from serving_support import MemoryHistories, transactions_of, world

from inference.batching import MicroBatcher, Overloaded
from inference.schema import Transaction
from inference.scoring import ScoredBatch, ScoredTransaction, Scorer
from vigil import contract as c

pytestmark = pytest.mark.unit


def make(
    max_batch: int, *, per_customer: int = 1_000, max_queued: int = 100_000,
    queued_per_customer: int = 100_000,
) -> tuple[MicroBatcher, MemoryHistories, list[ScoredBatch]]:
    store = world().store()
    batches: list[ScoredBatch] = []
    scorer = Scorer(world().model, store, retry_after_s=0.5, sink=batches.append)
    batcher = MicroBatcher(scorer, max_batch=max_batch, max_batch_per_customer=per_customer,
                           max_queued=max_queued, max_queued_per_customer=queued_per_customer,
                           retry_after_s=2)
    return batcher, store, batches


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


def test_batches_respect_max_batch_and_split_only_what_cannot_fit_one():
    batcher, _, batches = make(max_batch=4)
    requests = requests_of([3, 2, 5, 1, 1])
    answers = asyncio.run(submit_all(batcher, requests))
    # [3 + a slice of the 5], then [2 + 1 + 1] (the 2 waits for a call it fits whole), then
    # the rest of the 5 (it went to the back of the queue after its first slice).
    assert [len(b.transactions) for b in batches] == [4, 4, 4]
    in_call = [{t.transaction_id for t in b.transactions} for b in batches]
    for request in requests[:2] + requests[3:]:  # each within one call
        assert sum({t.transaction_id for t in request} <= ids for ids in in_call) == 1
    assert [[r.transaction for r in a] for a in answers if isinstance(a, list)] == requests


def test_a_large_request_of_a_busy_card_is_scored_a_slice_at_a_time():
    """Issue 14: a 1,000-transaction request of a customer with 60k history entries took 1.4 s
    on the event loop, and a request of another customer waited behind it the same 1.4 s. Now
    a model call takes at most ``max_batch_per_customer`` of one customer: the small requests
    that arrived after the large one are scored in its first call, and answered long before it
    is, and its results are those of scoring it in one call."""
    w = world()
    live = w.live
    busy = live[c.CUSTOMER_ID].value_counts().index[0]
    large = transactions_of(live[live[c.CUSTOMER_ID] == busy])
    small = [[t] for t in transactions_of(live[live[c.CUSTOMER_ID] != busy].iloc[:3])]
    assert len(large) >= 6
    batcher, _, batches = make(max_batch=256, per_customer=2)
    finished: list[str] = []

    async def scenario() -> list[list[ScoredTransaction]]:
        async def one(txs: list[Transaction], name: str) -> list[ScoredTransaction]:
            answer = await batcher.submit(txs, name)
            finished.append(name)
            return answer

        return await asyncio.wait_for(asyncio.gather(
            one(large, "large"), *(one(txs, f"small-{k}") for k, txs in enumerate(small))
        ), HANG_S)

    answers = asyncio.run(scenario())
    assert finished[-1] == "large" and len(finished) == 4
    assert len(batches) == -(-len(large) // 2)  # ceil: two of the card per call
    assert {t.transaction_id for t in batches[0].transactions} >= {s[0].transaction_id
                                                                   for s in small}
    assert all(sum(t.customer_id == busy for t in b.transactions) <= 2 for b in batches)
    # Its slices saw each other: the same results as one call over the whole request.
    alone = Scorer(w.model, w.store(), retry_after_s=0.5).score(large)
    assert [r.transaction for r in answers[0]] == large
    assert [r.score for r in answers[0]] == [r.score for r in alone]


def shed(answers: list) -> list[Overloaded]:
    return [a for a in answers if isinstance(a, Overloaded)]


def test_requests_beyond_the_queue_bound_are_shed_with_a_retry_after():
    batcher, _, batches = make(max_batch=256, max_queued=10)
    before = REGISTRY.get_sample_value(
        "vigil_serving_shed_requests_total", {"model_name": "fraud_unit", "reason": "queue"})
    requests = requests_of([3, 3, 3, 3, 1, 12])
    answers = asyncio.run(submit_all(batcher, requests))
    # 3 + 3 + 3 admitted; the next 3 would make 12 > 10; 1 fits (10); 12 does not.
    assert [isinstance(a, list) for a in answers] == [True, True, True, False, True, False]
    assert all(e.reason == "queue" and e.retry_after_s == 2 and "retry after 2 s" in str(e)
               for e in shed(answers))
    assert sum(len(b.transactions) for b in batches) == 10 and batcher.queued == 0
    # Alone, a request larger than the bound is admitted (it always fits an empty queue).
    alone = asyncio.run(submit_all(batcher, requests_of([12], first=20)))
    assert isinstance(alone[0], list) and len(alone[0]) == 12
    # The batcher counts nothing itself: the model counts what it sheds.
    assert REGISTRY.get_sample_value(
        "vigil_serving_shed_requests_total",
        {"model_name": "fraud_unit", "reason": "queue"}) == before


def test_a_card_beyond_its_share_of_the_queue_is_shed_and_other_cards_are_not():
    w = world()
    live = w.live
    busy = live[c.CUSTOMER_ID].value_counts().index[0]
    hot = transactions_of(live[live[c.CUSTOMER_ID] == busy])[:5]
    others = transactions_of(live[live[c.CUSTOMER_ID] != busy].iloc[:5])
    batcher, _, _ = make(max_batch=256, queued_per_customer=2)
    requests = [[t] for t in hot] + [[t] for t in others]
    answers = asyncio.run(submit_all(batcher, requests))
    assert [isinstance(a, list) for a in answers] == [True, True, False, False, False] + [True] * 5
    assert all(e.reason == "customer" and str(busy) in str(e) for e in shed(answers))
    assert batcher.queued == 0 and not batcher._queued_by_customer


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
