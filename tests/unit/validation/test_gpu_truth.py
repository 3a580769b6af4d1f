"""benchmarks/gpu_truth.py, the prepared device check, as far as a machine without an accelerator can run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "gpu_truth.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, check=False)


def test_plan_only_writes_a_model_and_predicts_its_memory(tmp_path: Path) -> None:
    proc = run("--plan-only", "--layers", "2", "--hidden", "256", "--context", "512", "--concurrency", "4",
               "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    mem = json.loads(proc.stdout)["memory"]
    assert (tmp_path / "model" / "config.json").is_file()
    assert mem["weights_bytes"] == 2 * mem["params"]  # BF16
    # Qwen2 config: 2 layers x 1 KV head x head_dim 128 x (K, V) x 2 bytes per token, 4 x 512 tokens.
    assert mem["kv_cache_bytes"] == 2 * 1 * 128 * 2 * 2 * 512 * 4
    assert mem["predicted_bytes"] == mem["weights_bytes"] + mem["kv_cache_bytes"] + mem["activation_workspace_bytes"]
    assert mem["cpu_prefill_sequences"] == 4  # the device run's load + prefill path, run on the CPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the script measures instead of skipping")
def test_without_an_accelerator_it_skips_with_the_reason(tmp_path: Path) -> None:
    proc = run("--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["device"]["kind"] is None and "sees no CUDA or NPU device" in out["skipped"]
