"""``vigil schedule fraud`` without a cluster: a contract test of the requests kfp 2.17's client
sends. A local HTTP server plays the KFP v2beta1 API's part (healthz, experiments filtered by
display name, created experiments, recurring runs) and checks each request the way the API
server would read it: the method and path, the experiment filter, and the recurring run's body
(6-field cron trigger, ``max_concurrency`` 1, ``no_catchup``, mode ENABLE, the committed
compiled pipeline as ``pipeline_spec``, the run's parameters). KFP's scheduler itself is not
played: nothing runs at 02:00.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from kfp_env import API, KfpApi, committed_pipeline, running_kfp_api

from vigil_cli.cli import cli

pytestmark = pytest.mark.integration


@pytest.fixture
def kfp_api() -> Iterator[KfpApi]:
    with running_kfp_api() as server:
        yield server

def schedule(*args: str, config: Path | None = None) -> Any:
    argv = (["--config", str(config)] if config else []) + ["schedule", "fraud", *args]
    return CliRunner().invoke(cli, argv, catch_exceptions=False)


def test_schedule_creates_a_recurring_run_with_the_compiled_pipeline(kfp_api: KfpApi) -> None:
    result = schedule("--cron", "0 0 2 * * *", "--host", kfp_api.url,
                      "--transactions", "/data/transactions", "--rollout-target", "kserve")
    assert result.exit_code == 0, result.output
    assert kfp_api.errors == []
    assert [(m, p) for m, p, _ in kfp_api.requests] == [
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/experiments"),
        ("POST", f"{API}/experiments"),
        ("POST", f"{API}/recurringruns"),
    ]
    assert kfp_api.requests[2][2]["display_name"] == "vigil"
    (run,) = kfp_api.recurring_runs
    assert run["display_name"] == "fraud-training-nightly"
    assert run["experiment_id"] == kfp_api.experiments["vigil"]
    assert run["trigger"] == {"cron_schedule": {"cron": "0 0 2 * * *"}}
    assert run["max_concurrency"] in (1, "1")  # int64: either JSON form is valid proto JSON
    assert run["no_catchup"] is True
    assert run["mode"] == "ENABLE"
    # What runs is the committed compiled pipeline, unchanged.
    assert run["pipeline_spec"] == committed_pipeline()
    params = run["runtime_config"]["parameters"]
    assert params["transactions"] == "/data/transactions"
    assert params["rollout_target"] == "kserve"
    spec = run["pipeline_spec"].get("pipeline_spec", run["pipeline_spec"])
    declared = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) <= set(declared), set(params) - set(declared)
    assert "recurring run rr-1 (0 0 2 * * *" in result.output
    assert f"{kfp_api.url}/#/recurringrun/details/rr-1" in result.output


def test_schedule_reuses_the_experiment_and_reads_the_host_setting(
    kfp_api: KfpApi, tmp_path: Path
) -> None:
    kfp_api.experiments["nightly"] = "exp-existing"
    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump({"home": str(tmp_path / "home"), "pipelines": {
        "kfp_host": kfp_api.url, "experiment": "nightly"}}))
    result = schedule("--cron", "0  30 1 * * MON-FRI", "--transactions", "/data/tx",
                      config=config)
    assert result.exit_code == 0, result.output
    assert [p for m, p, _ in kfp_api.requests if m == "POST"] == [f"{API}/recurringruns"]
    (run,) = kfp_api.recurring_runs
    assert run["experiment_id"] == "exp-existing"
    assert run["trigger"]["cron_schedule"]["cron"] == "0 30 1 * * MON-FRI"


@pytest.mark.parametrize(("cron", "message"), [
    ("0 2 * * *", "has 5 field(s); KFP takes 6: second minute hour"),
    ("0 0 2 * * * *", "has 7 field(s)"),
    ("0 0 2 * * %", "the day of week field '%' is not a cron field"),
])
def test_a_bad_cron_is_refused_before_any_request(kfp_api: KfpApi, cron: str,
                                                   message: str) -> None:
    result = schedule("--cron", cron, "--host", kfp_api.url, "--transactions", "/data/tx")
    assert result.exit_code == 2
    assert message in result.output
    assert kfp_api.requests == []


def test_schedule_without_a_host_says_so(tmp_path: Path) -> None:
    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump({"home": str(tmp_path / "home")}))
    result = schedule("--cron", "0 0 2 * * *", "--transactions", "/data/tx", config=config)
    assert result.exit_code == 2
    assert "give --host URL or set pipelines.kfp_host" in result.output


def test_a_refusing_endpoint_is_a_clear_error(kfp_api: KfpApi) -> None:
    from pipelines.remote import SubmissionError

    kfp_api.refuse_recurring_runs = True
    with pytest.raises(SubmissionError,
                       match=f"Kubeflow Pipelines at {kfp_api.url} refused the recurring run: 403"):
        schedule("--cron", "0 0 2 * * *", "--host", kfp_api.url, "--transactions", "/data/tx")
