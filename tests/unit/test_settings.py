"""Settings: YAML file, environment (``VIGIL_`` prefix, nested ``__``), strict errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.errors import ConfigError
from vigil.settings import Settings, env_name, load_settings, settings_env

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _no_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./vigil.yaml


def test_defaults_run_everything_locally():
    s = load_settings(env={})
    assert s.home == Path(".vigil")
    assert s.redis.url == "redis://127.0.0.1:6379/0"
    assert s.serving.host == "127.0.0.1"
    assert s.tracking_uri == f"sqlite:///{(Path('.vigil') / 'mlflow.db').resolve()}"


def test_every_nested_setting_comes_from_the_environment():
    s = load_settings(env={
        "VIGIL_HOME": "/srv/vigil",
        "VIGIL_REDIS__URL": "redis://redis:6379/1",
        "VIGIL_REDIS__TIMEOUT_MS": "35",
        "VIGIL_SERVING__MAX_INSTANCES": "64",
        "VIGIL_SERVING__ACCESS_LOG": "true",
        "VIGIL_FEATURES__PROJECT": "bank",
        "VIGIL_REGISTRY__MODEL_NAME": "fraud-eu",
    })
    assert s.home == Path("/srv/vigil")
    assert s.redis.url == "redis://redis:6379/1"
    assert s.redis.timeout_ms == 35.0
    assert s.serving.max_instances == 64
    assert s.serving.access_log is True
    assert s.features.project == "bank"
    assert s.registry.model_name == "fraud-eu"


def test_environment_outranks_the_file_which_outranks_defaults(tmp_path: Path):
    config = tmp_path / "conf.yaml"
    config.write_text("redis:\n  url: redis://file:6379/0\n  timeout_ms: 50\n"
                      "serving:\n  port: 9000\n")
    s = load_settings(config, env={"VIGIL_REDIS__URL": "redis://env:6379/0"})
    assert s.redis.url == "redis://env:6379/0"  # environment
    assert s.redis.timeout_ms == 50  # file
    assert s.serving.port == 9000  # file
    assert s.serving.max_batch == 256  # default


def test_mlflow_variable_sets_the_tracking_uri_below_vigils_own():
    assert load_settings(env={"MLFLOW_TRACKING_URI": "http://mlflow:5000"}).tracking_uri == (
        "http://mlflow:5000"
    )
    both = {"MLFLOW_TRACKING_URI": "http://a", "VIGIL_REGISTRY__TRACKING_URI": "http://b"}
    assert load_settings(env=both).tracking_uri == "http://b"


def test_file_names_a_settings_file_and_expands_variables(tmp_path: Path):
    config = tmp_path / "conf.yaml"
    config.write_text("redis:\n  url: redis://${REDIS_HOST}:${REDIS_PORT:-6379}/0\n")
    s = load_settings(env={"VIGIL_CONFIG": str(config), "REDIS_HOST": "cache"})
    assert s.redis.url == "redis://cache:6379/0"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VIGIL_REDIS__URLL": "x"}, "environment variable VIGIL_REDIS__URLL: redis has no field"),
        ({"VIGIL_CACHE__URL": "x"}, "environment variable VIGIL_CACHE__URL: settings has no field"),
        ({"VIGIL_REDIS__TIMEOUT_MS": "fast"},
         "environment variable VIGIL_REDIS__TIMEOUT_MS: redis.timeout_ms: Input should be"),
        ({"VIGIL_SERVING__PORT": "70000"},
         "environment variable VIGIL_SERVING__PORT: serving.port"),
        ({"VIGIL_FEATURES__PROJECT": "Bad-Name"},
         "environment variable VIGIL_FEATURES__PROJECT: features.project"),
        # An empty Secret value: named, not a traceback from the Redis client.
        ({"VIGIL_REDIS__URL": ""}, "environment variable VIGIL_REDIS__URL: redis.url: "
         "Value error, empty: expected redis://"),
        ({"VIGIL_REDIS__URL": "cache:6379"},
         "VIGIL_REDIS__URL: redis.url: Value error, 'cache:6379'"),
    ],
)
def test_a_bad_variable_is_named_with_its_field(env: dict[str, str], message: str):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(env=env)


def test_other_vigil_variables_are_not_settings():
    # the serving token (a secret) and the settings file's name are read elsewhere
    load_settings(env={"VIGIL_SERVING_TOKEN": "s3cret", "VIGIL_BENCH_DATA": "/tmp/x"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("redis:\n  urll: redis://x\n", r"conf\.yaml: redis\.urll: Extra inputs"),
        ("serving:\n  max_batch: 0\n", r"conf\.yaml: serving\.max_batch: Input should be greater"),
        ("- a\n- b\n", r"conf\.yaml: top level must be a mapping"),
        ("redis: [\n", r"conf\.yaml: not valid YAML"),
        ("home: ${UNSET_VARIABLE}\n",
         r"conf\.yaml: environment variable UNSET_VARIABLE is not set"),
    ],
)
def test_a_bad_file_is_named_with_its_field(tmp_path: Path, text: str, message: str):
    config = tmp_path / "conf.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(config, env={})


def test_missing_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(tmp_path / "nope.yaml", env={})


def test_settings_env_reproduces_the_settings_in_another_process():
    s = Settings.model_validate({
        "home": "/data", "redis": {"url": "redis://r:1/0", "timeout_ms": 12.5},
        "serving": {"log_root": "s3://bucket/log", "max_future_skew_s": 1.5},
    })
    env = settings_env(s)
    assert env[env_name("redis", "timeout_ms")] == "12.5"
    assert load_settings(env=env) == s


def test_loading_leaves_the_process_environment_alone(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VIGIL_REDIS__URL", "redis://process:6379/0")
    assert load_settings(env={}).redis.url == "redis://127.0.0.1:6379/0"
    assert load_settings().redis.url == "redis://process:6379/0"
