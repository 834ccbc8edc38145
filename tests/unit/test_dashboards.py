"""Grafana dashboards: the committed JSON is what :mod:`monitoring.grafana` builds, every PromQL
expression parses (promtool, as recording rules) and names only metrics Vigil exports, and every
alert rule's metric family has a panel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from metric_names import metric_names, rule_expressions, vigil_series
from test_alert_rules import promtool

from monitoring import grafana
from vigil import contract as c

pytestmark = pytest.mark.unit

#: Grafana's variables, replaced by values of the right type before promtool parses.
VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$model_name": "fraud"}


def concrete(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def test_committed_json_is_what_the_builder_makes() -> None:
    built = grafana.build()
    on_disk = {p.stem: p for p in grafana.HERE.glob("*.json")}
    assert sorted(on_disk) == sorted(built), "run: python -m monitoring.grafana"
    for name, model in built.items():
        assert on_disk[name].read_text() == grafana.render(model), (
            f"{name}.json is stale: run python -m monitoring.grafana")
        assert json.loads(on_disk[name].read_text())["uid"] == model["uid"]


def test_every_expression_parses(tmp_path: Path) -> None:
    rules = [{"record": f"vigil:dashboard:{name.replace('-', '_')}:{i}", "expr": concrete(e)}
             for name, model in grafana.build().items()
             for i, e in enumerate(grafana.expressions(model))]
    assert len(rules) > 30
    (tmp_path / "dash.yml").write_text(yaml.safe_dump({"groups": [
        {"name": "dashboards", "rules": rules}]}))
    result = promtool("check", "rules", "dash.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_expressions_name_only_metrics_vigil_exports() -> None:
    known = vigil_series()
    for name, model in grafana.build().items():
        queries = [t["query"]["query"] for t in model["templating"]["list"]
                   if t["type"] == "query"]
        for expr in [*grafana.expressions(model), *queries]:
            selector = re.sub(r"label_values\(([^,]+),[^)]*\)", r"\1", expr)
            names = metric_names(concrete(selector))
            assert names and not names - known, f"{name}: {expr} names {names - known}"


def test_alerted_metrics_have_a_panel() -> None:
    shown = set().union(*(metric_names(concrete(e)) for m in grafana.build().values()
                          for e in grafana.expressions(m)))
    for alert, expr in rule_expressions().items():
        missing = metric_names(expr) - shown - {"push_time_seconds"}
        assert not missing, f"{alert} alerts on {missing}, which no dashboard shows"


def test_decision_matchers_use_the_servers_decisions() -> None:
    """``decision`` is a label of the server's transaction counter: a panel or rule matching a
    value the server never writes shows nothing (the fraud-share panel matched ``FRAUD``)."""
    exprs = [e for m in grafana.build().values() for e in grafana.expressions(m)]
    exprs += list(rule_expressions().values())
    matched = [v for e in exprs for v in re.findall(r'decision\s*=~?\s*"([^"]*)"', e)]
    assert matched, "no panel matches a decision"
    assert set(matched) <= set(c.DECISIONS), matched
