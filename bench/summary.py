"""Render bench/results/*.json into the README between the bench markers.

Each result may carry ``summary``: rows of ``{"what", "stock", "vigil", "ratio", "target",
"met"}`` (any may be missing); they become one Markdown table per benchmark. ``columns`` may
rename the two value columns (the abuse benchmark compares a quiet run with one under attack).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import BENCHMARKS, RESULTS

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
COLUMNS = ("what", "stock", "vigil", "ratio", "target", "met")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def render() -> str:
    results = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    parts = []
    for name in sorted(results, key=lambda n: (BENCHMARKS.index(n) if n in BENCHMARKS else 99, n)):
        result = results[name]
        rows = result.get("summary") or []
        machine = result.get("machine", {})
        parts.append(
            f"**{name}** ({result.get('when', '?')}, commit {result.get('commit', '?')}, "
            f"load {machine.get('loadavg_1m_at_start', '?')} on {machine.get('cpus', '?')} cores)"
        )
        if rows:
            parts.append("")
            labels = {"stock": "stock", "vigil": "Vigil", **result.get("columns", {})}
            parts.append(f"| what | {labels['stock']} | {labels['vigil']} | ratio | target | met |")
            parts.append("|---|---|---|---|---|---|")
            for row in rows:
                parts.append(
                    "| "
                    + " | ".join(
                        _cell(row.get(k))
                        for k in ("what", "stock", "vigil", "ratio", "target", "met")
                    )
                    + " |"
                )
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def render_handbook() -> str | None:
    """The handbook benchmark's full tables (ch3, ch5), when it has run."""
    path = RESULTS / "handbook.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    tables = result.get("tables") or {}
    machine = result.get("machine", {})
    note = (
        f"`make bench` ({result.get('when', '?')}, commit {result.get('commit', '?')}, load "
        f"{machine.get('loadavg_1m_at_start', '?')}): data {result.get('source', '?')}"
    )
    blocks = [f"```\n{tables[p].rstrip()}\n```" for p in sorted(tables)]
    return "\n\n".join([note, *blocks]) + "\n"


def _replace(text: str, start: str, end: str, body: str) -> str:
    if start not in text or end not in text:
        return text
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}{end}{tail}"


def update_readme(readme: Path = README) -> bool:
    text = readme.read_text()
    updated = _replace(text, START, END, render())
    handbook = render_handbook()
    if handbook is not None:
        updated = _replace(updated, "<!-- handbook:start -->", "<!-- handbook:end -->", handbook)
    readme.write_text(updated)
    return updated != text


if __name__ == "__main__":
    update_readme()
