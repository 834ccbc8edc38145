"""The chart's ``Plain`` rendering (no KServe) played by ``podman play kube``: Redis, the MLflow
server and the predictor run as the chart's pods (their security contexts, probes' paths,
settings ConfigMap, Secrets by ``secretKeyRef``, volumes), in Vigil's image.

What ``podman play kube`` does not do is done by ``podman_env`` (its module docstring): Services
become DNS aliases on the pods' network, Secrets podman secrets, the Redis StatefulSet a
one-replica Deployment with its claim. MLflow's backend here is SQLite on its artifact volume
(the chart's Secret holds any SQLAlchemy URL; the shared PostgreSQL listens on 127.0.0.1 only,
out of the pods' network).

The model is registered through the chart's MLflow Service by a one-off container on the
pods' network, the features materialized into the chart's Redis; then the predictor's pod
starts and answers a KServe V1 request with the batch features' scores. ``podman play kube
--down`` removes it all.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from k8s_validation import chart
from podman_env import (
    BuiltImage,
    alias_services,
    container_logs,
    create_secret,
    network,
    playable,
    pod_ip,
    podman,
    pods_of,
    wait_until,
)

from feature_store.config import StoreConfig
from feature_store.jobs import materialize
from feature_store.names import FEATURE_SERVICE
from inference.client import health
from vigil import contract as c
from vigil.settings import load_settings

PLAIN_VALUES = Path(__file__).resolve().parents[3] / "charts" / "vigil" / "ci" / \
    "plain-values.yaml"
REDIS_PASSWORD = "play-kube-" + uuid.uuid4().hex[:8]
MLFLOW_HOST = {"Host": "localhost"}  # one of the names the chart's MLflow allows


def values(image: BuiltImage, redis_image: str) -> dict[str, Any]:
    rendered = yaml.safe_load(PLAIN_VALUES.read_text())
    repository, tag = image.ref.rsplit(":", 1)
    redis_repository, redis_tag = redis_image.rsplit(":", 1)
    rendered.update({
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "canary": {"enabled": False},
        "predictor": {**rendered.get("predictor", {}), "replicas": 1},
    })
    rendered["redis"] = {**rendered["redis"],
                         "image": {"repository": redis_repository, "tag": redis_tag}}
    return rendered


def component(doc: dict[str, Any]) -> str:
    labels = doc["metadata"].get("labels") or {}
    return str(labels.get("app.kubernetes.io/component", ""))


@pytest.fixture
def played(vigil_image: BuiltImage, redis_image: str, tmp_path: Path) -> Iterator[dict]:
    documents = chart().render(values(vigil_image, redis_image))
    secrets = {"vigil-redis-auth": {"password": REDIS_PASSWORD},
               "vigil-mlflow-backend": {"url": "sqlite:////mlflow/artifacts/mlflow.db"}}
    playable_docs = playable(documents, secrets)
    services = [d for d in documents if d["kind"] == "Service"]
    backing = [d for d in playable_docs if component(d) != "predictor"]
    # ConfigMaps in both files: podman reads a pod's ConfigMaps from the file it plays.
    config_maps = [d for d in playable_docs if d["kind"] == "ConfigMap"]
    predictor = config_maps + [d for d in playable_docs if component(d) == "predictor"]
    files = {"backing": tmp_path / "backing.yaml", "predictor": tmp_path / "predictor.yaml"}
    files["backing"].write_text(yaml.safe_dump_all(backing))
    files["predictor"].write_text(yaml.safe_dump_all(predictor))
    net = f"vigil-kube-{uuid.uuid4().hex[:8]}"
    volumes = [d["metadata"]["name"] for d in playable_docs
               if d["kind"] == "PersistentVolumeClaim"]
    with network(net):
        for name, data in secrets.items():
            create_secret(name, data)
        try:
            yield {"documents": documents, "services": services, "files": files,
                   "network": net, "backing": backing, "predictor": predictor}
        finally:
            for file in files.values():
                podman("play", "kube", "--down", str(file), check=False, timeout_s=120)
            for name in secrets:
                podman("secret", "rm", name, check=False)
            for volume in volumes:
                podman("volume", "rm", "--force", volume, check=False)


def deployment(documents: list[dict[str, Any]], component_name: str) -> dict[str, Any]:
    (found,) = [d for d in documents if d["kind"] == "Deployment"
                and component(d) == component_name]
    return found


def register_model(image: str, net: str, model_dir: Path, threshold: float,
                   mlflow_container: str) -> None:
    """``fraud`` version 1, champion, through the chart's MLflow Service (a pod on its network
    with the settings the chart gives its pods)."""
    script = (
        "import lightgbm as lgb\n"
        "from datetime import date\n"
        "from vigil.registry import Registry\n"
        "from vigil.settings import load_settings\n"
        "card = Registry.from_settings(load_settings()).register_model(\n"
        "    lgb.Booster(model_file='/model/model.txt'), name='fraud',\n"
        f"    threshold={threshold!r}, feature_service={FEATURE_SERVICE!r},\n"
        "    data_range=(date(2018, 4, 1), date(2018, 5, 6)), metrics={'auc_roc': 0.5},\n"
        "    alias='champion')\n"
        "print(card.version)\n"
    )
    result = podman("run", "--rm", "--network", net, "--volume", f"{model_dir}:/model:ro",
                    "--env", "VIGIL_REGISTRY__TRACKING_URI=http://vigil-mlflow:5000",
                    "--env", "VIGIL_HOME=/tmp/vigil", image, "python", "-c", script,
                    timeout_s=300, check=False)
    if result.returncode != 0:
        dns = podman("run", "--rm", "--network", net, image, "getent", "hosts", "vigil-mlflow",
                     check=False)
        raise AssertionError(f"registering through the MLflow Service failed; vigil-mlflow is "
                             f"{dns.stdout.strip() or dns.stderr.strip()}\n"
                             f"{result.stderr[-2000:]}\nMLflow's log:\n"
                             f"{container_logs(mlflow_container)}")
    assert result.stdout.strip().splitlines()[-1] == "1", result.stdout + result.stderr


def test_the_plain_rendering_serves_under_podman_play_kube(
        played, vigil_image, serving_model, tx_instance, feature_names, tmp_path):
    net = played["network"]
    podman("play", "kube", "--network", net, str(played["files"]["backing"]), timeout_s=300)
    alias_services(played["services"] + played["backing"], net)
    mlflow_pod = pods_of(deployment(played["backing"], "mlflow"))
    redis_pod = pods_of(deployment(played["backing"], "redis"))
    mlflow_url = f"http://{pod_ip(mlflow_pod, net)}:5000"
    wait_until(lambda: health(mlflow_url, "/health", headers=MLFLOW_HOST) == 200,
               "the chart's MLflow answering /health", 240,
               lambda: container_logs(f"{mlflow_pod}-mlflow"))

    # The model, through the MLflow Service; the features, into the chart's Redis.
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    serving_model.booster.save_model(str(model_dir / "model.txt"))
    (model_dir / "model.txt").chmod(0o644)
    model_dir.chmod(0o755)
    register_model(vigil_image.ref, net, model_dir, serving_model.card.threshold,
                   mlflow_container=f"{mlflow_pod}-mlflow")
    redis_url = f"redis://:{REDIS_PASSWORD}@{pod_ip(redis_pod, net)}:6379/0"
    settings = load_settings(env={"VIGIL_HOME": str(serving_model.home),
                                  "VIGIL_REDIS__URL": redis_url})
    materialize(StoreConfig.from_settings(settings))

    podman("play", "kube", "--network", net, str(played["files"]["predictor"]), timeout_s=300)
    alias_services(played["services"] + played["predictor"], net)
    predictor_pod = pods_of(deployment(played["predictor"], "predictor"))
    url = f"http://{pod_ip(predictor_pod, net)}:8080"
    logs = lambda: container_logs(f"{predictor_pod}-kserve-container")  # noqa: E731
    wait_until(lambda: health(url, "/v2/health/ready") == 200, "the predictor pod ready", 240,
               logs)

    live = serving_model.live.iloc[:10]
    scores = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for _, row in live.iterrows():
            response = http.post("/v1/models/fraud:predict",
                                 json={"instances": [tx_instance(row)]})
            assert response.status_code == 200, response.text + logs()
            body = response.json()
            assert (body["model_version"], body["degraded"]) == ("1", False), body
            scores.append(body["predictions"][0]["score"])
    ids = live[c.TRANSACTION_ID].to_list()
    batch = serving_model.features.set_index(c.TRANSACTION_ID).loc[ids]
    expected = serving_model.booster.predict(batch[feature_names].to_numpy(np.float64))
    np.testing.assert_allclose(scores, expected, rtol=1e-9, atol=1e-12)

    # --down removes the pods; nothing of the release keeps running.
    for file in played["files"].values():
        podman("play", "kube", "--down", str(file), timeout_s=120)
    left = podman("pod", "ps", "--format", "{{.Name}}").stdout.split()
    assert not {mlflow_pod, redis_pod, predictor_pod} & set(left), left
