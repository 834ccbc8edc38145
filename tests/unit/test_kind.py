"""``make kind-up`` (scripts/kind-up.sh, kind-config.yaml) cannot run here (no kind nodes, no
registry images): these tests check what can be checked without a cluster — the scripts parse
(``bash -n``), ``shellcheck`` finds nothing, every version is pinned, and the script, the kind
configuration, the chart's kind values and the image (components/Dockerfile, built by
scripts/build-image.sh) agree."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from k8s_validation import ROOT

pytestmark = pytest.mark.unit

SCRIPT = ROOT / "scripts" / "kind-up.sh"
SCRIPTS = [SCRIPT, ROOT / "scripts" / "build-image.sh"]
DOCKERFILE = ROOT / "components" / "Dockerfile"
CONFIG = ROOT / "kind-config.yaml"
KIND_VALUES = ROOT / "charts" / "vigil" / "ci" / "kind-values.yaml"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_the_script_parses(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_finds_nothing(script):
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed (Debian package shellcheck)"
    done = subprocess.run([shellcheck, "--severity=style", str(script)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_version_is_pinned():
    script = SCRIPT.read_text()
    (node,) = yaml.safe_load(CONFIG.read_text())["nodes"]
    assert re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", node["image"])
    lines = script.replace("\\\n", " ").splitlines()
    installs = [line for line in lines if re.search(r"\bhelm upgrade --install\b", line)
                and "charts/vigil" not in line]
    assert len(installs) == 4
    for line in installs:
        assert re.search(r"--version \"\$[A-Z_]+_VERSION\"", line), line
    versions = dict(re.findall(r'^([A-Z_]+_VERSION)="([^"]+)"$', script, re.MULTILINE))
    assert versions["KSERVE_VERSION"] == "v0.20.0"
    assert all(v and v not in ("latest", "main", "master") for v in versions.values())
    for url in re.findall(r"https://raw\.githubusercontent\.com/\S+", script):
        assert "$INGRESS_NGINX_VERSION" in url, url
    assert "set -euo pipefail" in script


def test_the_script_installs_the_chart_with_the_kind_values(run_vigil):
    script = SCRIPT.read_text()
    values = yaml.safe_load(KIND_VALUES.read_text())
    assert "-f charts/vigil/ci/kind-values.yaml" in script
    assert "kserve.controller.deploymentMode=Standard" in script
    assert values["deploymentMode"] == "Standard"
    image = re.search(r'^IMAGE="([^"]+)"$', script, re.MULTILINE)
    assert image is not None
    assert image.group(1) == f"{values['image']['repository']}:{values['image']['tag']}"
    assert values["image"]["pullPolicy"] == "Never"  # loaded with kind load, never pulled
    # The ingress controller is the gateway the predictor's NetworkPolicy lets in.
    assert values["networkPolicy"]["gatewayNamespaces"] == ["ingress-nginx"]
    assert "/v1/models/fraud:predict" in script
    # The commands it runs on this machine are vigil's own, with options vigil knows.
    commands = re.findall(r'^"\$VIGIL" (.+)$', script, re.MULTILINE)
    assert len(commands) == 2
    for command in commands:
        words = command.split()
        options = [w for w in words if w.startswith("--")]
        done = run_vigil(*[w for w in words if not w.startswith("--") and w != "none"],
                         "--help")
        assert done.exit_code == 0, f"vigil {command}: {done.stdout}{done.stderr}"
        for option in options:
            assert option in done.stdout, f"vigil {command}: no option {option}"


def test_the_image_runs_as_the_charts_user_with_oci_labels():
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", dockerfile, re.MULTILINE)
    (user,) = re.findall(r"^USER (\d+)(?::\d+)?$", dockerfile, re.MULTILINE)
    values = yaml.safe_load((ROOT / "charts" / "vigil" / "values.yaml").read_text())
    chart_helpers = (ROOT / "charts" / "vigil" / "templates" / "_helpers.tpl").read_text()
    assert f'(dict "uid" {user})' in chart_helpers, "the predictor runs as the image's user"
    assert int(user) >= 10000
    for label in ("source", "version", "revision"):
        assert f"org.opencontainers.image.{label}=" in dockerfile, label
    assert values["image"]["repository"]
