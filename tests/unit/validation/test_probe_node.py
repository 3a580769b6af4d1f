"""The node-side probe's own mechanics, on this CPU: its JSON, and the all-reduce path (spawned ranks,
busbw = algbw x 2(n-1)/n) with gloo where no GPU is. NCCL/HCCL and the GPU probes need hardware."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmrack.validation import probe_node
from llmrack.validation.evidence import probe_source


@pytest.mark.slow
def test_allreduce_path_over_two_cpu_ranks() -> None:
    result = probe_node.allreduce_probe(torch, "cpu", 2, seconds=0.2, nbytes=4 * 1024 * 1024)
    assert result["n"] == 2 and result["bytes"] == 4 * 1024 * 1024
    assert result["algbw_gbps"] > 0
    assert result["busbw_gbps"] == pytest.approx(result["algbw_gbps"] * 2 * (2 - 1) / 2, abs=0.02)


@pytest.mark.slow
def test_probe_script_as_the_node_runs_it(tmp_path: Path) -> None:
    # The collector ships the file's text and runs it as a script with the node's Python.
    script = tmp_path / "probe.py"
    script.write_text(probe_source())
    proc = subprocess.run([sys.executable, str(script), "--level", "standard"], capture_output=True, text=True,
                          timeout=300, check=True)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["torch"] == torch.__version__ and data["device_kind"] == "cpu" and data["devices"] == []
    assert data["cpu"]["gemm_fp32_gflops"] > 0 and data["cpu"]["membw_gbps"] > 0
    assert "allreduce" not in data and "nothing to all-reduce" in data["skipped"]["allreduce"]
