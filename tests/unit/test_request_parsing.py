"""Request parsing, V1 and V2 side by side: one transaction builder, one rule per field, the
same refusal in both protocols (only the field's address differs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest

from inference.schema import (
    ALL_FIELDS,
    Limits,
    RequestError,
    ScoringRequest,
    Transaction,
    decode_v2,
    load_json,
    parse_v1,
    to_epoch_us,
)
from vigil import contract as c

pytestmark = pytest.mark.unit

CLOCK = to_epoch_us(datetime(2018, 6, 1))
LIMITS = Limits(max_instances=5, max_future_skew_s=60)
ROWS: list[dict[str, Any]] = [
    {c.TRANSACTION_ID: 17, c.TX_DATETIME: "2018-05-06T10:00:00", c.CUSTOMER_ID: 7,
     c.TERMINAL_ID: "t9", c.TX_AMOUNT: 10},
    {c.TRANSACTION_ID: "abc", c.TX_DATETIME: "2018-05-06T12:00:00.000123+02:00",
     c.CUSTOMER_ID: "c8", c.TERMINAL_ID: 3, c.TX_AMOUNT: 0.5},
    {c.TRANSACTION_ID: "18", c.TX_DATETIME: "2018-05-31T23:59:59Z", c.CUSTOMER_ID: "7",
     c.TERMINAL_ID: "t9", c.TX_AMOUNT: 0},
]
PROTOCOLS = ("v1", "v2")


def v2_body(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The same transactions as V2 tensors (one per field present in every row; ids as
    BYTES, since a tensor has one datatype)."""
    inputs = []
    for name in ALL_FIELDS:
        if not all(name in r for r in rows):
            continue
        values = [r[name] for r in rows]
        if name == c.TX_AMOUNT:
            datatype = "FP64"
        else:
            datatype = "BYTES"
            values = [v if isinstance(v, str) else str(v) for v in values]
        inputs.append({"name": name, "datatype": datatype, "shape": [len(rows)], "data": values})
    return {"inputs": inputs}


def parse(protocol: str, rows: list[dict[str, Any]]) -> ScoringRequest:
    if protocol == "v1":
        return parse_v1({"instances": rows}, LIMITS, CLOCK)
    return decode_v2(orjson.dumps(v2_body(rows)), None, LIMITS, CLOCK)


def refusal(protocol: str, rows: list[dict[str, Any]]) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse(protocol, rows)
    return caught.value


def address(protocol: str, field: str, row: int) -> str:
    return f"instances[{row}].{field}" if protocol == "v1" else f"inputs[{field}][{row}]"


def test_both_protocols_build_the_same_transactions():
    v1, v2 = parse("v1", ROWS), parse("v2", ROWS)
    assert (v1.protocol, v2.protocol) == ("v1", "v2")
    assert v1.transactions == v2.transactions
    first, second, third = v1.transactions
    assert first == Transaction("17", to_epoch_us(datetime(2018, 5, 6, 10)), "7", "t9", 10.0)
    assert second.time_us == to_epoch_us(datetime(2018, 5, 6, 10)) + 123  # UTC
    assert (second.customer_id, second.terminal_id) == ("c8", "3")
    assert third.amount == 0.0 and not third.generated_id


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_transaction_id_is_refused_naming_the_field(protocol, empty):
    rows = [ROWS[0], {**ROWS[1], c.TRANSACTION_ID: empty}]
    error = refusal(protocol, rows)
    assert error.status == 400
    assert error.field == address(protocol, c.TRANSACTION_ID, 1)
    assert str(error) == f"{error.field}: must not be empty"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_absent_transaction_id_is_generated(protocol):
    rows = [{k: v for k, v in r.items() if k != c.TRANSACTION_ID} for r in ROWS]
    transactions = parse(protocol, rows).transactions
    ids = [t.transaction_id for t in transactions]
    assert all(t.generated_id for t in transactions)
    assert len(set(ids)) == 3 and all(i.startswith("vigil-") for i in ids)


def test_a_null_transaction_id_is_generated_in_v1():
    (tx,) = parse_v1({"instances": [{**ROWS[0], c.TRANSACTION_ID: None}]}, LIMITS, CLOCK) \
        .transactions
    assert tx.generated_id and tx.transaction_id.startswith("vigil-")


