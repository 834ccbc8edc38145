"""The one event-order rule of same-instant transactions (vigil.ordering): the rule itself, and
its vectorized form equal to it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.errors import DataError
from vigil.ordering import (
    INT64_MAX,
    INT64_MIN,
    event_order,
    id_order_key,
    id_ranks,
    numeric_value,
)

pytestmark = pytest.mark.unit


def test_numeric_ids_by_value_first_then_text():
    ids = ["abc", "9223372036854775808", "7", "1e3", "+5", "007", "-5", "1234567890123456789"]
    assert sorted(ids, key=id_order_key) == [
        "-5", "+5", "007", "7", "1234567890123456789", "1e3", "9223372036854775808", "abc",
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0), ("-0", 0), ("+7", 7), ("007", 7), ("1234567890123456789", 1234567890123456789),
        (str(INT64_MAX), INT64_MAX), (str(INT64_MIN), INT64_MIN), ("0" * 40 + "5", 5),
        (str(INT64_MAX + 1), None), (str(INT64_MIN - 1), None), ("9" * 5000, None),
        ("1e3", None), (" 5", None), ("5 ", None), ("7\n", None), ("0x10", None), ("1_000", None),
        ("١٢", None), ("", None), ("+", None), ("--5", None), ("5.0", None),
    ],
)
def test_what_is_numeric(text: str, value: int | None):
    assert numeric_value(text) == value


def test_text_order_is_code_point_order():
    # 'é' (U+00E9) after 'z'; U+10000 after U+FFFF: UTF-16 would order them the other way round
    ids = ["\U00010000", "\uffff", "é", "z", "Z", "10", "9"]
    assert sorted(ids, key=id_order_key) == ["9", "10", "Z", "z", "é", "\uffff", "\U00010000"]
    assert [ids[i] for i in np.argsort(id_ranks(ids), kind="stable")] == sorted(
        ids, key=id_order_key
    )


numberish = st.one_of(
    st.from_regex(r"[+-]?0{0,3}[0-9]{1,20}", fullmatch=True),
    st.sampled_from([str(INT64_MAX), str(INT64_MIN), str(INT64_MAX + 1), str(INT64_MIN - 1),
                     "1e3", " 5", "7\n", "0x10", "١٢", "", "+", "-", "5.0"]),
    st.integers(INT64_MIN, INT64_MAX).map(str),
)
any_id = st.one_of(numberish, st.text(max_size=6))


@given(st.lists(any_id, max_size=40))
def test_vectorized_ranks_equal_the_rule(ids: list[str]):
    ranks = id_ranks(ids)
    for i in range(len(ids)):
        for j in range(len(ids)):
            key_i, key_j = id_order_key(ids[i]), id_order_key(ids[j])
            assert (ranks[i] < ranks[j]) == (key_i < key_j), (ids[i], ids[j])
            assert (ranks[i] == ranks[j]) == (ids[i] == ids[j])


@given(st.lists(st.tuples(st.integers(0, 3), any_id), max_size=40))
def test_event_order_is_time_then_the_rule(rows: list[tuple[int, str]]):
    times = np.array([t for t, _ in rows], dtype=np.int64)
    ids = [i for _, i in rows]
    order = event_order(times, pa.array(ids, pa.string()))
    assert sorted(order.tolist()) == list(range(len(rows)))
    keys = [(rows[i][0], id_order_key(rows[i][1])) for i in order]
    assert keys == sorted(keys)


def test_missing_ids_are_an_error():
    with pytest.raises(DataError, match="TRANSACTION_ID"):
        id_ranks(pa.array(["1", None]))
