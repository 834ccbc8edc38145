"""The alert rules: promtool accepts them, every alert has firing and silent cases that pass
(`promtool test rules`), and every metric they name is one Vigil declares."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from metric_names import metric_names, rule_expressions, vigil_series

pytestmark = pytest.mark.unit

RULES = Path(__file__).parents[2] / "monitoring" / "rules"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool (Debian package prometheus) is required: make system-packages"
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", "vigil-rules.yml", cwd=RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 16 rules found" in result.stdout


def test_promtool_rule_tests_pass() -> None:
    result = promtool("test", "rules", "vigil-rules.test.yml", cwd=RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_firing_and_silent_cases() -> None:
    """Each alert fires in some case and stays silent in another: a case expecting no alert,
    or a firing case whose input holds a model that must not fire (exp_alerts must match
    exactly, so promtool fails if it does)."""
    tests = yaml.safe_load((RULES / "vigil-rules.test.yml").read_text())["tests"]
    for alert in rule_expressions():
        fires = silent = False
        for t in tests:
            models = set(re.findall(r'model_name="([^"]+)"',
                                    " ".join(s["series"] for s in t["input_series"])))
            for case in t.get("alert_rule_test", []):
                if case["alertname"] != alert:
                    continue
                fired = {a["exp_labels"].get("model_name") for a in case["exp_alerts"]}
                fires |= bool(case["exp_alerts"])
                silent |= not case["exp_alerts"] or bool(models - fired)
        assert fires, f"{alert}: no case where it fires"
        assert silent, f"{alert}: no case where it stays silent"


def test_rules_name_only_metrics_vigil_exports() -> None:
    known = vigil_series()
    for alert, expr in rule_expressions().items():
        names = metric_names(expr)
        assert names, alert
        assert not names - known, f"{alert} names metrics Vigil does not export: {names - known}"
