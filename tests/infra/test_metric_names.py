"""Every llmrack_* series a dashboard, a rule file or the serving layer uses is a name of llmrack.contracts.metrics,
and the node-side accelerator exporter (a script that cannot import llmrack) writes exactly the contract's names."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import re
from pathlib import Path

from llmrack.contracts import alerts, metrics
from serving.metrics import ServingMetrics

ROOT = Path(__file__).resolve().parents[2]
SERIES = re.compile(r"\bllmrack_[a-z_]+")
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def _contract_names() -> set[str]:
    return {v for k, v in vars(metrics).items() if k.isupper() and isinstance(v, str) and v.startswith("llmrack_")}


def _base(series: str, names: set[str]) -> str:
    if series in names:
        return series
    for suffix in SUFFIXES:
        if series.endswith(suffix) and series.removesuffix(suffix) in names:
            return series.removesuffix(suffix)
    return series


def _exprs() -> dict[str, str]:
    """Where each PromQL expression comes from -> the expression."""
    out = {}
    for path in sorted((ROOT / "infra" / "monitoring" / "dashboards").glob("*.json")):
        for i, panel in enumerate(json.loads(path.read_text())["panels"]):
            for j, target in enumerate(panel.get("targets", [])):
                out[f"{path.name} panel {i} target {j}"] = target["expr"]
    for group in alerts.shared_rules()["groups"]:
        for rule in group["rules"]:
            out[f"alerts.yml {rule.get('alert') or rule.get('record')}"] = rule["expr"]
    template = (ROOT / "ansible" / "roles" / "monitoring" / "templates" / "llmrack.rules.yml.j2").read_text()
    for i, line in enumerate(template.splitlines()):
        if line.strip().startswith("expr:"):
            # Jinja expressions ({{ ... }}) hold filters and variables, not series.
            out[f"llmrack.rules.yml.j2 line {i + 1}"] = re.sub(r"\{\{.*?\}\}", "", line)
    return out


def test_every_series_the_dashboards_and_rules_query_is_a_contract_name() -> None:
    names = _contract_names()
    # Quoted strings are label values (an HAProxy backend named llmrack_serving, say), not series.
    unknown = {f"{where}: {s}" for where, expr in _exprs().items() for s in SERIES.findall(re.sub(r'"[^"]*"', "", expr))
               if _base(s, names) not in names}
    assert not unknown, "not in llmrack.contracts.metrics:\n" + "\n".join(sorted(unknown))


def test_the_serving_layer_exposes_exactly_the_contract_s_serving_names() -> None:
    exposed = {m.name for m in ServingMetrics("m").registry.collect()}
    declared = set(metrics.SERVING_HISTOGRAMS + metrics.SERVING_GAUGES + metrics.SERVING_COUNTERS
                   + metrics.TENANT_COUNTERS)
    assert exposed == declared


def test_the_accelerator_exporter_writes_the_contract_s_names() -> None:
    path = ROOT / "ansible" / "roles" / "monitoring" / "files" / "llmrack-accelerator-exporter"
    loader = importlib.machinery.SourceFileLoader("llmrack_accelerator_exporter", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    device = {"index": 0, "name": "A100", "bus_id": "00000000:07:00.0", "memory_used_bytes": 1.0,
              "memory_total_bytes": 2.0, "utilization_ratio": 0.5, "temperature_celsius": 40.0, "power_watts": 90.0}
    text = module.render("nvidia", [device], True, 8)
    written = {line.split("{")[0].split()[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert written == set(metrics.ACCELERATOR_GAUGES)
