from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "validation"


def llmrack(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "llmrack", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, check=False)


def report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / "report.json").read_text())
    return data


def by_id(rep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in rep["checks"]}


def junit_cases(path: Path) -> list[ET.Element]:
    return list(ET.parse(path / "junit.xml").getroot().iter("testcase"))


def write_inventory(where: Path, hosts: dict[str, dict[str, Any]], groups: dict[str, list[str]],
                    deployment: dict[str, Any], group_vars: dict[str, Any] | None = None) -> Path:
    """An inventory in the shape of llmrack.contracts.inventory: hosts.yml + group_vars/all/deployment.yml."""
    children = {g: {"hosts": {h: hosts.get(h, {}) for h in members}} for g, members in groups.items()}
    serving = {g: {} for g in children if g in ("nvidia_nodes", "ascend_nodes", "cpu_nodes")}
    inv = {"all": {"children": {"serving_nodes": {"children": serving}, **children}}}
    where.mkdir(parents=True, exist_ok=True)
    (where / "hosts.yml").write_text(yaml.safe_dump(inv))
    gv = where / "group_vars" / "all"
    gv.mkdir(parents=True, exist_ok=True)
    (gv / "deployment.yml").write_text(yaml.safe_dump({"llmrack_deployment": deployment, **(group_vars or {})}))
    return where


DEPLOYMENT = {
    "name": "r1-qwen7b", "environment": "staging",
    "model": {"name": "deepseek-r1-distill-qwen-7b", "source": "/models/r1-qwen7b"},
    "accelerator": "a100-80g", "nodes": 4,
    "serving": {"max_model_len": 8192, "max_num_seqs": 32},
}
