"""The container image every component runs in (built from ``components/Dockerfile``).

One constant, overridable when compiling: ``VIGIL_COMPONENT_IMAGE=registry/vigil:tag python -m
pipelines.compile`` bakes another image into the compiled YAML.
"""

from __future__ import annotations

import os
from typing import Final

IMAGE_ENV: Final = "VIGIL_COMPONENT_IMAGE"
DEFAULT_IMAGE: Final = "ghcr.io/vigil-mlops/vigil-components:0.1.0"


def component_image() -> str:
    return os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE


COMPONENT_IMAGE: Final = component_image()
