"""``/metrics``: requests by model, version, outcome and status code; latency, score and batch
histograms; ``promtool check metrics`` clean."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest

from feature_store.names import FEATURE_SERVICE
from vigil import contract as c

pytestmark = pytest.mark.integration

V1 = "/v1/models/fraud:predict"
REQUESTS = "vigil_serving_requests_total"


def series(name: str, **labels: str) -> str:
    """A sample's key, labels sorted."""
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            name, _, rest = key.partition("{")
            labels = dict(
                part.split("=", 1) for part in rest.rstrip("}").split(",") if part
            )
            out[series(name, **{k: v.strip('"') for k, v in labels.items()})] = float(value)
    return out


def promtool(text: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool (Debian package prometheus) is required"
    return subprocess.run([tool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def good(serving_model):
    row = serving_model.live.iloc[220]
    return {c.TX_DATETIME: row[c.TX_DATETIME].isoformat(), c.CUSTOMER_ID: str(row[c.CUSTOMER_ID]),
            c.TERMINAL_ID: str(row[c.TERMINAL_ID]), c.TX_AMOUNT: float(row[c.TX_AMOUNT])}


def test_request_counters_by_outcome_and_status(main_server, serving_model, good):
    version = str(serving_model.card.version)
    with httpx.Client(base_url=main_server.url, timeout=10) as http:
        before = samples(http.get("/metrics").text)
        for _ in range(3):
            assert http.post(V1, json={"instances": [good]}).status_code == 200
        negative = {"instances": [{**good, c.TX_AMOUNT: -1}]}
        for _ in range(2):
            assert http.post(V1, json=negative).status_code == 400
        assert http.post("/v1/models/other:predict", json={"instances": [good]}).status_code == 404
        json_type, text_type = {"Content-Type": "application/json"}, {"Content-Type": "text/plain"}
        assert http.post(V1, content=b" " * (2 << 20), headers=json_type).status_code == 413
        assert http.post(V1, content=b"{}", headers=text_type).status_code == 415
        assert http.post("/v2/models/fraud/infer", json={"inputs": []}).status_code == 400
        after = samples(http.get("/metrics").text)

    def delta(**labels: str) -> float:
        key = series(REQUESTS, **labels)
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta(model_name="fraud", model_version=version, outcome="ok", status_code="200") == 3
    assert delta(model_name="fraud", model_version=version, outcome="invalid",
                 status_code="400") == 3
    assert delta(model_name="unknown", model_version="none", outcome="not_found",
                 status_code="404") == 1
    assert delta(model_name="fraud", model_version="none", outcome="too_large",
                 status_code="413") == 1
    assert delta(model_name="fraud", model_version=version, outcome="invalid",
                 status_code="415") == 1
    # Latency histograms of the total, the feature fetch and the prediction; scores; batches.
    total = series("vigil_serving_request_duration_seconds_count", model_name="fraud",
                   protocol="v1")
    assert after[total] - before.get(total, 0) == 3 + 2 + 1 + 1
    for name, labels in [
        ("vigil_serving_feature_fetch_duration_seconds_count", {"model_name": "fraud"}),
        ("vigil_serving_predict_duration_seconds_count",
         {"model_name": "fraud", "model_version": version}),
        ("vigil_serving_score_count", {"model_name": "fraud", "model_version": version}),
        ("vigil_serving_batch_size_transactions_count", {"model_name": "fraud"}),
    ]:
        assert after[series(name, **labels)] - before.get(series(name, **labels), 0) == 3, name
    info = series("vigil_serving_model_info", model_name="fraud", model_version=version,
                  feature_service=FEATURE_SERVICE)
    assert after[info] == 1
    assert any(k.startswith("vigil_serving_missing_features_total") for k in after)


def test_promtool_accepts_the_exposition(main_server):
    with httpx.Client(base_url=main_server.url, timeout=10) as http:
        text = http.get("/metrics").text
    result = promtool(text)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr
    )


def test_rules_and_dashboards_name_series_a_real_server_exports(main_server, good):
    """Every vigil_serving_* series the alert rules and dashboards query is in a real
    server's scrape, before anything has gone wrong (counters start at 0, so increase() and
    rate() see the first failure)."""
    from metric_names import scraped_names, used_names

    with httpx.Client(base_url=main_server.url, timeout=10) as http:
        assert http.post(V1, json={"instances": [good]}).status_code == 200
        exported = scraped_names(http.get("/metrics").text)
    used = used_names(("vigil_serving_",))
    assert len(used) > 10
    assert not used - exported, f"queried but not exported: {sorted(used - exported)}"
