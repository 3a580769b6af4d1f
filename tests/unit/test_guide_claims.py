"""The DeepSeek private-deployment selection guide's claims, computed; docs/planning.md shows exactly that table."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from llmrack.guide_claims import claims, markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_planning_doc_carries_the_computed_table() -> None:
    doc = (ROOT / "docs" / "planning.md").read_text()
    block = re.search(r"<!-- guide-claims:[^>]*-->\n(.*?)\n<!-- /guide-claims -->", doc, re.S)
    assert block is not None, "docs/planning.md lost its guide-claims block"
    assert block.group(1) == markdown_table(), "regenerate it with: llmrack plan --guide-claims"


def test_sizing_claims_hold_and_the_tight_ones_are_called_out() -> None:
    verdicts = {c.claim: c for c in claims()}
    assert verdicts["13B parameters load whole on one A100 80 GB"].verdict == "agrees"
    assert verdicts["175B needs an 8-card NVLink A100 cluster"].verdict == "agrees"
    assert verdicts["INT8 quantisation cuts memory use by 50 % against FP16"].verdict == "agrees"
    entry = verdicts["Entry tier: one A100 (40 or 80 GB) serves 7B-13B models"]
    assert entry.verdict == "partly" and "holds 1 sequence(s)" in entry.why  # 13B FP16 on 40 GB, 20 % kept free
    assert verdicts["PCIe Gen4 latency should stay within 2 us"].verdict == "not checked here"
    assert {c.verdict for c in claims()} <= {"agrees", "partly", "disagrees", "adopted", "not checked here"}


def test_cli_prints_the_claims() -> None:
    proc = subprocess.run([sys.executable, "-m", "llmrack", "plan", "--guide-claims", "--json"], capture_output=True,
                          text=True, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert [c["claim"] for c in json.loads(proc.stdout)] == [c.claim for c in claims()]
