"""The registry on a real PostgreSQL tracking database (MLFLOW_TRACKING_URI=postgresql://...).

Each test module run creates a fresh database on the local server (127.0.0.1:5432, user
``postgres``, trust auth) and drops it afterwards.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import lightgbm as lgb
import numpy as np
import psycopg
import pytest
from psycopg import sql

from vigil.errors import ModelIntegrityError, RegistryError
from vigil.registry import CHALLENGER, CHAMPION, Registry
from vigil.settings import load_settings

pytestmark = pytest.mark.integration

PG_HOST = os.environ.get("VIGIL_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("VIGIL_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("VIGIL_TEST_PG_USER", "postgres")
FEATURES = ["TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT"]


def _admin() -> psycopg.Connection:
    # CREATE / DROP DATABASE cannot run inside a transaction: autocommit.
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres",
                           connect_timeout=5, autocommit=True)


@pytest.fixture(scope="module")
def pg_uri() -> Iterator[str]:
    try:
        admin = _admin()
    except psycopg.OperationalError as e:
        # PostgreSQL runs wherever Vigil's tests run (CI included): never skip silently.
        pytest.fail(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT}: {e}")
    name = f"vigil_registry_{uuid.uuid4().hex[:12]}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        # MLflow keeps pooled connections open: force them out.
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        admin.close()


def train(seed: int) -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, len(FEATURES)))
    y = (x[:, 0] + 0.5 * rng.normal(size=len(x)) > 0).astype(int)
    params = {"objective": "binary", "num_threads": 1, "verbose": -1, "num_leaves": 5,
              "seed": seed, "deterministic": True}
    return lgb.train(params, lgb.Dataset(x, y, feature_name=FEATURES), num_boost_round=5), x


def rows(uri: str, query: str) -> list[tuple]:
    db = urllib.parse.urlparse(uri).path.lstrip("/")
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=db) as conn:
        return list(conn.execute(query).fetchall())


def test_registry_on_postgresql(pg_uri, tmp_path):
    settings = load_settings(env={"VIGIL_HOME": str(tmp_path / "home"),
                                  "MLFLOW_TRACKING_URI": pg_uri})
    registry = Registry.from_settings(settings)
    assert registry.tracking_uri == pg_uri
    assert registry.artifact_root == (tmp_path / "home" / "mlartifacts").resolve()

    (b1, x), (b2, _) = train(1), train(2)
    data_range = (date(2018, 7, 25), date(2018, 7, 31))
    v1 = registry.register_model(b1, name="fraud", threshold=0.5, feature_service="fraud_v1",
                                 data_range=data_range, metrics={"auc_roc": 0.86}, alias=CHAMPION)
    v2 = registry.register_model(b2, name="fraud", threshold=0.3, feature_service="fraud_v1",
                                 data_range=data_range, metrics={"auc_roc": 0.88},
                                 alias=CHALLENGER)

    # The registry lives in PostgreSQL, not in a local file.
    assert rows(pg_uri, "SELECT name, version FROM model_versions ORDER BY version") == [
        ("fraud", 1), ("fraud", 2)]
    assert sorted(rows(pg_uri, "SELECT alias, version FROM registered_model_aliases")) == [
        (CHALLENGER, 2), (CHAMPION, 1)]
    assert not (tmp_path / "home" / "mlflow.db").exists()

    loaded = registry.load_model("fraud")
    assert loaded.card == v1
    assert np.array_equal(loaded.booster.predict(x), b1.predict(x))
    assert [c.version for c in registry.list_models("fraud")] == [2, 1]

    assert registry.promote("fraud", 2).aliases == (CHAMPION,)
    assert registry.load_model("fraud").card.sha256 == v2.sha256
    assert registry.rollback("fraud").version == 1
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback("fraud")

    # A modified artifact is refused.
    stored = Path(urllib.parse.urlparse(v1.source).path) / "model.txt"
    stored.write_text(stored.read_text() + "\n")
    with pytest.raises(ModelIntegrityError, match=hashlib.sha256(stored.read_bytes()).hexdigest()):
        registry.load_model("fraud")
