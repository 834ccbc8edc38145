"""The Open Inference Protocol driven by a real third-party client: ``tritonclient[http]``.

tritonclient sends no Content-Type; the server requires one (a body without content type is
refused with 415), so the calls pass it: application/json for JSON tensors, and
application/octet-stream for the binary tensor extension.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from vigil import contract as c

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}
BINARY = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def client(main_server):
    url = main_server.url.removeprefix("http://")
    client = triton.InferenceServerClient(url=url, connection_timeout=10, network_timeout=10)
    yield client
    client.close()


def inputs(rows: pd.DataFrame, *, binary: bool) -> list[triton.InferInput]:
    n = len(rows)
    columns = {
        c.TRANSACTION_ID: ("INT64", rows[c.TRANSACTION_ID].to_numpy(np.int64)),
        c.TX_DATETIME: (
            "BYTES",
            np.array([pd.Timestamp(t).isoformat().encode() for t in rows[c.TX_DATETIME]],
                     dtype=np.object_),
        ),
        c.CUSTOMER_ID: (
            "BYTES", np.array([str(v).encode() for v in rows[c.CUSTOMER_ID]], dtype=np.object_)
        ),
        c.TERMINAL_ID: ("INT64", rows[c.TERMINAL_ID].to_numpy(np.int64)),
        c.TX_AMOUNT: ("FP64", rows[c.TX_AMOUNT].to_numpy(np.float64)),
    }
    out = []
    for name, (datatype, values) in columns.items():
        tensor = triton.InferInput(name, [n], datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        out.append(tensor)
    return out


def test_health_and_metadata_through_tritonclient(client, serving_model):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("fraud")
    metadata = client.get_model_metadata("fraud")
    assert metadata["versions"] == [str(serving_model.card.version)]
    assert {i["name"] for i in metadata["inputs"]} == set(c.REQUEST_COLUMNS)


def test_json_tensors(client, serving_model):
    rows = serving_model.live.iloc[100:104]
    outputs = [triton.InferRequestedOutput(name, binary_data=False)
               for name in ("transaction_id", "score", "decision", "degraded")]
    result = client.infer("fraud", inputs(rows, binary=False), outputs=outputs, headers=JSON,
                          request_id="triton-json")
    response = result.get_response()
    assert response["model_version"] == str(serving_model.card.version)
    assert response["id"] == "triton-json"
    scores = result.as_numpy("score")
    assert scores.dtype == np.float64 and scores.shape == (4,)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert [str(t) for t in result.as_numpy("transaction_id")] == [
        str(v) for v in rows[c.TRANSACTION_ID]
    ]
    expected = np.where(scores >= serving_model.card.threshold, "fraud", "legit")
    assert [str(d) for d in result.as_numpy("decision")] == list(expected)
    assert not result.as_numpy("degraded").any()


def test_binary_tensors_in_and_out(client, serving_model):
    rows = serving_model.live.iloc[104:110]
    # No outputs named: tritonclient asks for every output in binary form.
    result = client.infer("fraud", inputs(rows, binary=True), headers=BINARY)
    scores = result.as_numpy("score")
    assert scores.shape == (6,)
    assert ((scores >= 0) & (scores <= 1)).all()
    ids = [t.decode() for t in result.as_numpy("transaction_id")]
    assert ids == [str(v) for v in rows[c.TRANSACTION_ID]]
    freshness = {f.decode() for f in result.as_numpy("terminal_freshness")}
    assert freshness == {"PRESENT"}


def test_errors_surface_as_client_exceptions(client, serving_model):
    rows = serving_model.live.iloc[110:112]
    bad = inputs(rows, binary=False)
    bad[4] = triton.InferInput(c.TX_AMOUNT, [2], "FP64")
    bad[4].set_data_from_numpy(np.array([10.0, -3.0]), binary_data=False)
    with pytest.raises(InferenceServerException, match=r"TX_AMOUNT\]\[1\]: must be >= 0"):
        client.infer("fraud", bad, headers=JSON)
    with pytest.raises(InferenceServerException, match="Content-Type"):
        client.infer("fraud", inputs(rows, binary=False))  # no content type
    with pytest.raises(InferenceServerException, match="does not exist"):
        client.infer("no-such-model", inputs(rows, binary=False), headers=JSON)
