"""The feature store as its users drive it: ``feast apply`` in the repo folder, and
``vigil featurize`` / ``vigil materialize`` on real files and real Redis."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis

from feature_store import names as n
from feature_store.online import RedisHistories, delete_project_keys
from feature_store.transforms import DEFAULT_SPEC, batch_features
from vigil import contract as c
from vigil.data.ingest import read_transactions

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2] / "feature_store"


def test_feast_apply_works_in_the_repo_folder(tmp_path: Path) -> None:
    repo = tmp_path / "feature_store"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns("__pycache__", "data"))
    feast = Path(sys.executable).with_name("feast")
    applied = subprocess.run(
        [str(feast), "apply"], cwd=repo, capture_output=True, text=True, timeout=300, check=False
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert (repo / "data" / "registry.db").exists()
    listed = subprocess.run(
        [str(feast), "feature-services", "list"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert n.FEATURE_SERVICE in listed.stdout and n.ONLINE_FEATURE_SERVICE in listed.stdout
    views = subprocess.run(
        [str(feast), "feature-views", "list"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    for view in (n.CUSTOMER_SPENDING, n.TERMINAL_RISK, n.CUSTOMER_HISTORY, n.TERMINAL_HISTORY):
        assert view in views.stdout


@pytest.fixture
def project() -> Iterator[str]:
    name = f"vigilcli_{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis(host="127.0.0.1", port=6379)
    delete_project_keys(client, name)
    client.close()


def test_featurize_then_materialize(
    tiny_daily_dir: Path,
    tmp_path: Path,
    project: str,
    monkeypatch: pytest.MonkeyPatch,
    run_vigil: Callable[..., Any],
) -> None:
    monkeypatch.setenv("VIGIL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VIGIL_FEATURES__PROJECT", project)
    monkeypatch.delenv("VIGIL_CONFIG", raising=False)
    monkeypatch.delenv("VIGIL_REDIS__URL", raising=False)

    done = run_vigil("featurize", "--transactions", tiny_daily_dir, "--out", tmp_path / "features")
    assert done.exit_code == 0, done.stderr
    features = pd.read_parquet(tmp_path / "features" / "features.parquet")
    raw = read_transactions(tiny_daily_dir).frame
    assert len(features) == len(raw) and features[c.TRANSACTION_ID].is_unique
    for name in [
        "TX_DURING_WEEKEND",
        "CUSTOMER_ID_NB_TX_7DAY_WINDOW",
        "TERMINAL_ID_RISK_30DAY_WINDOW",
    ]:
        assert name in features.columns
    expected = batch_features(raw)
    pd.testing.assert_frame_equal(
        features[DEFAULT_SPEC.features].reset_index(drop=True),
        expected[DEFAULT_SPEC.features].reset_index(drop=True),
    )
    assert (tmp_path / "home" / "feature_repo" / "data" / n.TRANSACTION_FEATURES_FILE).exists()

    done = run_vigil("materialize")
    assert done.exit_code == 0, done.stderr
    assert "into redis" in done.stdout
    store = RedisHistories(redis.Redis(host="127.0.0.1", port=6379), project)
    last = raw.sort_values(c.TX_DATETIME).iloc[-1]
    key = store.customer_key(str(last[c.CUSTOMER_ID]))
    history = store._read_customers([key])[key][0]
    assert history is not None and str(last[c.TRANSACTION_ID]) in history[0].transaction_id


def test_materialize_before_featurize_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_vigil: Callable[..., Any]
) -> None:
    monkeypatch.setenv("VIGIL_HOME", str(tmp_path / "empty"))
    done = run_vigil("materialize")
    assert done.exit_code == 2
    assert "run `vigil featurize`" in done.stderr
