"""Serving takes every value from the one settings model; ``vigil serve`` flags override it."""

from __future__ import annotations

import dataclasses

import pytest

from feature_store.online import HistoryLimits
from inference.model import ServingOptions
from inference.schema import Limits
from vigil.errors import ConfigError
from vigil.settings import load_settings, with_overrides

pytestmark = pytest.mark.unit


def test_options_have_no_defaults_of_their_own():
    for cls in (ServingOptions, Limits):
        with_default = [f.name for f in dataclasses.fields(cls)
                        if f.default is not dataclasses.MISSING
                        or f.default_factory is not dataclasses.MISSING]
        assert not with_default, f"{cls.__name__} defaults {with_default}: use vigil.settings"


def test_options_come_from_the_settings(tmp_path):
    settings = load_settings(env={
        "VIGIL_HOME": str(tmp_path),
        "VIGIL_REGISTRY__MODEL_NAME": "scorer",
        "VIGIL_REDIS__URL": "redis://10.0.0.5:6380/2",
        "VIGIL_REDIS__TIMEOUT_MS": "35",
        "VIGIL_REDIS__APPEND_TIMEOUT_MS": "250",
        "VIGIL_FEATURES__PROJECT": "other",
        "VIGIL_SERVING__MAX_INSTANCES": "12",
        "VIGIL_SERVING__MAX_FUTURE_SKEW_S": "7.5",
        "VIGIL_SERVING__MAX_BATCH": "64",
        "VIGIL_SERVING__RETRY_AFTER_S": "2",
        "VIGIL_SERVING__LOG_ROTATE_ROWS": "99",
        "VIGIL_SERVING__LOG_ROTATE_SECONDS": "9",
        "VIGIL_SERVING__LOG_FLUSH_S": "0.25",
        "VIGIL_SERVING__MAX_BATCH_PER_CUSTOMER": "4",
        "VIGIL_SERVING__MAX_QUEUED_TRANSACTIONS": "500",
        "VIGIL_SERVING__MAX_QUEUED_PER_CUSTOMER": "20",
        "VIGIL_SERVING__SHED_RETRY_AFTER_S": "3",
        "VIGIL_REDIS__HISTORY_MAX_ENTRIES": "300",
        "VIGIL_REDIS__APPEND_MAX_EVENTS": "10",
    })
    options = ServingOptions.from_settings(settings, version=3)
    log_root = (tmp_path / "inference_log" / "scorer").resolve()
    assert options == ServingOptions(
        model_name="scorer", version=3, redis_url="redis://10.0.0.5:6380/2",
        redis_timeout_s=0.035, append_timeout_s=0.25, append_replicas=0, project="other",
        log_root=str(log_root), log_rotate_rows=99, log_rotate_seconds=9.0,
        limits=Limits(max_instances=12, max_future_skew_s=7.5), retry_after_s=2.0, max_batch=64,
        max_batch_per_customer=4, max_queued_transactions=500, max_queued_per_customer=20,
        shed_retry_after_s=3, history=HistoryLimits(max_entries=300, append_max_events=10),
        log_journal_dir=str(log_root / "_journal"), log_flush_s=0.25,
    )
    logged = load_settings(env={"VIGIL_SERVING__LOG_ROOT": "s3://bucket/log",
                                "VIGIL_HOME": str(tmp_path)})
    remote = ServingOptions.from_settings(logged)
    assert remote.log_root == "s3://bucket/log"
    assert remote.log_journal_dir == str((tmp_path / "inference_journal" / "fraud").resolve())


def test_overrides_win_over_the_environment_and_are_checked():
    settings = load_settings(env={"VIGIL_SERVING__PORT": "9001", "VIGIL_SERVING__HOST": "0.0.0.0"})
    changed = with_overrides(settings, "command line", serving={"port": 9002},
                             registry={"model_name": "other"})
    assert (changed.serving.port, changed.serving.host) == (9002, "0.0.0.0")
    assert changed.registry.model_name == "other" and settings.serving.port == 9001
    with pytest.raises(ConfigError, match=r"command line: serving\.port: .*less than or equal"):
        with_overrides(settings, "command line", serving={"port": 70_000})
    with pytest.raises(ConfigError, match=r"command line: serving\.workers: Extra inputs"):
        with_overrides(settings, "command line", serving={"workers": 2})


def test_serve_flags_are_checked_by_the_settings_before_anything_starts(run_vigil):
    result = run_vigil("serve", "--port", "70000")
    assert result.exit_code == 2
    assert "serving.port" in result.stderr
    result = run_vigil("serve", "--max-instances", "0")
    assert result.exit_code == 2 and "serving.max_instances" in result.stderr
    result = run_vigil("serve", "--workers", "2")  # one process per pod: replicas scale out
    assert result.exit_code == 2 and "No such option" in result.stderr
