"""``make demo`` end to end, as a user runs it (smaller data): a fresh folder, the real
``python -m vigil_cli.demo`` process, Redis on 127.0.0.1 under a unique Feast project."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from feature_store.online import delete_project_keys

pytestmark = pytest.mark.e2e


def test_demo_trains_serves_and_scores(tmp_path: Path) -> None:
    project = f"vigildemo_{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIGIL_", "MLFLOW_"))} | {
        "VIGIL_FEATURES__PROJECT": project
    }
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "vigil_cli.demo",
                "--data",
                "data/fraud",
                "--customers",
                "400",
                "--terminals",
                "800",
                "--no-wait",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        delete_project_keys(client, project)
        client.close()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    for step in ("== 1/4", "== 2/4", "== 3/4", "== 4/4"):
        assert step in output
    assert "fraud version 1 registered as champion" in output  # a fresh home: the first model
    assert "serve fraud version 1" in output
    scored = re.findall(r"score (\d\.\d{4})\s+(fraud|legit)", output)
    assert len(scored) >= 3, output[-4000:]
    assert "server stopped" in output
    assert (tmp_path / "data" / "fraud").is_dir() and (tmp_path / ".vigil").is_dir()
