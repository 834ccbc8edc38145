"""Bad input never yields a 5xx: every refusal is a 4xx with ``{"error": ...}`` naming the field.

Runs against the shared real server (V1 and V2), plus a server whose online store is down
(not ready: 503).
"""

from __future__ import annotations

import struct
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from inference.client import free_port, health
from vigil import contract as c

pytestmark = pytest.mark.integration

V1 = "/v1/models/fraud:predict"
V2 = "/v2/models/fraud/infer"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def http(main_server):
    with httpx.Client(base_url=main_server.url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def good(serving_model):
    row = serving_model.live.iloc[200]
    return {
        c.TRANSACTION_ID: int(row[c.TRANSACTION_ID]),
        c.TX_DATETIME: row[c.TX_DATETIME].isoformat(),
        c.CUSTOMER_ID: int(row[c.CUSTOMER_ID]),
        c.TERMINAL_ID: int(row[c.TERMINAL_ID]),
        c.TX_AMOUNT: float(row[c.TX_AMOUNT]),
    }


def refused(response: httpx.Response, status: int, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    for fragment in fragments:
        assert fragment in body["error"], body["error"]
    return body


def with_(good: dict, **changes: Any) -> dict:
    out = {k: v for k, v in good.items() if k not in changes or changes[k] is not REMOVE}
    out.update({k: v for k, v in changes.items() if v is not REMOVE})
    return out


REMOVE = object()
FUTURE = (datetime.now(UTC) + timedelta(days=2)).isoformat()

V1_CASES = {
    "missing field": ({c.TX_AMOUNT: REMOVE}, ["instances[0]", "missing", "TX_AMOUNT"]),
    "extra field": ({"MERCHANT": "x"}, ["instances[0]", "unknown field", "MERCHANT"]),
    "amount as string": ({c.TX_AMOUNT: "12.5"}, ["instances[0].TX_AMOUNT", "number"]),
    "amount as boolean": ({c.TX_AMOUNT: True}, ["instances[0].TX_AMOUNT", "number"]),
    "negative amount": ({c.TX_AMOUNT: -1.0}, ["instances[0].TX_AMOUNT", ">= 0"]),
    "absurd amount": ({c.TX_AMOUNT: 1e300}, ["instances[0].TX_AMOUNT", "<="]),
    "null amount": ({c.TX_AMOUNT: None}, ["instances[0].TX_AMOUNT", "null"]),
    "unparseable time": ({c.TX_DATETIME: "yesterday"}, ["instances[0].TX_DATETIME", "ISO"]),
    "time as number": ({c.TX_DATETIME: 1_527_000_000}, ["instances[0].TX_DATETIME", "string"]),
    "time in the future": ({c.TX_DATETIME: FUTURE}, ["instances[0].TX_DATETIME", "ahead"]),
    "time before 1970": ({c.TX_DATETIME: "1969-12-31T23:59:59"}, ["TX_DATETIME", "1970"]),
    "float id": ({c.CUSTOMER_ID: 1.5}, ["instances[0].CUSTOMER_ID", "string or an integer"]),
    "empty id": ({c.TERMINAL_ID: "  "}, ["instances[0].TERMINAL_ID", "empty"]),
    "negative integer id": ({c.TERMINAL_ID: -4}, ["instances[0].TERMINAL_ID", "[0, 2^63)"]),
    "control characters": ({c.CUSTOMER_ID: "a\u0000b"}, ["CUSTOMER_ID", "control"]),
    "long id": ({c.TRANSACTION_ID: "x" * 500}, ["instances[0].TRANSACTION_ID", "128"]),
    "same field twice": ({"tx_amount": 3.0}, ["instances[0]", "twice"]),
    "id with spaces around": ({c.CUSTOMER_ID: " 42 "}, ["instances[0].CUSTOMER_ID", "whitespace"]),
}


@pytest.mark.parametrize("case", list(V1_CASES))
def test_v1_field_errors_name_the_field(http, good, case):
    changes, fragments = V1_CASES[case]
    assert isinstance(changes, dict)
    response = http.post(V1, json={"instances": [with_(good, **changes)]})
    refused(response, 400, *fragments)


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        (b'{"instances": [{"TX_AMOUNT": NaN}]}', ["not valid JSON"]),
        (b'{"instances": [{"TX_AMOUNT": Infinity}]}', ["not valid JSON"]),
        (b'{"instances": [{"TX_AMOUNT": 1e999}]}', ["not valid JSON"]),
        (b'{"instances": [', ["not valid JSON"]),
        (b"", ["not valid JSON"]),
        (b"[1, 2]", ["JSON object"]),
        (b'"instances"', ["JSON object"]),
        (b"42", ["JSON object"]),
        (b"{}", ["instances", "missing"]),
        (b'{"instances": {}}', ["instances", "list"]),
        (b'{"instances": []}', ["instances", "at least one"]),
        (b'{"instances": [[1, 2]]}', ["instances[0]", "object"]),
        (b'{"instances": [], "inputs": []}', ["unknown top-level field"]),
        (b'{"instances": [{"TX_DATETIME": "2018-05-06T10:00:00", "CUSTOMER_ID": "7", '
         b'"TERMINAL_ID": "9", "TX_AMOUNT": 1, "TX_AMOUNT": 999999}]}',
         ["key 'TX_AMOUNT' appears twice"]),
    ],
)
def test_v1_malformed_bodies(http, body, fragments):
    refused(http.post(V1, content=body, headers=JSON), 400, *fragments)


