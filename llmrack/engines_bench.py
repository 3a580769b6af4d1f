"""Both engines side by side: `llmrack bench serve --engine llmrack --engine vllm`.

A job of llmrack (it plans a spec and renders its command), not of the serving package, which stands on
llmrack.contracts alone.

Each engine is started once, with the command llmrack.contracts.serving_command renders for a CPU node (the same
renderer the Ansible role and the Pulumi component use), on the same model and the same prompts; then, for each
client count, every client sends `rounds` streaming requests back to back (greedy, `ignore_eos`, exactly
`max_tokens` tokens each). vLLM runs from its own virtualenv (`--vllm PATH`, or one created once from the
cpu-vllm image's wheels).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from llmrack import catalog
from llmrack.contracts.serving_command import Engine, ServingInputs, render
from llmrack.plan import plan
from llmrack.spec import parse_spec
from serving.bench.serve_bench import _free_port, _measured, _Process, _warm, make_prompts

LAB_ACCELERATOR = "a100-80g"  # what the spec stands in for; the node kind (cpu) decides the command


@dataclass
class EngineRun:
    engine: str
    clients: int
    requests: int
    throughput_tok_s: float
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    itl_p50_ms: float | None
    itl_p99_ms: float | None
    cpu_ms_per_token: float | None
    ready_after_s: float


def bench_spec(engine: str, model_dir: Path, max_num_seqs: int, max_model_len: int,
               tensor_parallel: int = 1) -> dict[str, Any]:
    """The deployment spec the bench serves `model_dir` from (served as `bench`)."""
    return {
        "name": "bench", "environment": "dev", "accelerator": LAB_ACCELERATOR, "nodes": 1,
        "model": {"name": model_dir.name, "config": str(model_dir / "config.json"), "source": str(model_dir),
                  "served_name": "bench"},
        "serving": {"max_model_len": max_model_len, "max_num_seqs": max_num_seqs, "max_queue": 4 * max_num_seqs,
                    "engine": engine, "tensor_parallel": tensor_parallel},
    }


def command(engine: str, model_dir: Path, port: int, max_num_seqs: int, max_model_len: int,
            vllm: Path | None, node: str = "cpu", tensor_parallel: int = 1) -> tuple[list[str], dict[str, str], str]:
    """(argv, env, ready path) of `engine` serving `model_dir` on this host (`node`: cpu, cuda or npu), from the
    serving command renderer; only the program differs: this interpreter's `-m serving`, or the vLLM
    virtualenv's `vllm`."""
    spec = parse_spec(bench_spec(engine, model_dir, max_num_seqs, max_model_len, tensor_parallel),
                      "the bench's deployment spec")
    p = plan(spec.plan_request(), catalog.accelerator(spec.accelerator))
    inputs = ServingInputs.from_spec(spec, p, node, model_path=str(model_dir), api_keys=False,
                                     cpu_cores=os.cpu_count())
    cmd = render(replace(inputs, host="127.0.0.1", port=port))
    if cmd.engine is Engine.vllm:
        if vllm is None:
            raise ValueError("the vLLM engine needs its executable (--vllm)")
        program = [str(vllm), *cmd.program[1:]]
    else:
        program = [sys.executable, *cmd.program[1:]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **cmd.env}
    return [*program, *cmd.args], env, cmd.ready_path


def run(model_dir: Path, engines: list[str], clients: list[int], prompt_tokens: int = 64, max_tokens: int = 64,
        rounds: int = 2, vllm: Path | None = None, node: str = "cpu") -> list[EngineRun]:
    prompts = make_prompts(model_dir, max(clients), prompt_tokens)
    out: list[EngineRun] = []
    for engine in engines:
        port = _free_port()
        argv, env, ready = command(engine, model_dir, port, max(clients), prompt_tokens + max_tokens + 8, vllm,
                                   node)
        with tempfile.TemporaryDirectory(prefix="llmrack-bench-") as home:
            # A fresh compile cache, as a container start has: start-up is measured cold.
            env["VLLM_CACHE_ROOT"] = str(Path(home) / "vllm-cache")
            t0 = time.monotonic()
            server = _Process(argv, port, env)
            try:
                server.wait_ready(timeout=900, path=ready)
                ready_after = time.monotonic() - t0
                _warm(server.url, prompts, stream=True)
                for n in clients:
                    result = _measured(server, server.url, prompts[:n], rounds, max_tokens, stream=True)
                    s = result.summary()
                    out.append(EngineRun(engine, n, s["requests"], s["throughput_tok_s"], s["ttft_p50_s"],
                                         s["ttft_p99_s"], s["itl_p50_ms"], s["itl_p99_ms"], s["cpu_ms_per_token"],
                                         round(ready_after, 1)))
            finally:
                server.stop()
    return out


def render_table(model_dir: Path, runs: list[EngineRun], prompt_tokens: int, max_tokens: int, rounds: int) -> str:
    def cell(v: Any) -> str:
        return "-" if v is None else str(v)

    lines = [f"model {model_dir}: {prompt_tokens}-token prompts, {max_tokens} generated tokens (ignore_eos, greedy), "
             f"{rounds} streaming request(s) per client",
             f"{'engine':8} {'clients':>7} {'req':>4} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL p50':>8} "
             f"{'ITL p99':>8} {'CPU ms/tok':>10} {'ready':>7}"]
    for r in runs:
        lines.append(f"{r.engine:8} {r.clients:>7} {r.requests:>4} {r.throughput_tok_s:>8} {cell(r.ttft_p50_s):>8}s "
                     f"{cell(r.ttft_p99_s):>8}s {cell(r.itl_p50_ms):>6}ms {cell(r.itl_p99_ms):>6}ms "
                     f"{cell(r.cpu_ms_per_token):>10} {r.ready_after_s:>6}s")
    return "\n".join(lines)


def to_json(runs: list[EngineRun]) -> str:
    return json.dumps([asdict(r) for r in runs], indent=2)

