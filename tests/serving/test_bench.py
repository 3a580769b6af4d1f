"""`llmrack bench serve` runs end to end (tiny settings). It prints figures; nothing here asserts on speed."""

from __future__ import annotations

import json
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