def test_v1_shape_limits_and_duplicates(http, good):
    refused(http.post(V1, json={"instances": [good] * 1001}), 400, "at most 1000")
    refused(http.post(V1, json={"instances": [good, good]}), 400, "appears twice")


def test_content_type_encoding_and_size(http, good):
    body = orjson.dumps({"instances": [good]})
    refused(http.post(V1, content=body, headers={"Content-Type": ""}), 415, "Content-Type")
    refused(http.post(V1, content=body, headers={"Content-Type": "text/plain"}), 415)
    refused(http.post(V1, content=body, headers={**JSON, "Content-Encoding": "gzip"}), 415,
            "gzip")
    big = b'{"instances": [' + b" " * (1 << 20) + b"]}"
    refused(http.post(V1, content=big, headers=JSON), 413, "larger than")

    def chunks():
        for _ in range(40):
            yield b" " * 32_768

    refused(http.post(V1, content=chunks(), headers=JSON), 413, "larger than")


def v2(inputs: list[dict], **extra: object) -> dict:
    return {"inputs": inputs, **extra}


def v2_inputs(good: dict, n: int = 1) -> list[dict]:
    types = {c.TX_DATETIME: "BYTES", c.CUSTOMER_ID: "INT64", c.TERMINAL_ID: "INT64",
             c.TX_AMOUNT: "FP64"}
    return [{"name": name, "datatype": datatype, "shape": [n], "data": [good[name]] * n}
            for name, datatype in types.items()]


def test_v2_errors_name_the_tensor(http, good):
    base = v2_inputs(good)
    assert http.post(V2, json=v2(base)).status_code == 200

    def variant(index: int, **changes: object) -> list[dict]:
        tensors = [dict(t) for t in base]
        tensors[index].update(changes)
        return tensors

    cases = [
        (variant(3, shape=[2]), ["inputs[TX_AMOUNT]", "holds 1 values"]),
        (variant(3, shape=[1, 2]), ["inputs[TX_AMOUNT].shape", "[n, 1]"]),
        (variant(3, shape=[0]), ["inputs[TX_AMOUNT].shape", "at least one"]),
        (variant(3, shape="1"), ["inputs[TX_AMOUNT].shape"]),
        (variant(0, datatype="FP64"), ["inputs[TX_DATETIME].datatype", "BYTES"]),
        (variant(1, data=["abc"]), ["inputs[CUSTOMER_ID].data[0]", "INT64"]),
        (variant(3, data=[-5.0]), ["inputs[TX_AMOUNT][0]", ">= 0"]),
        (variant(3, data=[[[1.0]]]), ["inputs[TX_AMOUNT].data", "nested"]),
        (variant(0, data=["2018-13-45"]), ["inputs[TX_DATETIME][0]", "ISO"]),
        (variant(1, name="CUSTOMER"), ["inputs[1].name", "unknown input"]),
        (base[:3], ["inputs", "missing", "TX_AMOUNT"]),
        ([*base, base[0]], ["inputs[4].name", "twice"]),
        (variant(2, datatype="BOOL"), ["inputs[TERMINAL_ID].datatype"]),
        (variant(2, extra="x"), ["inputs[2]", "unknown key"]),
    ]
    for tensors, fragments in cases:
        refused(http.post(V2, json=v2(tensors)), 400, *fragments)
    # Inputs of different lengths.
    longer = variant(3, shape=[2], data=[1.0, 2.0])
    refused(http.post(V2, json=v2(longer)), 400, "differ in length")
    refused(http.post(V2, json=v2(base, outputs=[{"name": "nope"}])), 400, "unknown output")
    refused(http.post(V2, json=v2(base, id=7)), 400, "id")
    refused(http.post(V2, json={"inputs": "x"}), 400, "inputs")
    refused(http.post(V2, json={"instances": []}), 400, "unknown top-level field")


