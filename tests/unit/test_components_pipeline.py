"""The compiled pipeline (golden YAML), its parameters, local progress parsing and submission."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.image import DEFAULT_IMAGE
from pipelines.compile import PIPELINES, compile_all
from pipelines.fraud_training import PIPELINE_NAME, FraudTrainingParams
from pipelines.local import (
    STEPS,
    PipelineFailed,
    StepEvent,
    _Tap,
    _Tracker,
    step_environment,
)
from pipelines.remote import PIPELINE_YAML, SubmissionError, submission, submit
from vigil.errors import DataError, ValidationFailed
from vigil.settings import Settings, load_settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PIPELINES_DIR = ROOT / "pipelines"
#: Fields that legitimately differ between compiles: the SDK that compiled, the image built.
VOLATILE = {"sdkVersion", "image"}


def _load(path: Path) -> list[Any]:
    return list(yaml.safe_load_all(path.read_text()))


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in VOLATILE}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


# ----------------------------------------------------------------------------- golden YAML


def test_committed_yaml_matches_a_fresh_compile(tmp_path):
    written = compile_all(tmp_path)
    assert [p.name for p in written] == list(PIPELINES)
    for path in written:
        committed = PIPELINES_DIR / path.name
        assert committed.is_file(), f"{committed} is missing: run `make compile`"
        assert _strip(_load(path)) == _strip(_load(committed)), (
            f"{committed} is stale: run `make compile` and commit the result"
        )


def test_the_component_image_is_one_overridable_constant(tmp_path):
    env = {**os.environ, "VIGIL_COMPONENT_IMAGE": "registry.example/vigil:test"}
    subprocess.run([sys.executable, "-m", "pipelines.compile", "--out", str(tmp_path)],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    compiled = _load(tmp_path / "fraud_training.yaml")[0]
    images = {e["container"]["image"] for e in compiled["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/vigil:test"}
    committed = _load(PIPELINES_DIR / "fraud_training.yaml")[0]
    assert {e["container"]["image"] for e in committed["deploymentSpec"]["executors"].values()} \
        == {DEFAULT_IMAGE}
    # The golden comparison ignores exactly that difference.
    assert _strip([compiled]) == _strip([committed])


def test_every_step_mounts_the_data_volume():
    """On a cluster the steps share vigil_home and the transactions through one claim."""
    from pipelines.fraud_training import DATA_CLAIM, DATA_MOUNT

    spec, platform = _load(PIPELINE_YAML)
    mounts = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(mounts) == set(spec["deploymentSpec"]["executors"])
    for executor, config in mounts.items():
        (mount,) = config["pvcMount"]
        assert mount["mountPath"] == DATA_MOUNT, executor
        assert mount["pvcNameParameter"]["runtimeValue"]["constant"] == DATA_CLAIM, executor


def test_pipeline_graph():
    spec = _load(PIPELINE_YAML)[0]
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME
    tasks = spec["root"]["dag"]["tasks"]
    deps = {name: sorted(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert deps == {
        "validate": [],
        "featurize": ["validate"],
        "train": ["featurize"],
        "evaluate": ["featurize", "train"],
        "condition-branches-1": ["evaluate", "train"],
    }
    branches = spec["components"]["comp-condition-branches-1"]["dag"]["tasks"]
    conditions = {
        name: task["triggerPolicy"]["condition"] for name, task in branches.items()
    }
    assert conditions == {
        "condition-3": "inputs.parameter_values['pipelinechannel--evaluate-decision'] != "
                       "'rejected'",
        "condition-4": "!(inputs.parameter_values['pipelinechannel--evaluate-decision'] != "
                       "'rejected')",
    }
    better = spec["components"]["comp-condition-3"]["dag"]["tasks"]
    assert list(better) == ["condition-2", "register"]
    assert list(spec["components"]["comp-condition-4"]["dag"]["tasks"]) == ["not-registered"]
    register = better["register"]
    assert register["inputs"]["parameters"]["alias"]["componentInputParameter"] == (
        "pipelinechannel--evaluate-decision"
    )
    # The deploy step: after register, only with a rollout target, given the registration.
    rollout = better["condition-2"]
    assert rollout["dependentTasks"] == ["register"]
    assert rollout["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--rollout_target'] != 'none'"
    )
    assert rollout["inputs"]["parameters"]["pipelinechannel--register-Output"] == {
        "taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "register"}
    }
    deploy = spec["components"]["comp-condition-2"]["dag"]["tasks"]["deploy"]
    assert deploy["inputs"]["parameters"]["registration"] == {
        "componentInputParameter": "pipelinechannel--register-Output"
    }
    assert set(spec["root"]["dag"]["outputs"]["parameters"]) == {"evaluation", "registration"}
    # Steps run in the component image with nothing installed at run time.
    for executor in spec["deploymentSpec"]["executors"].values():
        command = " ".join(executor["container"]["command"])
        assert "pip install" not in command


def test_params_defaults_are_the_pipelines():
    inputs = _load(PIPELINE_YAML)[0]["root"]["inputDefinitions"]["parameters"]
    fields = {f.name: f for f in dataclasses.fields(FraudTrainingParams)}
    assert set(fields) == set(inputs)
    for name, field in fields.items():
        if field.default is dataclasses.MISSING:
            assert not inputs[name].get("isOptional", False), name
        else:
            assert inputs[name]["defaultValue"] == field.default, name


def test_cli_defaults_are_the_pipelines():
    from vigil_cli.commands.run import fraud

    defaults = {p.name: p.default for p in fraud.params}
    params = FraudTrainingParams(transactions="x")
    assert defaults["train_days"] == params.train_days
    assert defaults["valid_days"] == params.valid_days
    assert defaults["delay_days"] == params.delay_days
    assert defaults["test_days"] == params.test_days
    assert defaults["metric"] == params.comparison_metric
    assert defaults["quality_floor"] == params.quality_floor
    assert defaults["min_improvement"] == params.min_improvement


# ----------------------------------------------------------------------------- local progress

# Lines as kfp.local 2.17 prints them (colours included) and as the steps print theirs.
CYAN, GREEN, RED, RESET = "\x1b[96m", "\x1b[92m", "\x1b[91m", "\x1b[0m"


def _kfp(task: str, status: str | None = None) -> str:
    name = f"{CYAN}'{task}'{RESET}"
    if status is None:
        return f"10:04:58.045 - INFO - Executing task {name}\n"
    color = GREEN if status == "SUCCESS" else RED
    return f"10:04:59.063 - INFO - Task {name} finished with status {color}{status}{RESET}\n"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.5
        return self.now


def test_tracker_reports_steps_messages_and_timings():
    events: list[StepEvent] = []
    tracker = _Tracker(events.append, clock=Clock())
    tap = _Tap(tracker, echo=None)
    tap.write(_kfp("validate"))
    tap.write("    [vigil] validate: 1,234 rows")
    tap.write(" checked\n    ::vigil-event:: {\"step\": \"validate\", \"event\": \"finished\", "
              "\"seconds\": 0.25}\n    some kfp executor noise\n")
    tap.write(_kfp("validate", "SUCCESS"))
    tap.write(_kfp("not-registered") + _kfp("not-registered", "SUCCESS"))
    assert [(e.kind, e.step, e.index, e.total) for e in events] == [
        ("start", "validate", 1, 5), ("message", "validate", 1, 5), ("end", "validate", 1, 5),
        ("start", "not-registered", 5, 5), ("end", "not-registered", 5, 5),
    ]
    assert events[1].message == "1,234 rows checked"
    assert events[2].seconds == 1.5 and events[2].status == "SUCCESS"
    timings = tracker.timings()
    assert [(t.name, t.status, t.seconds, t.work_seconds) for t in timings] == [
        ("validate", "SUCCESS", 1.5, 0.25), ("not-registered", "SUCCESS", 1.5, None)
    ]


def _failed_run(*lines: str) -> Exception:
    tracker = _Tracker(lambda event: None, clock=Clock())
    tap = _Tap(tracker, echo=None)
    for line in lines:
        tap.write(line)
    tap.close_line()
    return tracker.failure()


def test_a_validation_failure_is_raised_as_such():
    error = _failed_run(
        _kfp("validate"),
        '    ::vigil-event:: {"step": "validate", "event": "error", '
        '"error": "ValidationFailed", "message": "1 of 43 checks failed on /d: TX_AMOUNT ≥ 0"}\n',
        _kfp("validate", "FAILURE"),
    )
    assert isinstance(error, ValidationFailed)
    assert str(error) == "1 of 43 checks failed on /d: TX_AMOUNT ≥ 0"


def test_typed_and_untyped_step_failures():
    data = _failed_run(
        _kfp("validate"), _kfp("validate", "SUCCESS"), _kfp("featurize"),
        '    ::vigil-event:: {"step": "featurize", "event": "error", "error": "DataError", '
        '"message": "windows need more days"}\n',
        _kfp("featurize", "FAILURE"),
    )
    assert isinstance(data, DataError)
    assert str(data) == "featurize: windows need more days"
    bug = _failed_run(_kfp("train"), "    Traceback (most recent call last):\n",
                      "    KeyError: 'TX_AMOUNT'\n", _kfp("train", "FAILURE"))
    assert isinstance(bug, PipelineFailed)
    assert bug.step == "train"
    assert "KeyError: 'TX_AMOUNT'" in str(bug)
    assert isinstance(_failed_run(), PipelineFailed)


def test_steps_list_matches_the_pipeline():
    spec = _load(PIPELINE_YAML)[0]
    executors = {name.removeprefix("exec-") for name in spec["deploymentSpec"]["executors"]}
    assert executors == {*STEPS, "not-registered"}


def test_steps_load_exactly_the_settings_they_are_given(tmp_path, monkeypatch):
    """Every setting reaches the steps as a variable, outranking a settings file they find."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vigil.yaml").write_text("features:\n  project: from_file\n")
    settings = Settings.model_validate({"home": tmp_path / "h", "features": {"project": "other"},
                                        "serving": {"max_instances": 7}})
    env = step_environment(settings)
    assert env["VIGIL_HOME"] == str((tmp_path / "h").resolve())
    assert env["VIGIL_REGISTRY__TRACKING_URI"] == settings.tracking_uri
    seen = load_settings(env={**env, "MLFLOW_TRACKING_URI": "sqlite:///elsewhere.db"})
    assert seen.features.project == "other"
    assert seen.serving.max_instances == 7
    assert seen.tracking_uri == settings.tracking_uri


