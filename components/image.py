"""The container image every component runs in (built from ``components/Dockerfile``).

One constant, overridable when compiling: ``VIGIL_COMPONENT_IMAGE=registry/vigil:tag python -m
pipelines.compile`` bakes another image into the compiled YAML.
"""

from __future__ import annotations

import os
from typing import Final

IMAGE_ENV: Final = "VIGIL_COMPONENT_IMAGE"
#: Vigil's one image (components/Dockerfile): the pipeline's steps, the predictor, the jobs and
#: the MLflow server run it. The chart's default (charts/vigil: image.repository, the chart's
#: appVersion as the tag) is the same reference; tests/unit/test_chart.py holds them together.
IMAGE_REPOSITORY: Final = "ghcr.io/vigil-mlops/vigil"
#: The package's version (pyproject.toml), the chart's appVersion.
IMAGE_TAG: Final = "0.1.0"
DEFAULT_IMAGE: Final = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"


def component_image() -> str:
    return os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE


COMPONENT_IMAGE: Final = component_image()