def test_v2_binary_extension_errors(http, good):
    header = v2([*v2_inputs(good)[:3],
        {"name": c.TX_AMOUNT, "datatype": "FP64", "shape": [1],
         "parameters": {"binary_data_size": 8}},
    ])
    raw = orjson.dumps(header)
    binary = {"Content-Type": "application/octet-stream",
              "Inference-Header-Content-Length": str(len(raw))}
    ok = http.post(V2, content=raw + struct.pack("<d", 10.0), headers=binary)
    assert ok.status_code == 200, ok.text
    refused(http.post(V2, content=raw + struct.pack("<d", float("nan")), headers=binary), 400,
            "inputs[TX_AMOUNT][0]", "finite")
    refused(http.post(V2, content=raw + struct.pack("<d", float("inf")), headers=binary), 400,
            "finite")
    refused(http.post(V2, content=raw + b"\x00" * 4, headers=binary), 400, "binary data")
    refused(http.post(V2, content=raw + b"\x00" * 16, headers=binary), 400, "belong to no input")
    refused(http.post(V2, content=raw, headers={**binary, "Inference-Header-Content-Length":
                                                 str(len(raw) + 100)}), 400, "does not fit")
    refused(http.post(V2, content=raw, headers={**binary, "Inference-Header-Content-Length":
                                                 "x"}), 400, "integer")
    refused(http.post(V2, content=raw + struct.pack("<d", 1.0),
                      headers={**binary, "Content-Type": "text/csv"}), 415)
    refused(http.post(V2, content=raw, headers=JSON), 400, "binary data missing")


def test_models_routes_and_methods(http, good, serving_model):
    body = {"instances": [good]}
    refused(http.post("/v1/models/nope:predict", json=body), 404, "nope")
    refused(http.post("/v2/models/nope/infer", json=v2(v2_inputs(good))), 404, "nope")
    version = serving_model.card.version
    refused(http.post(f"/v2/models/fraud/versions/{version + 7}/infer",
                      json=v2(v2_inputs(good))), 404, "not served")
    refused(http.get("/v2/models/nope"), 404)
    refused(http.get("/v2/models/nope/ready"), 404)
    refused(http.get("/no/such/route"), 404)
    refused(http.get(V2), 405)
    refused(http.put(V1, json=body), 405)
    refused(http.post("/v1/models/fraud:explain", json=body), 404, "explainer")
    refused(http.post("/v2/repository/models/fraud/unload"), 403, "disabled")
    refused(http.post("/v2/repository/models/fraud/load"), 403, "disabled")
    # ... and the model is still there.
    assert http.post(V1, json=body).status_code == 200


def test_not_ready_until_the_online_store_answers(online_store, server_factory, good):
    """A server whose Redis does not answer is live but not ready: 503 for scoring."""
    store = online_store(redis_url=f"redis://127.0.0.1:{free_port()}/0", materialized=False)
    server = server_factory(config=store.config, wait=False)
    deadline = time.monotonic() + 180
    while health(server.url, "/v2/health/live") != 200:
        assert server.process.poll() is None, server.log_tail()
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.2)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        refused(http.get("/v2/health/ready"), 503, "not ready")
        refused(http.get("/v2/models/fraud/ready"), 503)
        refused(http.post(V1, json={"instances": [good]}), 503, "not ready")
        refused(http.post(V2, json=v2(v2_inputs(good))), 503, "not ready")