# ----------------------------------------------------------------------------- submission


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_submission_uses_the_committed_yaml_and_the_pipeline_parameters():
    params = FraudTrainingParams(transactions="/mnt/data/tx", vigil_home="/mnt/vigil",
                                 quality_floor=0.4, model_name="fraud")
    request = submission("https://kfp.example/", params, run_name="nightly")
    assert request.package == PIPELINES_DIR / "fraud_training.yaml"
    assert request.host == "https://kfp.example"
    assert request.experiment == "vigil"
    assert request.run_name == "nightly"
    # Empty strings are left to the pipeline's defaults; everything else is passed.
    expected = {k: v for k, v in params.arguments().items() if v != ""}
    assert request.arguments == expected
    assert "vigil_config" not in request.arguments and "test_end" not in request.arguments
    inputs = _load(request.package)[0]["root"]["inputDefinitions"]["parameters"]
    assert set(request.arguments) <= set(inputs)
    with pytest.raises(SubmissionError, match="expected an http"):
        submission("kfp.example:8888", params)
    with pytest.raises(SubmissionError, match="make compile"):
        submission("http://kfp", params, package=Path("/nonexistent.yaml"))


def test_an_unreachable_endpoint_is_a_clear_error():
    host = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(SubmissionError, match=f"cannot reach Kubeflow Pipelines at {host}"):
        submit(submission(host, FraudTrainingParams(transactions="/d")))


def test_cli_host_errors_without_traceback(run_vigil, tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_HOME", str(tmp_path))
    host = f"http://127.0.0.1:{_closed_port()}"
    result = run_vigil("run", "fraud", "--host", host, "--transactions", "/mnt/data/tx")
    assert result.exit_code == 2
    assert f"cannot reach Kubeflow Pipelines at {host}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    usage = run_vigil("run", "fraud", "--transactions", "/d")
    assert usage.exit_code == 2
    assert "choose one of --local and --host URL" in usage.stderr
    both = run_vigil("run", "fraud", "--local", "--simulate", "--transactions", "/d")
    assert both.exit_code == 2 and "exclude each other" in both.stderr
    missing = run_vigil("run", "fraud", "--local", "--transactions", str(tmp_path / "nope"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
