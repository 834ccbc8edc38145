"""One pipeline step in Vigil's image, run the way KFP runs it: ``kfp.local.DockerRunner`` (KFP's
own local container runner, through podman's Docker-compatible API) runs the ``featurize``
component of the compiled pipeline in the image the pipeline names, as the image's user
(10001); the same component under ``SubprocessRunner`` (``vigil run --local``) is the
reference. The two training sets are identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from podman_env import BuiltImage, podman, podman_env

from components.image import DEFAULT_IMAGE
from vigil.data.simulate import Simulation, write_daily

#: The featurize step's windows on the 60-day small simulation.
WINDOWS = {"train_days": 14, "valid_days": 4, "delay_days": 7, "test_days": 7, "test_end": ""}


@pytest.fixture(scope="module")
def docker_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``podman system service`` on a private socket (the Docker API the docker SDK speaks),
    stopped by PID at the end."""
    sock = tmp_path_factory.mktemp("podman_api") / "podman.sock"
    process = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                               env=podman_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "podman system service: no socket in 30 s"
            time.sleep(0.2)
        yield f"unix://{sock}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def pipeline_image(vigil_image: BuiltImage) -> Iterator[str]:
    """The built image under the reference the compiled pipeline names."""
    podman("tag", vigil_image.ref, DEFAULT_IMAGE)
    yield DEFAULT_IMAGE
    podman("untag", DEFAULT_IMAGE, DEFAULT_IMAGE, check=False)


def world_writable(root: Path) -> Path:
    """The pipeline root, mounted into the step's container at the same path: the image's
    user writes there (as into a volume with fsGroup on a cluster)."""
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o777)
        for name in files:
            os.chmod(Path(folder) / name, 0o666)
    return root


def run_featurize(runner: Any, root: Path, simulation: Simulation) -> tuple[dict[str, Any],
                                                                            pd.DataFrame]:
    from kfp import local

    from components.kfp_components import featurize

    daily = root / "transactions"
    cfg = simulation.config
    write_daily(simulation.transactions, daily, cfg.start_date, cfg.n_days)
    (root / "home").mkdir()
    world_writable(root)
    # The pipeline root is what DockerRunner mounts: the inputs and Vigil's home live in it.
    local.init(runner=runner, pipeline_root=str(root), raise_on_error=True)
    # The step's folders, made by kfp.local on this side, writable by the image's user too.
    umask = os.umask(0)
    try:
        task = featurize(transactions=str(daily), vigil_home=str(root / "home"),
                         vigil_config="", feature_engine="duckdb", spark_master="", **WINDOWS)
    finally:
        os.umask(umask)
    summary = json.loads(task.outputs["Output"])
    dataset = pd.read_parquet(task.outputs["dataset"].path)
    return summary, dataset


def test_the_featurize_step_in_the_image_matches_the_local_run(
        docker_api, pipeline_image, small_simulation, tmp_path, monkeypatch):
    from kfp import local

    local_summary, local_dataset = run_featurize(local.SubprocessRunner(use_venv=False),
                                                 tmp_path / "local", small_simulation)
    monkeypatch.setenv("DOCKER_HOST", docker_api)
    runner = local.DockerRunner(read_only=True, cap_drop=["ALL"],
                                security_opt=["no-new-privileges"])
    image_summary, image_dataset = run_featurize(runner, tmp_path / "image", small_simulation)

    def comparable(summary: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in summary.items() if k != "source"}  # the input folder

    assert comparable(image_summary) == comparable(local_summary)
    assert len(image_dataset) == len(local_dataset) > 1000
    keys = sorted(local_dataset.columns)
    pd.testing.assert_frame_equal(
        image_dataset[keys].sort_values(keys).reset_index(drop=True),
        local_dataset[keys].sort_values(keys).reset_index(drop=True),
    )
