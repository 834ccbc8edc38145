"""The predictor as the chart runs it, in Vigil's image: ``vigil serve fraud`` as uid 10001 on
a read-only root filesystem with every capability dropped, its Vigil home (the MLflow registry
and the inference log) a mounted volume, features from the shared Redis (host network, so the
server binds 127.0.0.1 as every test server here).

It scores KServe V1 and V2 requests with exactly the batch features' scores, and with its Redis
unreachable it stays up and answers 503 on readiness (the pod goes unready, never crash-loops).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from podman_env import BuiltImage, container_logs, podman, wait_until

from feature_store.names import FEATURE_SERVICE
from inference.client import free_port, health
from vigil import contract as c
from vigil.registry import Registry
from vigil.settings import load_settings

UID = 10001
#: Live transactions scored through the container, in event order (V1, then V2).
N_V1, N_V2 = 40, 20


def owned_by_vigil(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for folder, _, files in os.walk(path):
        os.chown(folder, UID, UID)
        for name in files:
            os.chown(Path(folder) / name, UID, UID)
    return path


@pytest.fixture(scope="module")
def container_home(serving_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Vigil home holding a registry with the test model as ``fraud`` champion, owned by the
    image's user (as a volume with ``fsGroup`` is)."""
    home = tmp_path_factory.mktemp("container_home")
    settings = load_settings(env={"VIGIL_HOME": str(home)})
    Registry.from_settings(settings).register_model(
        serving_model.booster, name="fraud", threshold=serving_model.card.threshold,
        feature_service=FEATURE_SERVICE, data_range=(date(2018, 4, 1), date(2018, 5, 6)),
        metrics={"auc_roc": 0.5}, alias="champion",
    )
    return owned_by_vigil(home)


@pytest.fixture
def predictor(vigil_image: BuiltImage, container_home: Path,
              tmp_path: Path) -> Iterator[Callable[..., tuple[str, str]]]:
    """``predictor(redis_url, project)``: starts the container, returns its name and URL once
    it answers liveness; removed (by name) at the end of the test."""
    started: list[str] = []

    def start(redis_url: str, project: str) -> tuple[str, str]:
        name = f"vigil-predictor-{uuid.uuid4().hex[:8]}"
        port = free_port()
        scratch = tmp_path / name
        scratch.mkdir()
        scratch.chmod(0o1777)  # the pod's /tmp emptyDir (podman 4.3 ignores tmpfs modes)
        podman(
            "run", "--detach", "--name", name, "--network", "host",
            "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--volume", f"{container_home}:{container_home}",
            "--volume", f"{scratch}:/tmp",
            "--env", f"VIGIL_HOME={container_home}",
            "--env", f"VIGIL_REDIS__URL={redis_url}",
            "--env", f"VIGIL_FEATURES__PROJECT={project}",
            "--env", "VIGIL_SERVING__HOST=127.0.0.1",
            "--env", f"VIGIL_SERVING__PORT={port}",
            "--env", "OMP_NUM_THREADS=1",
            vigil_image.ref, "vigil", "serve", "fraud",
        )
        started.append(name)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: health(url, "/v2/health/live") == 200, f"{name} live", 180,
                   lambda: container_logs(name))
        return name, url

    yield start
    for name in started:
        podman("rm", "--force", "--time", "10", name, check=False)


def v2_request(rows: pd.DataFrame) -> dict[str, Any]:
    n = len(rows)
    return {"inputs": [
        {"name": c.TRANSACTION_ID, "datatype": "INT64", "shape": [n],
         "data": [int(v) for v in rows[c.TRANSACTION_ID]]},
        {"name": c.TX_DATETIME, "datatype": "BYTES", "shape": [n],
         "data": [pd.Timestamp(v).isoformat() for v in rows[c.TX_DATETIME]]},
        {"name": c.CUSTOMER_ID, "datatype": "BYTES", "shape": [n],
         "data": [str(v) for v in rows[c.CUSTOMER_ID]]},
        {"name": c.TERMINAL_ID, "datatype": "INT64", "shape": [n],
         "data": [int(v) for v in rows[c.TERMINAL_ID]]},
        {"name": c.TX_AMOUNT, "datatype": "FP64", "shape": [n],
         "data": [float(v) for v in rows[c.TX_AMOUNT]]},
    ]}


def test_the_image_runs_as_the_chart_expects(vigil_image: BuiltImage):
    config = vigil_image.config
    assert config["Config"]["User"] == f"{UID}:{UID}"
    labels = config["Config"]["Labels"]
    for key in ("source", "version", "revision", "title"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    env = dict(e.split("=", 1) for e in config["Config"]["Env"])
    assert "PIP_CERT" not in env, "the build's CA bundle leaked into the image"
    print(f"\nimage {vigil_image.ref}: {vigil_image.size_bytes / 1e6:.0f} MB, "
          f"built in {vigil_image.build_seconds:.0f} s")


def test_the_predictor_container_scores_v1_and_v2_like_batch(
        predictor, online_store, serving_model, tx_instance, feature_names):
    store = online_store()
    _, url = predictor(store.redis_url, store.project)
    wait_until(lambda: health(url, "/v2/health/ready") == 200, "ready", 60)
    live = serving_model.live.iloc[: N_V1 + N_V2]
    scores: dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=30) as http:
        for _, row in live.iloc[:N_V1].iterrows():  # one by one: event order, as in production
            response = http.post("/v1/models/fraud:predict",
                                 json={"instances": [tx_instance(row)]})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model_version"] == "1" and body["degraded"] is False, body
            (prediction,) = body["predictions"]
            scores[prediction["transaction_id"]] = prediction["score"]
        for start in range(N_V1, N_V1 + N_V2, 5):
            response = http.post("/v2/models/fraud/infer",
                                 json=v2_request(live.iloc[start : start + 5]))
            assert response.status_code == 200, response.text
            outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
            assert not any(outputs["degraded"]), outputs
            scores.update(zip(outputs["transaction_id"], outputs["score"], strict=True))
    ids = live[c.TRANSACTION_ID].astype(str).to_list()
    batch = serving_model.features.assign(
        **{c.TRANSACTION_ID: serving_model.features[c.TRANSACTION_ID].astype(str)}
    ).set_index(c.TRANSACTION_ID).loc[ids]
    expected = serving_model.booster.predict(batch[feature_names].to_numpy(np.float64))
    np.testing.assert_allclose([scores[i] for i in ids], expected, rtol=1e-9, atol=1e-12)


def test_unreachable_redis_makes_the_container_unready_not_dead(predictor):
    name, url = predictor("redis://127.0.0.1:1/0", "vigil_test_unreachable")
    with httpx.Client(base_url=url, timeout=10) as http:
        for _ in range(3):  # several readiness periods of the chart (5 s)
            assert http.get("/v2/health/ready").status_code == 503
            assert http.get("/v2/health/live").status_code == 200
            time.sleep(5)
    state = podman("container", "inspect", name, "--format",
                   "{{.State.Running}} {{.RestartCount}}").stdout.split()
    assert state == ["true", "0"], container_logs(name)
