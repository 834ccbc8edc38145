"""What the feature store takes from the settings (StoreConfig), and the one Redis client
constructor with its serving variant (no connection is made)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from feature_store.config import StoreConfig
from feature_store.online import redis_client
from vigil.settings import load_settings

pytestmark = pytest.mark.unit


def test_store_config_from_settings_environment(tmp_path: Path) -> None:
    settings = load_settings(env={
        "VIGIL_HOME": str(tmp_path / "home"),
        "VIGIL_FEATURES__PROJECT": "shop_7",
        "VIGIL_REDIS__URL": "redis://:pw@cache.internal:6380/2",
    })
    config = StoreConfig.from_settings(settings)
    assert config == StoreConfig(
        repo_path=(tmp_path / "home" / "feature_repo").resolve(),
        project="shop_7",
        redis_url="redis://:pw@cache.internal:6380/2",
    )
    assert config.data_dir == config.repo_path / "data"
    assert config.repo_path.is_absolute()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.project = "other"  # type: ignore[misc]


def _connection_settings(serving: bool, timeout_s: float) -> tuple[float, float, int, int]:
    client = redis_client("redis://127.0.0.1:6390/3", timeout_s, serving=serving)
    try:
        connection = client.connection_pool.make_connection()
        return (connection.socket_timeout, connection.socket_connect_timeout,
                connection.retry.get_retries(), connection.health_check_interval)
    finally:
        client.close()


def test_serving_clients_connect_within_the_budget_and_never_retry() -> None:
    assert _connection_settings(True, 0.02) == (0.02, 0.02, 0, 0)


def test_batch_clients_get_time_to_connect() -> None:
    assert _connection_settings(False, 0.02)[:2] == (0.02, 0.5)
    assert _connection_settings(False, 30.0)[:2] == (30.0, 30.0)
