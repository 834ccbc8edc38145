"""Render ``manifests/`` from the Helm chart (``make manifests``): the chart is the one source.

    python scripts/render_manifests.py [--out manifests]

writes, from ``charts/vigil`` with ``charts/vigil/ci/manifests-values.yaml`` (release ``vigil``,
namespace ``vigil``):

* ``base/vigil.yaml``: every object, for ``kubectl apply -f manifests/base/vigil.yaml``, and
  ``base/kustomization.yaml`` for the overlays (``manifests/overlays/<env>``, written by hand);
* ``inferenceservice.yaml``: the InferenceService alone, for ``kubectl apply -f``.

Rendering is offline (helm-python-sdk, no helm binary, no cluster). The committed files are
golden-tested (``tests/unit/test_chart.py``): a change to the chart without ``make manifests``
fails the test.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

ROOT: Final = Path(__file__).resolve().parents[1]
CHART: Final = ROOT / "charts" / "vigil"
MANIFEST_VALUES: Final = CHART / "ci" / "manifests-values.yaml"
RELEASE: Final = "vigil"
NAMESPACE: Final = "vigil"
HEADER: Final = ("# Rendered from charts/vigil by `make manifests` "
                 "(charts/vigil/ci/manifests-values.yaml): do not edit.\n")


def load_values(path: Path) -> dict[str, Any]:
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: values must be a mapping, got {type(values).__name__}")
    return values


def render(values: Mapping[str, Any] | None = None, *, release: str = RELEASE,
           namespace: str = NAMESPACE, chart: Path = CHART) -> list[dict[str, Any]]:
    """Every object the chart renders for ``values``, in template order. The chart's schema
    refuses bad values (``helm_python.HelmValuesError``, naming the key and the bound)."""
    import helm_python

    with helm_python.Chart.load(chart) as loaded:
        rendered = loaded.render(dict(values or {}), name=release, namespace=namespace,
                                 is_install=True)
    documents: list[dict[str, Any]] = []
    for template in sorted(rendered):
        if not template.endswith((".yaml", ".yml")):
            continue  # NOTES.txt
        for doc in yaml.safe_load_all(rendered[template]):
            if doc:
                documents.append(doc)
    return documents


def dump(documents: list[dict[str, Any]]) -> str:
    return HEADER + "---\n".join(yaml.safe_dump(d, sort_keys=False, width=100)
                                 for d in documents)


def files(values_path: Path = MANIFEST_VALUES) -> dict[str, str]:
    """Relative path -> content of every file ``make manifests`` writes."""
    documents = render(load_values(values_path))
    services = [d for d in documents if d["kind"] == "InferenceService"]
    if len(services) != 1:
        raise ValueError(f"{values_path} renders {len(services)} InferenceServices, not one")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["vigil.yaml"],
    }
    return {
        "base/vigil.yaml": dump(documents),
        "base/kustomization.yaml": HEADER + yaml.safe_dump(kustomization, sort_keys=False),
        "inferenceservice.yaml": dump(services),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "manifests",
                        help="folder to write into (default: manifests/)")
    args = parser.parse_args(argv)
    for relative, content in files().items():
        path = args.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
