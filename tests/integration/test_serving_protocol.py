"""The fraud predictor over HTTP: V1 and V2 (Open Inference Protocol), metadata, health.

All tests talk to one real ``vigil serve fraud`` process on 127.0.0.1 whose online features come
from the real Redis (a project of its own).
"""

from __future__ import annotations

import httpx
import pandas as pd
import pytest

from feature_store.names import FEATURE_SERVICE
from vigil import contract as c

pytestmark = pytest.mark.integration


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if series == name and not wanted:
            return float(value)
        if series.startswith(name + "{"):
            found = ",".join(sorted(series[len(name) + 1 : -1].split(",")))
            if found == wanted:
                return float(value)
    return 0.0


@pytest.fixture(scope="module")
def http(main_server):
    with httpx.Client(base_url=main_server.url, timeout=10) as client:
        yield client


def test_v1_predict_scores_a_transaction(http, serving_model, tx_instance):
    row = serving_model.live.iloc[0]
    response = http.post("/v1/models/fraud:predict", json={"instances": [tx_instance(row)]})
    assert response.status_code == 200, response.text
    body = response.json()
    card = serving_model.card
    assert body["model_name"] == "fraud"
    assert body["model_version"] == str(card.version)
    assert body["feature_service"] == FEATURE_SERVICE
    assert body["threshold"] == pytest.approx(card.threshold)
    assert body["degraded"] is False
    (prediction,) = body["predictions"]
    assert prediction["transaction_id"] == str(row[c.TRANSACTION_ID])
    assert 0.0 <= prediction["score"] <= 1.0
    expected = "fraud" if prediction["score"] >= card.threshold else "legit"
    assert prediction["decision"] == expected
    assert prediction["degraded"] is False
    assert prediction["freshness"] == {"customer": "PRESENT", "terminal": "PRESENT"}


def test_field_names_in_any_case_and_generated_ids(http, serving_model):
    row = serving_model.live.iloc[1]
    instance = {
        "tx_datetime": pd.Timestamp(row[c.TX_DATETIME]).tz_localize("UTC")
        .tz_convert("Europe/Paris").isoformat(),
        "Customer_Id": str(row[c.CUSTOMER_ID]),
        "terminal_ID": int(row[c.TERMINAL_ID]),
        "TX_amount": float(row[c.TX_AMOUNT]),
    }
    response = http.post("/v1/models/fraud:predict", json={"instances": [instance]})
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert prediction["transaction_id"].startswith("vigil-")
    assert prediction["freshness"]["customer"] == "PRESENT"


def test_unknown_entities_get_default_features_and_say_so(http, serving_model):
    row = serving_model.live.iloc[2]
    instance = {
        c.TX_DATETIME: pd.Timestamp(row[c.TX_DATETIME]).isoformat(),
        c.CUSTOMER_ID: "never-seen-customer",
        c.TERMINAL_ID: "never-seen-terminal",
        c.TX_AMOUNT: 12.5,
    }
    response = http.post("/v1/models/fraud:predict", json={"instances": [instance]})
    assert response.status_code == 200
    (prediction,) = response.json()["predictions"]
    assert prediction["freshness"] == {"customer": "NOT_FOUND", "terminal": "NOT_FOUND"}
    assert prediction["degraded"] is False


def test_a_batch_is_scored_in_one_model_call_and_answered_in_request_order(
    http, serving_model, tx_instance
):
    rows = serving_model.live.iloc[10:60]
    instances = [tx_instance(r) for _, r in rows.iloc[::-1].iterrows()]  # newest first
    before = http.get("/metrics").text
    response = http.post("/v1/models/fraud:predict", json={"instances": instances})
    after = http.get("/metrics").text
    assert response.status_code == 200
    ids = [p["transaction_id"] for p in response.json()["predictions"]]
    assert ids == [str(i[c.TRANSACTION_ID]) for i in instances]
    name = "vigil_serving_batch_size_transactions"
    calls = metric_value(after, f"{name}_count", model_name="fraud") - metric_value(
        before, f"{name}_count", model_name="fraud"
    )
    scored = metric_value(after, f"{name}_sum", model_name="fraud") - metric_value(
        before, f"{name}_sum", model_name="fraud"
    )
    assert (calls, scored) == (1, len(instances))


