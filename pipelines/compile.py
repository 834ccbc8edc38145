"""Compile every pipeline into the YAML committed next to its source.

``python -m pipelines.compile`` (``make compile``) rewrites the committed files;
``python -m pipelines.compile --out DIR`` writes them elsewhere (the golden test does).
``VIGIL_COMPONENT_IMAGE`` selects the component image baked into the YAML.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from kfp import compiler

from pipelines.fraud_training import fraud_training

HERE: Final = Path(__file__).resolve().parent
#: YAML file name -> pipeline function.
PIPELINES: Final[dict[str, Callable[..., Any]]] = {
    "fraud_training.yaml": fraud_training,
}


def compile_all(out_dir: Path = HERE) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, pipeline in PIPELINES.items():
        path = out_dir / file_name
        compiler.Compiler().compile(pipeline, str(path))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the YAML files")
    args = parser.parse_args(argv)
    for path in compile_all(args.out):
        print(f"compiled {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