BAD_VALUES = [
    (c.TX_AMOUNT, -1.0, "must be >= 0, got -1.0"),
    (c.TX_AMOUNT, 2e9, "must be <= 1e+09"),
    (c.TX_DATETIME, "yesterday", "cannot parse 'yesterday' as ISO-8601"),
    (c.TX_DATETIME, "2018-06-01T00:01:01", "ahead of the server clock (at most 60 s allowed)"),
    (c.TX_DATETIME, "1969-12-31T23:59:59", "is before 1970-01-01"),
    (c.CUSTOMER_ID, " ", "must not be empty"),
    (c.TERMINAL_ID, "x" * 129, "must be at most 128 characters"),
    (c.CUSTOMER_ID, "a\u0000b", "must not contain control characters"),
    (c.TRANSACTION_ID, "y" * 200, "must be at most 128 characters"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD_VALUES,
                         ids=[f"{f}-{m[:20]}" for f, _, m in BAD_VALUES])
def test_a_bad_value_gets_the_same_refusal_in_both_protocols(field, value, message):
    rows = [ROWS[0], ROWS[1], {**ROWS[2], field: value}]
    errors = {p: refusal(p, rows) for p in PROTOCOLS}
    for protocol, error in errors.items():
        assert error.field == address(protocol, field, 2)
        assert message in str(error)
    v1, v2 = (str(errors[p]).removeprefix(f"{errors[p].field}: ") for p in PROTOCOLS)
    assert v1 == v2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_request_limits_and_duplicate_ids(protocol):
    many = [{**ROWS[0], c.TRANSACTION_ID: k} for k in range(6)]
    assert "at most 5 allowed" in str(refusal(protocol, many))
    assert len(parse(protocol, many[:5]).transactions) == 5
    twice = [ROWS[0], {**ROWS[1], c.TRANSACTION_ID: "17"}]
    assert "appears twice in one request" in str(refusal(protocol, twice))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("field", [c.TRANSACTION_ID, c.CUSTOMER_ID, c.TERMINAL_ID])
@pytest.mark.parametrize("value", [" 42 ", "42 ", "\t42", "42\n"])
def test_ids_with_surrounding_whitespace_are_refused_not_stripped(protocol, field, value):
    """Issue 14: ``" 42 "`` used to become customer ``42`` silently."""
    error = refusal(protocol, [ROWS[0], {**ROWS[1], field: value}])
    assert error.field == address(protocol, field, 1)
    assert "leading or trailing whitespace" in str(error)


def test_ids_are_kept_exactly_as_sent():
    (tx,) = parse_v1({"instances": [{**ROWS[1], c.CUSTOMER_ID: "a b", c.TERMINAL_ID: "é-7"}]},
                     LIMITS, CLOCK).transactions
    assert (tx.customer_id, tx.terminal_id) == ("a b", "é-7")


DUPLICATE_BODIES = [
    # the repeated key is named; the value orjson would have kept is the last one
    (b'{"instances": [{"TRANSACTION_ID": "1", "TX_DATETIME": "2018-05-06T10:00:00", '
     b'"CUSTOMER_ID": "7", "TERMINAL_ID": "t9", "TX_AMOUNT": 1, "TX_AMOUNT": 999999}]}',
     "TX_AMOUNT"),
    (b'{"instances": [], "instances": [{"TX_AMOUNT": 1}]}', "instances"),
    # a string value and an escaped quote in another value
    (b'{"id": "a\\"b", "inputs": [{"name": "TX_AMOUNT", "name": "x", "datatype": "FP64", '
     b'"shape": [1], "data": [1]}]}', "name"),
]


@pytest.mark.parametrize(("body", "key"), DUPLICATE_BODIES)
def test_a_repeated_json_key_is_refused_naming_it(body, key):
    """Issue 14: orjson keeps the last of repeated keys silently (TX_AMOUNT 1 then 999999 was
    scored as 999999)."""
    with pytest.raises(RequestError) as caught:
        load_json(body)
    assert caught.value.status == 400
    assert f"key {key!r} appears twice" in str(caught.value)


def test_v2_header_with_a_repeated_key_is_refused():
    body = orjson.dumps(v2_body(ROWS[:1]))
    repeated = body.replace(b'"datatype":"FP64"', b'"datatype":"FP64","datatype":"FP32"')
    assert repeated != body
    with pytest.raises(RequestError, match="key 'datatype' appears twice"):
        decode_v2(repeated, None, LIMITS, CLOCK)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": "x\\"y", "b": ["\\"", {"c": "\\u0022"}], "d": 1.5, "e": null}',
        b'{"instances": [{"TX_AMOUNT": 1}, {"TX_AMOUNT": 2}]}',  # same key, other objects
        b'["a", "b"]',
        b'"just a string"',
    ],
)
def test_bodies_without_repeated_keys_load_as_orjson_loads_them(body):
    assert load_json(body) == orjson.loads(body)
