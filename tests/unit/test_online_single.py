"""One request is computed on Python numbers, a batch on NumPy arrays: both give the same bits.

:func:`finalize` runs on arrays for batches and on Python numbers for a single transaction
(per-call overhead, not arithmetic, is a single request's cost); :func:`online_stats` likewise.
The parity test covers single requests against batch; these cover single against batched.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_store.transforms import (
    DEFAULT_SPEC,
    US_PER_DAY,
    CustomerHistory,
    OnlineRequest,
    TerminalHistory,
    WindowStats,
    finalize,
    online_features,
)

pytestmark = pytest.mark.unit

T0 = 1_530_000_000_000_000
spec = DEFAULT_SPEC
counts = st.integers(0, 6)
amounts = st.sampled_from([0.0, 1e-300, 0.01, 5.0, 5.0, 220.01, 1e6])


@st.composite
def window_stats(draw: st.DrawFn, k: int) -> WindowStats:
    def ints(lo: int, hi: int) -> np.ndarray:
        return np.array(draw(st.lists(st.integers(lo, hi), min_size=k, max_size=k)), np.int64)

    def floats() -> np.ndarray:
        return np.array(draw(st.lists(amounts, min_size=k, max_size=k)), np.float64)

    c_win, t_win = spec.customer_windows_days, spec.terminal_windows_days
    count = {w: ints(1, 6) for w in c_win}
    amount = floats()
    return WindowStats(
        time_us=ints(T0 - 400 * US_PER_DAY, T0 + 400 * US_PER_DAY),
        amount=amount,
        customer_count=count,
        # equal amounts (zero spread) are common: sums from one repeated amount
        customer_sum={w: count[w] * amount for w in c_win},
        customer_sumsq={spec.spread_window_days: count[max(c_win)] * amount**2 + floats()},
        terminal_count={w: ints(0, 6) for w in t_win},
        terminal_frauds={w: ints(0, 3) for w in t_win},
        customer_recent_max=floats(),
        customer_baseline_count=ints(0, 6),
        customer_baseline_sum=floats(),
        terminal_last_known_us=np.where(
            ints(0, 1) == 1, ints(T0 - 40 * US_PER_DAY, T0 + 400 * US_PER_DAY), -1
        ),
        terminal_last_label=ints(0, 1),
    )


def _row(stats: WindowStats, i: int) -> WindowStats:
    """Row i as Python numbers, the way online_stats hands a single request over."""

    def one(value: np.ndarray) -> int | float:
        return value[i].item()

    return WindowStats(
        time_us=one(stats.time_us),
        amount=one(stats.amount),
        customer_count={w: one(v) for w, v in stats.customer_count.items()},
        customer_sum={w: one(v) for w, v in stats.customer_sum.items()},
        customer_sumsq={w: one(v) for w, v in stats.customer_sumsq.items()},
        terminal_count={w: one(v) for w, v in stats.terminal_count.items()},
        terminal_frauds={w: one(v) for w, v in stats.terminal_frauds.items()},
        customer_recent_max=one(stats.customer_recent_max),
        customer_baseline_count=one(stats.customer_baseline_count),
        customer_baseline_sum=one(stats.customer_baseline_sum),
        terminal_last_known_us=one(stats.terminal_last_known_us),
        terminal_last_label=one(stats.terminal_last_label),
    )


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8).flatmap(window_stats))
def test_finalize_on_numbers_equals_finalize_on_arrays(stats: WindowStats) -> None:
    arrays = finalize(stats, spec)
    for i in range(len(stats.time_us)):
        numbers = finalize(_row(stats, i), spec)
        assert list(numbers) == list(arrays)
        for name, value in numbers.items():
            expected = arrays[name][i]
            assert type(value) is (int if expected.dtype.kind == "i" else float), name
            assert value == expected or (np.isnan(value) and np.isnan(expected)), name


events = st.lists(
    st.tuples(st.integers(-70 * US_PER_DAY, US_PER_DAY), amounts, st.integers(0, 1)), max_size=30
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(events, events, st.integers(-US_PER_DAY, US_PER_DAY), amounts),
                min_size=1, max_size=6))
def test_a_batch_equals_its_requests_one_by_one(cases) -> None:
    requests, customers, terminals = [], [], []
    for i, (c_events, t_events, offset, amount) in enumerate(cases):
        requests.append(OnlineRequest(f"r{i}", T0 + offset, f"c{i}", f"t{i}", amount))
        customers.append(CustomerHistory(
            np.array([T0 + o for o, _, _ in c_events], np.int64),
            np.array([a for _, a, _ in c_events], np.float64),
            [f"x{j}" for j in range(len(c_events))],
        ))
        terminals.append(TerminalHistory(
            np.array([T0 + o for o, _, _ in t_events], np.int64),
            np.array([f for _, _, f in t_events], np.int64),
        ))
    batch = online_features(requests, customers, terminals)
    for i in range(len(requests)):
        one = online_features([requests[i]], [customers[i]], [terminals[i]])
        for name, values in batch.items():
            assert one[name].dtype == values.dtype, name
            assert one[name].tolist() == [values[i]], name
