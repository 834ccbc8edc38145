"""Redis Cluster settings (``redis.type``, ``redis.cluster_nodes``, ``redis.append_replicas``):
parsing from the environment and the file, clear errors for bad values, and what they become
(the cluster address, Feast's ``redis_type: redis_cluster`` configuration). No connection is
made."""

from __future__ import annotations

from pathlib import Path

import pytest
from feast.infra.online_stores.redis import RedisType

from feature_store.config import StoreConfig
from feature_store.online.connection import cluster_address, is_cluster_url
from feature_store.store import redis_connection_string, repo_config
from vigil.errors import ConfigError, FeatureStoreError
from vigil.settings import env_name, load_settings, settings_env

pytestmark = pytest.mark.unit

CLUSTER = {"VIGIL_REDIS__TYPE": "redis_cluster",
           "VIGIL_REDIS__CLUSTER_NODES": "10.0.0.1:7000, 10.0.0.2:7001,redis-2.svc:7002"}


def test_cluster_settings_from_the_environment() -> None:
    redis = load_settings(env=CLUSTER).redis
    assert redis.type == "redis_cluster"
    assert redis.cluster_nodes == ("10.0.0.1:7000", "10.0.0.2:7001", "redis-2.svc:7002")
    assert redis.replicas_per_append == 1  # default on a cluster
    assert redis.online_url == "redis+cluster://10.0.0.1:7000,10.0.0.2:7001,redis-2.svc:7002"


def test_cluster_settings_from_a_file_with_password_and_tls(tmp_path: Path) -> None:
    config = tmp_path / "vigil.yaml"
    config.write_text("redis:\n  type: redis_cluster\n  url: rediss://:s3cret@ignored:1/0\n"
                      "  cluster_nodes: [a:7000, b:7000]\n  append_replicas: 2\n")
    redis = load_settings(config, env={}).redis
    assert redis.replicas_per_append == 2
    assert redis.online_url == "rediss+cluster://:s3cret@a:7000,b:7000"
    assert cluster_address(redis.online_url) == ([("a", 7000), ("b", 7000)], None, "s3cret", True)


def test_one_server_by_default_appends_unconfirmed() -> None:
    redis = load_settings(env={}).redis
    assert (redis.type, redis.cluster_nodes, redis.replicas_per_append) == ("redis", (), 0)
    assert redis.online_url == redis.url
    assert not is_cluster_url(redis.online_url)
    assert load_settings(env={"VIGIL_REDIS__APPEND_REPLICAS": "1"}).redis.replicas_per_append == 1


def test_cluster_settings_survive_the_trip_through_the_environment() -> None:
    settings = load_settings(env=CLUSTER | {"VIGIL_REDIS__APPEND_REPLICAS": "0"})
    env = settings_env(settings)
    assert env[env_name("redis", "type")] == "redis_cluster"
    assert load_settings(env=env) == settings


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VIGIL_REDIS__TYPE": "cluster"}, r"VIGIL_REDIS__TYPE: redis\.type: Input should be "
                                           r"'redis' or 'redis_cluster'"),
        ({"VIGIL_REDIS__TYPE": "redis_cluster"}, r"type redis_cluster needs cluster_nodes"),
        ({"VIGIL_REDIS__CLUSTER_NODES": "a:7000"}, r"cluster_nodes is set but type is 'redis'"),
        (CLUSTER | {"VIGIL_REDIS__CLUSTER_NODES": "a:7000,b"},
         r"VIGIL_REDIS__CLUSTER_NODES: redis\.cluster_nodes: .*cluster node 'b': expected "
         r"host:port"),
        (CLUSTER | {"VIGIL_REDIS__CLUSTER_NODES": "a:70000"}, r"cluster node 'a:70000'"),
        (CLUSTER | {"VIGIL_REDIS__CLUSTER_NODES": "a:x"}, r"cluster node 'a:x'"),
        (CLUSTER | {"VIGIL_REDIS__URL": "redis://h:6379/2"},
         r"url's database must be 0, got '2'"),
        ({"VIGIL_REDIS__APPEND_REPLICAS": "-1"},
         r"redis\.append_replicas: Input should be greater than or equal to 0"),
        ({"VIGIL_REDIS__APPEND_REPLICAS": "two"}, r"redis\.append_replicas: Input should be"),
    ],
)
def test_bad_cluster_settings_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_feast_gets_redis_type_cluster_and_the_node_list(tmp_path: Path) -> None:
    settings = load_settings(env=CLUSTER | {"VIGIL_HOME": str(tmp_path),
                                            "VIGIL_REDIS__URL": "redis://:pw@x:6379/0"})
    config = StoreConfig.from_settings(settings)
    online = repo_config(config, online="redis").online_store
    assert online.redis_type == RedisType.redis_cluster
    assert online.connection_string == (
        "10.0.0.1:7000,10.0.0.2:7001,redis-2.svc:7002,password=pw"
    )
    single = repo_config(StoreConfig.from_settings(load_settings(env={})), online="redis")
    assert single.online_store.redis_type == RedisType.redis
    assert single.online_store.connection_string == "127.0.0.1:6379,db=0"


@pytest.mark.parametrize("url", ["redis+cluster://", "redis+cluster://a", "redis+cluster://a:0",
                                 "redis+cluster://a:1,:2"])
def test_bad_cluster_addresses_name_what_is_wrong(url: str) -> None:
    with pytest.raises(FeatureStoreError, match="redis cluster address"):
        redis_connection_string(url)
