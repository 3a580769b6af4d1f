"""`llmrack bench serve` runs end to end (tiny settings). It prints figures; nothing here asserts on speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmrack.cli.main import app

pytestmark = pytest.mark.slow


def test_bench_serve_reports_all_three(qwen2_dir: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "serve", "--model", str(qwen2_dir), "--clients", "2",
                                      "--prompt-tokens", "8", "--max-tokens", "6", "--rounds", "2",
                                      "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["engine"]["requests"] == 4 and report["engine"]["generated_tokens"] == 24
    assert report["baseline"]["requests"] == 2 and report["baseline"]["generated_tokens"] == 12
    assert report["ceiling"]["generated_tokens"] == 12
    for part in ("engine", "baseline", "ceiling"):
        assert report[part]["throughput_tok_s"] > 0
    assert report["engine"]["ttft_p99_s"] >= report["engine"]["ttft_p50_s"] > 0
    assert report["vs_baseline"] > 0 and set(report["targets"]) == {
        "throughput >= 8x baseline", "throughput >= 50% of ceiling", "TTFT p99 < 1 s"}


def test_bench_engines_side_by_side_runs_the_rendered_llmrack_command(qwen2_dir: Path) -> None:
    """`--engine llmrack` at two client counts, one server; vLLM's side runs the same code with its own program
    (the figures in docs/serving.md come from benchmarks/serve_engines.py)."""
    result = CliRunner().invoke(app, ["bench", "serve", "--model", str(qwen2_dir), "--engine", "llmrack",
                                      "--clients-list", "1", "--clients-list", "3", "--prompt-tokens", "8",
                                      "--max-tokens", "6", "--rounds", "1", "--json"])
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)
    assert [(r["engine"], r["clients"], r["requests"]) for r in runs] == [("llmrack", 1, 1), ("llmrack", 3, 3)]
    assert all(r["throughput_tok_s"] > 0 and r["ready_after_s"] > 0 for r in runs)
    refused = subprocess.run([str(Path(sys.executable).parent / "llmrack"), "bench", "serve", "--model",
                              str(qwen2_dir), "--engine", "tgi"], capture_output=True, text=True, check=False)
    assert refused.returncode == 2 and "choose llmrack and/or vllm" in refused.stderr, refused.stderr


def test_bench_vllm_command_comes_from_the_renderer(qwen2_dir: Path, tmp_path: Path) -> None:
    from llmrack import engines_bench as engines

    vllm = tmp_path / "venv" / "bin" / "vllm"
    argv, env, ready = engines.command("vllm", qwen2_dir, 18000, 64, 136, vllm)
    assert argv[:3] == [str(vllm), "serve", str(qwen2_dir)] and ready == "/health"
    flags = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert flags["--max-num-seqs"] == "64" and flags["--max-model-len"] == "136" and flags["--port"] == "18000"
    assert flags["--dtype"] == "float32" and flags["--tensor-parallel-size"] == "1" and "--config" not in flags
    assert env["VLLM_TARGET_DEVICE"] == "cpu" and int(env["VLLM_CPU_KVCACHE_SPACE"]) >= 1
    argv, _, ready = engines.command("llmrack", qwen2_dir, 18001, 4, 64, None)
    assert argv[1:3] == ["-m", "serving"] and ready == "/ready" and "--api-key-file" not in argv