def test_v2_infer_with_one_input_per_field(http, serving_model):
    rows = serving_model.live.iloc[60:63]
    request = {
        "id": "req-42",
        "inputs": [
            {"name": "TRANSACTION_ID", "datatype": "INT64", "shape": [3],
             "data": [int(v) for v in rows[c.TRANSACTION_ID]]},
            {"name": "tx_datetime", "datatype": "BYTES", "shape": [3, 1],
             "data": [[pd.Timestamp(v).isoformat()] for v in rows[c.TX_DATETIME]]},
            {"name": "CUSTOMER_ID", "datatype": "BYTES", "shape": [3],
             "data": [str(v) for v in rows[c.CUSTOMER_ID]]},
            {"name": "TERMINAL_ID", "datatype": "INT32", "shape": [3],
             "data": [int(v) for v in rows[c.TERMINAL_ID]]},
            {"name": "TX_AMOUNT", "datatype": "FP64", "shape": [3],
             "data": [float(v) for v in rows[c.TX_AMOUNT]]},
        ],
    }
    response = http.post("/v2/models/fraud/infer", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "req-42"
    assert body["model_name"] == "fraud"
    assert body["model_version"] == str(serving_model.card.version)
    assert body["parameters"]["feature_service"] == FEATURE_SERVICE
    outputs = {o["name"]: o for o in body["outputs"]}
    assert set(outputs) == {"transaction_id", "score", "decision", "degraded",
                            "customer_freshness", "terminal_freshness"}
    assert outputs["transaction_id"]["data"] == [str(v) for v in rows[c.TRANSACTION_ID]]
    assert outputs["score"]["datatype"] == "FP64" and outputs["score"]["shape"] == [3]
    assert all(0 <= s <= 1 for s in outputs["score"]["data"])
    assert outputs["degraded"]["data"] == [False, False, False]
    assert set(outputs["customer_freshness"]["data"]) == {"PRESENT"}

    # The same request against the served version's path; a subset of outputs.
    request["outputs"] = [{"name": "score"}]
    version = serving_model.card.version
    response = http.post(f"/v2/models/fraud/versions/{version}/infer", json=request)
    assert response.status_code == 200, response.text
    assert [o["name"] for o in response.json()["outputs"]] == ["score"]


def test_metadata_and_health_endpoints(http, serving_model):
    assert http.get("/").status_code == 200
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}
    assert http.get("/v2/models/fraud/ready").json() == {"name": "fraud", "ready": True}
    assert http.get("/v1/models/fraud").json() == {"name": "fraud", "ready": True}
    assert http.get("/v1/models").json() == {"models": ["fraud"]}
    server = http.get("/v2").json()
    assert server["name"] == "vigil" and server["extensions"] == []

    metadata = http.get("/v2/models/fraud").json()
    card = serving_model.card
    assert metadata["name"] == "fraud"
    assert metadata["versions"] == [str(card.version)]
    assert metadata["platform"] == "lightgbm"
    assert [i["name"] for i in metadata["inputs"]] == list(c.REQUEST_COLUMNS)
    assert metadata["parameters"]["feature_service"] == FEATURE_SERVICE
    assert metadata["parameters"]["sha256"] == card.sha256
    assert metadata["parameters"]["features"] == list(card.feature_names)
    assert http.get(f"/v2/models/fraud/versions/{card.version}").status_code == 200
    assert http.get(f"/v2/models/fraud/versions/{card.version + 1}").status_code == 404


def test_demo_helpers_send_examples_and_print_answers(main_server, serving_model, capsys):
    from inference.client import demo_requests, instances_from_frame, predict

    rows = serving_model.live.iloc[70:74]
    answer = predict(main_server.url, instances_from_frame(rows.iloc[:1]))
    assert answer["predictions"][0]["transaction_id"] == str(rows.iloc[0][c.TRANSACTION_ID])
    exchanges = demo_requests(main_server.url, rows.iloc[1:])
    assert [len(instances) for instances, _ in exchanges] == [1, 2]
    printed = capsys.readouterr().out
    assert f"version {serving_model.card.version}" in printed
    assert printed.count("score ") == 3
