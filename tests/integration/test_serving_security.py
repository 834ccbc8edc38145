"""Security: 127.0.0.1 only and no gRPC port, optional bearer token, model artifacts checked
against the registry's sha256 and never unpickled, a chosen registry version."""

from __future__ import annotations

import ast
import os
import urllib.parse
from datetime import date
from pathlib import Path

import httpx
import pytest

from feature_store.names import FEATURE_SERVICE
from inference.client import ServerStartError
from vigil import contract as c
from vigil.registry import Registry
from vigil.settings import load_settings

pytestmark = pytest.mark.integration

TOKEN = "s3cr3t-token-for-tests"
V1 = "/v1/models/fraud:predict"


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets process ``pid`` listens on (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)
            if width == 8:
                host = ".".join(str(b) for b in raw[::-1])
            else:
                host = ":".join(raw[i : i + 4][::-1].hex() for i in range(0, 16, 4))
            found.append((host, int(port, 16)))
    return found


def test_binds_loopback_only_and_runs_no_grpc(main_server):
    port = urllib.parse.urlparse(main_server.url).port
    assert listening_sockets(main_server.pid) == [("127.0.0.1", port)]


def test_bearer_token_from_the_environment(main_store, server_factory, serving_model):
    server = server_factory(config=main_store.config, env={"VIGIL_SERVING_TOKEN": TOKEN})
    row = serving_model.live.iloc[230]
    body = {"instances": [{c.TX_DATETIME: row[c.TX_DATETIME].isoformat(),
                           c.CUSTOMER_ID: str(row[c.CUSTOMER_ID]),
                           c.TERMINAL_ID: str(row[c.TERMINAL_ID]),
                           c.TX_AMOUNT: float(row[c.TX_AMOUNT])}]}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = http.post(V1, json=body, headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert "bearer token" in response.json()["error"]
        for path in ("/metrics", "/v2/models/fraud", "/v1/models", "/v2"):
            assert http.get(path).status_code == 401, path
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert http.post(V1, json=body, headers=auth).status_code == 200
        assert http.get("/metrics", headers=auth).status_code == 200
        # The scheme in any letter case, one or more spaces (issue 14: "bearer" was refused).
        for value in (f"bearer {TOKEN}", f"BEARER  {TOKEN}", f"BeArEr {TOKEN}"):
            assert http.post(V1, json=body, headers={"Authorization": value}).status_code == 200
        for value in (f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer{TOKEN}", "Bearer"):
            assert http.post(V1, json=body, headers={"Authorization": value}).status_code == 401
        # The server's probes stay open for the kubelet; they name no model.
        for path in ("/", "/v2/health/live", "/v2/health/ready"):
            assert http.get(path).status_code == 200, path
        # Whatever names or describes a model needs the token (issue 14: GET /v1/models/<name>
        # told anyone which models exist).
        for path in ("/v1/models/fraud", "/v1/models/other", "/v2/models/fraud/ready",
                     "/v2/models/fraud/versions/1/ready", "/v2/models/fraud",
                     "/v2/models/fraud/versions/1", "/v1/models", "/v2/models"):
            assert http.get(path).status_code == 401, path
            assert http.get(path, headers=auth).status_code in (200, 404), path
        metrics = http.get("/metrics", headers=auth).text
    assert 'outcome="unauthorized",status_code="401"' in metrics


def test_inference_code_never_unpickles():
    """The serving code imports no pickle-based loader; models come as LightGBM text."""
    forbidden = {"pickle", "cloudpickle", "joblib", "dill", "shelve", "marshal"}
    root = Path(__file__).resolve().parents[2] / "inference"
    for source in root.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            assert not forbidden & set(names), f"{source.name} imports {names}"


@pytest.fixture
def two_versions(serving_model, online_store, tmp_path):
    """A registry of its own: version 1 intact, version 2 (champion) tampered with."""
    store = online_store()
    home = tmp_path / "home"
    config = tmp_path / "vigil.yaml"
    text = store.config.read_text().replace(str(serving_model.home), str(home))
    config.write_text(text)
    registry = Registry.from_settings(load_settings(config))
    first, second = (
        registry.register_model(
            serving_model.booster, name="fraud", threshold=threshold, alias="champion",
            feature_service=FEATURE_SERVICE, data_range=(date(2018, 4, 1), date(2018, 5, 6)),
            metrics={"auc_roc": 0.5},
        )
        for threshold in (0.25, 0.75)
    )
    artifact = Path(urllib.parse.urlparse(second.source).path) / "model.txt"
    artifact.write_text(artifact.read_text().replace("tree\n", "tree\n\n", 1))
    return config, first, second


def test_a_tampered_model_is_refused_and_a_chosen_version_served(two_versions, server_factory,
                                                                 tmp_path):
    config, first, _ = two_versions
    with pytest.raises(ServerStartError, match="sha256"):
        server_factory(config=config)
    # One line says why, no traceback (issue 14; the server is one process since issue 10).
    (log_path,) = tmp_path.glob("server-0.log")
    text = log_path.read_text()
    assert "Traceback" not in text
    assert [line for line in text.splitlines() if "sha256" in line] == [
        line for line in text.splitlines() if line.startswith("error: refusing to load fraud")
    ]
    assert len([line for line in text.splitlines() if "sha256" in line]) == 1
    server = server_factory(config=config, version=first.version)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        metadata = http.get("/v2/models/fraud").json()
    assert metadata["versions"] == [str(first.version)]
    assert metadata["parameters"]["threshold"] == 0.25
    assert metadata["parameters"]["sha256"] == first.sha256
