"""report.json (schema `llmrack-validation-report/1`, documented in docs/validation.md) and report.html
(per node, a matrix: checks down, devices across, failing rows first, and every result not passed listed
below it with its detail). junit.xml is pytest's own, with the same fields as test properties."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape

SCHEMA = "llmrack-validation-report/1"
STATUSES = ("fail", "error", "skip", "pass")  # the order rows appear in: what needs a person first


@dataclass
class Record:
    check: str
    node: str | None
    device: str | None
    status: str
    measured: Any = None
    threshold: str | None = None
    unit: str | None = None
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def id(self) -> str:
        params = "-".join(p for p in (self.node, self.device) if p)
        return f"{self.check}[{params}]" if params else self.check

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(
            check=str(data.get("check")), node=data.get("node"), device=data.get("device"),
            status=str(data.get("status")), measured=data.get("measured"), threshold=data.get("threshold"),
            unit=data.get("unit"), detail=data.get("detail") or "", data=data.get("data") or {},
            seconds=float(data.get("seconds") or 0.0),
        )


def exit_code(records: list[Record]) -> int:
    return 1 if any(r.status in ("fail", "error") for r in records) else 0


def build(records: list[Record], meta: dict[str, Any]) -> dict[str, Any]:
    nodes: dict[str, Any] = {name: dict(info) for name, info in meta.get("nodes", {}).items()}
    for name, info in nodes.items():
        info["summary"] = dict(Counter(r.status for r in records if r.node == name))
        info["gather_seconds"] = meta.get("gather_seconds", {}).get(name)
    summary = {s: sum(1 for r in records if r.status == s) for s in STATUSES}
    return {
        "schema": SCHEMA,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "level": meta.get("level"),
        "seconds": meta.get("seconds"),
        "summary": {**summary, "nodes": len(nodes), "exit_code": exit_code(records)},
        "nodes": nodes,
        "checks": [{"id": r.id, **asdict(r)} for r in sorted(records, key=_order)],
    }


def _order(r: Record) -> tuple[str, int, str]:
    return (r.node or "", STATUSES.index(r.status) if r.status in STATUSES else 0, r.id)


NODE_COLUMN = "node"  # the matrix column of checks that judge the node as a whole


def _device_key(device: str) -> tuple[str, int]:
    """gpu2 < gpu10: the label, then the index as a number."""
    label = device.rstrip("0123456789")
    return label, int(device[len(label):] or 0)


def matrix(report: dict[str, Any], node: str) -> dict[str, Any]:
    """One node's board: checks down, devices across (the node itself first), one cell per result; rows with a
    failure first (then errors, skips, passes), and every result not passed listed below with its detail."""
    mine = [c for c in report["checks"] if c["node"] == node]
    devices = sorted({c["device"] for c in mine if c["device"]}, key=_device_key)
    columns = ([NODE_COLUMN] if any(not c["device"] for c in mine) else []) + devices
    rows: dict[str, dict[str, Any]] = {}
    for c in mine:
        row = rows.setdefault(c["check"], {"check": c["check"], "cells": {}})
        row["cells"][c["device"] or NODE_COLUMN] = c
    for row in rows.values():
        row["worst"] = min((cell["status"] for cell in row["cells"].values()), key=_rank)
    ordered = sorted(rows.values(), key=lambda r: (_rank(r["worst"]), r["check"]))
    return {"columns": columns, "rows": ordered,
            "details": [c for c in mine if c["status"] != "pass"],  # report["checks"]: failures first per node
            "passed": [c for c in mine if c["status"] == "pass"]}


def cell_title(c: dict[str, Any]) -> str:
    """What hovering a cell shows: the status, the measured value and what it was held to."""
    measured = "" if c["measured"] is None else f"{c['measured']}{' ' + c['unit'] if c['unit'] else ''}"
    want = f", want {c['threshold']}" if c["threshold"] else ""
    return f"{c['status']}: {measured}{want}".rstrip(": ")


def _rank(status: str) -> int:
    return STATUSES.index(status) if status in STATUSES else 0


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>llmrack validation: {{ overall }}</title>
<style>
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
table.nodes, table.details { width: 100%; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
table.matrix td { text-align: center; min-width: 3.5em; }
table.matrix th.check { white-space: nowrap; }
.fail td.status, .error td.status, td.cell.fail, td.cell.error { color: #fff; background: #c0392b; }
.skip td.status, td.cell.skip { background: #f1c40f; }
.pass td.status, td.cell.pass { background: #27ae60; color: #fff; }
td.cell a { color: inherit; }
td.cell.none { background: #eee; }
</style></head><body>
<h1 id="overall">llmrack validation: {{ overall }}</h1>
<p id="summary">level {{ report.level }}; {{ report.summary.nodes }} node(s);
{% for s in statuses %}{{ report.summary[s] }} {{ s }}{% if not loop.last %}, {% endif %}{% endfor %};
{{ report.seconds }} s; generated {{ report.generated_at }}</p>
<table class="nodes"><thead><tr><th>node</th><th>kind</th><th>accelerator</th>
{% for s in statuses %}<th>{{ s }}</th>{% endfor %}</tr></thead><tbody>
{% for name, info in report.nodes.items() %}
<tr class="{{ 'fail' if info.summary.get('fail') or info.summary.get('error') else 'pass' }}">
<td><a href="#node-{{ name }}">{{ name }}</a></td><td>{{ info.kind }}</td><td>{{ info.accelerator or "" }}</td>
{% for s in statuses %}<td>{{ info.summary.get(s, 0) }}</td>{% endfor %}</tr>
{% endfor %}
</tbody></table>
{% for name, info in report.nodes.items() %}{% set board = matrix(report, name) %}
<h2 id="node-{{ name }}">{{ name }}: {{ info.kind }}{% if info.accelerator %} ({{ info.expected_devices }} x
{{ info.accelerator }}){% endif %}</h2>
<p class="facts">{{ info.source }} evidence{% if info.uname %}: {{ info.uname }}{% endif %}
{% if info.gather_error %}<br><strong>could not read the node: {{ info.gather_error }}</strong>{% endif %}</p>
<table class="matrix" data-node="{{ name }}">
<thead><tr><th>check</th>
{% for col in board.columns %}<th data-column="{{ col }}">{{ col }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in board.rows %}<tr class="{{ row.worst }}" data-check="{{ row.check }}">
<th class="check">{{ row.check }}</th>
{% for col in board.columns %}{% set c = row.cells.get(col) %}
{% if c %}<td class="cell {{ c.status }}" data-column="{{ col }}" title="{{ cell_title(c) }}">
{%- if c.status == "pass" %}{{ c.status }}{% else %}<a href="#{{ c.id }}">{{ c.status }}</a>{% endif %}</td>
{%- else %}<td class="cell none" data-column="{{ col }}"></td>{% endif %}{% endfor %}</tr>
{% endfor %}
</tbody></table>
<table class="details" data-node="{{ name }}">
<thead><tr><th>check</th><th>device</th><th>status</th><th>measured</th><th>threshold</th><th>unit</th>
<th>detail</th></tr></thead><tbody>
{% for c in board.details %}
<tr class="{{ c.status }}" id="{{ c.id }}" data-check="{{ c.id }}"><td>{{ c.check }}</td><td>{{ c.device or "" }}</td>
<td class="status">{{ c.status }}</td><td>{{ "" if c.measured is none else c.measured }}</td>
<td>{{ c.threshold or "" }}</td><td>{{ c.unit or "" }}</td><td>{{ c.detail }}</td></tr>
{% endfor %}
</tbody></table>
{% if board.passed %}<details class="passed" data-node="{{ name }}">
<summary>{{ board.passed | length }} passed: measured values</summary><table class="details passed"><tbody>
{% for c in board.passed %}<tr class="pass" data-check="{{ c.id }}"><td>{{ c.check }}</td><td>{{ c.device or "" }}</td>
<td>{{ "" if c.measured is none else c.measured }}</td><td>{{ c.threshold or "" }}</td><td>{{ c.unit or "" }}</td>
<td>{{ c.detail }}</td></tr>
{% endfor %}</tbody></table></details>{% endif %}
{% endfor %}
</body></html>
"""


def render_html(report: dict[str, Any]) -> str:
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    overall = "FAILED" if report["summary"]["exit_code"] else "PASSED"
    return env.from_string(_HTML).render(report=report, statuses=STATUSES, overall=overall, matrix=matrix,
                                         cell_title=cell_title)


def write_reports(out: Path, records: list[Record], meta: dict[str, Any]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    report = build(records, meta)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.html").write_text(render_html(report))
    return report
