"""Fuzzing: 1,200 generated bad requests (Hypothesis) against the real server: zero 5xx, every
refusal a JSON ``{"error": ...}``, and the server still answers good requests afterwards."""

from __future__ import annotations

import json
import math
import struct

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from vigil import contract as c

pytestmark = pytest.mark.integration

EXAMPLES = 1_200
FIELDS = list(c.REQUEST_COLUMNS)
V1 = "/v1/models/fraud:predict"
V2 = "/v2/models/fraud/infer"

json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
# Values that are wrong for each field (valid ones are excluded by construction).
bad_amounts = (
    st.none() | st.booleans() | st.text(max_size=10) | st.lists(json_scalars, max_size=3)
    | st.floats(max_value=-0.001, allow_nan=False, allow_infinity=False)
    | st.floats(min_value=1.001e9, allow_nan=False, allow_infinity=False)
    | st.integers(max_value=-1)
)
bad_times = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(alphabet="abcxyz:-T /", max_size=25)
    | st.sampled_from(["2018-02-30T00:00:00", "2999-01-01T00:00:00", "1969-12-31", "",
                       "2018-04-01T25:00:00", "2018-04-01T00:00:00+25:00"])
)
bad_ids = (
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers(max_value=-1)
    | st.sampled_from(["", "   ", "x" * 200, "a\nb", "\x00"]) | st.lists(st.integers(), max_size=2)
)
BAD_VALUES = {
    c.TX_AMOUNT: bad_amounts,
    c.TX_DATETIME: bad_times,
    c.CUSTOMER_ID: bad_ids,
    c.TERMINAL_ID: bad_ids,
    c.TRANSACTION_ID: bad_ids.filter(lambda v: v is not None),
}


@st.composite
def bad_v1_instance(draw, good: dict) -> dict:
    instance = dict(good)
    kind = draw(st.sampled_from(["drop", "extra", "wrong", "case-duplicate"]))
    if kind == "drop":
        instance.pop(draw(st.sampled_from(FIELDS[1:])))
    elif kind == "extra":
        key = draw(st.text(min_size=1, max_size=12).filter(lambda k: k.upper() not in FIELDS))
        instance[key] = draw(json_values)
    elif kind == "wrong":
        field = draw(st.sampled_from(FIELDS))
        instance[field] = draw(BAD_VALUES[field])
    else:
        field = draw(st.sampled_from(FIELDS))
        instance[field.lower()] = instance.get(field, 1)
        instance[field] = instance.get(field, 1)
    return instance


@st.composite
def bad_request(draw, good: dict) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of a request the server must refuse with a 4xx."""
    json_type = {"Content-Type": "application/json"}
    kind = draw(st.sampled_from(
        ["v1-instance", "v1-envelope", "v1-raw", "v2-json", "v2-binary", "content-type", "any"]
    ))
    if kind == "v1-instance":
        instances = [good, draw(bad_v1_instance(good))]
        if draw(st.booleans()):
            instances = instances[1:]
        return V1, json.dumps({"instances": instances}).encode(), json_type
    if kind == "v1-envelope":
        body = draw(json_values.filter(
            lambda v: not (isinstance(v, dict) and isinstance(v.get("instances"), list)
                           and v.get("instances"))
        ) | st.fixed_dictionaries({"instances": json_values.filter(
            lambda v: not isinstance(v, list) or not v or not all(isinstance(i, dict) for i in v)
        )}))
        return V1, json.dumps(body).encode(), json_type
    if kind == "v1-raw":
        body = draw(st.binary(max_size=200) | st.sampled_from(
            [b'{"instances": [{"TX_AMOUNT": NaN}]}', b'{"instances": [{"TX_AMOUNT": Infinity}]}',
             b'{"instances": [{"TX_AMOUNT": -Infinity}]}', b"{'instances': []}", b"\xff\xfe"]
        ))
        return V1, body, json_type
    if kind == "v2-json":
        tensors = draw(st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(FIELDS) | st.text(max_size=10),
                 "datatype": st.sampled_from(["BYTES", "INT64", "FP64", "FP32", "BOOL", "FP16",
                                              "bytes", "STRING"]),
                 "shape": st.lists(st.integers(min_value=-2, max_value=3), max_size=3),
                 "data": json_values},
            ),
            max_size=6,
        ))
        return V2, json.dumps({"inputs": tensors}).encode(), json_type
    if kind == "v2-binary":
        header = {"inputs": [
            {"name": c.TX_AMOUNT, "datatype": draw(st.sampled_from(["FP64", "FP32", "INT32"])),
             "shape": [draw(st.integers(min_value=1, max_value=3))],
             "parameters": {"binary_data_size": draw(st.integers(min_value=0, max_value=40))}},
        ]}
        raw = json.dumps(header).encode()
        tail = draw(st.binary(max_size=40) | st.just(struct.pack("<d", math.nan)))
        length = draw(st.sampled_from([len(raw), len(raw) + 3, 0, len(raw) - 1]))
        return V2, raw + tail, {"Content-Type": "application/octet-stream",
                                "Inference-Header-Content-Length": str(length)}
    if kind == "content-type":
        content_type = draw(st.sampled_from(
            ["", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
             "application/xml", "json"]
        ))
        body = json.dumps({"instances": [good]}).encode()
        return draw(st.sampled_from([V1, V2])), body, {"Content-Type": content_type}
    path = draw(st.sampled_from(
        [V1, V2, "/v1/models/x:predict", "/v2/models/fraud/versions/0/infer"]
    ))
    return path, json.dumps(draw(json_values)).encode(), json_type


@pytest.fixture(scope="module")
def http(main_server):
    with httpx.Client(base_url=main_server.url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def good(serving_model) -> dict:
    row = serving_model.live.iloc[240]
    return {
        c.TX_DATETIME: row[c.TX_DATETIME].isoformat(),
        c.CUSTOMER_ID: str(row[c.CUSTOMER_ID]),
        c.TERMINAL_ID: str(row[c.TERMINAL_ID]),
        c.TX_AMOUNT: float(row[c.TX_AMOUNT]),
    }


def test_generated_bad_requests_never_get_a_5xx(http, good):
    statuses: list[int] = []

    @settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        path, body, headers = data.draw(bad_request(good))
        response = http.post(path, content=body, headers=headers)
        statuses.append(response.status_code)
        assert response.status_code < 500, (path, body[:300], headers, response.text)
        assert response.status_code >= 400, (path, body[:300], headers, response.text)
        answer = response.json()
        assert isinstance(answer, dict) and isinstance(answer.get("error"), str), answer

    fuzz()
    assert len(statuses) >= 1_000
    # Still serving.
    ok = http.post(V1, json={"instances": [good]})
    assert ok.status_code == 200, ok.text
    assert ok.json()["predictions"][0]["degraded"] is False
    assert http.get("/v2/health/ready").status_code == 200
