"""Batch next to online traffic: online p99 TTFT without and with a batch job running, and the job's tokens/s
against the idle capacity of the same upstream.

    .venv/bin/python benchmarks/batch_priority.py --upstream URL --batch URL [--model NAME] [--seconds 30]
    .venv/bin/python benchmarks/batch_priority.py --local   # starts a tiny llmrack server and the batch service
    .venv/bin/python benchmarks/batch_priority.py --lab-dir DIR   # a running lab: everything through its gateway
    .venv/bin/python benchmarks/batch_priority.py --lab-dir DIR --batch URL   # the lab, another batch service

Phases, one after the other, on the same upstream:
  1. capacity  a closed loop of --capacity-clients direct requests (no batch service): the idle rack's tokens/s
  2. online    --online-clients closed-loop streaming users (one request each at a time, --think seconds apart)
               for --seconds: TTFT p50/p99 without batch
  3. both      the same online load while a batch job (enough lines to outlast it) runs through the batch service:
               TTFT p50/p99 with batch, and the job's tokens/s while online users share the upstream
  4. batch     a batch job alone: its tokens/s against the idle capacity (goal: >= 70 %)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from llmrack.batch.protocol import BATCH_PRIORITY

PROMPT = "Summarise the state of the rack for the operator on call tonight"
# What every client of the run sends and trusts (--lab-dir: the lab's key and rack CA).
HTTP: dict[str, Any] = {}


def _chat(model: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True, **extra}


async def capacity(upstream: str, model: str, clients: int, seconds: float, max_tokens: int) -> float:
    """Generated tokens/s of a saturating closed loop straight at the upstream."""
    tokens = 0
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=upstream, timeout=300, **HTTP) as http:
        async def user() -> None:
            nonlocal tokens
            while time.monotonic() < deadline:
                resp = await http.post("/v1/chat/completions", json=_chat(model, max_tokens))
                if resp.status_code == 200:
                    tokens += resp.json()["usage"]["completion_tokens"]
        start = time.monotonic()
        await asyncio.gather(*(user() for _ in range(clients)))
        return tokens / (time.monotonic() - start)


async def online(upstream: str, model: str, clients: int, seconds: float, think: float, max_tokens: int) -> list[float]:
    """TTFT (s) of every streamed request of `clients` users, each sending one at a time."""
    ttfts: list[float] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=upstream, timeout=300, **HTTP) as http:
        async def user(i: int) -> None:
            await asyncio.sleep(think * i / clients)  # spread the users' starts
            while time.monotonic() < deadline:
                start = time.monotonic()
                first = None
                async with http.stream("POST", "/v1/chat/completions",
                                       json=_chat(model, max_tokens, stream=True)) as resp:
                    async for line in resp.aiter_lines():
                        if first is None and line.startswith("data: {") and '"content":"' in line \
                                and '"content":""' not in line:
                            first = time.monotonic() - start
                if first is not None:
                    ttfts.append(first)
                await asyncio.sleep(think)
        await asyncio.gather(*(user(i) for i in range(clients)))
    return ttfts


def _requests_file(path: Path, model: str, lines: int, max_tokens: int) -> Path:
    path.write_text("".join(json.dumps({"custom_id": f"b-{i}", "method": "POST", "url": "/v1/chat/completions",
                                        "body": _chat(model, max_tokens)}) + "\n" for i in range(lines)))
    return path


def start_job(batch: str, path: Path) -> str:
    with httpx.Client(base_url=batch, timeout=60, **HTTP) as http:
        file_id = http.post("/v1/files", data={"purpose": "batch"},
                            files={"file": (path.name, path.read_bytes())}).json()["id"]
        created = http.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                                 "completion_window": "24h"})
        created.raise_for_status()
        return str(created.json()["id"])


def job(batch: str, batch_id: str) -> dict[str, Any]:
    got: dict[str, Any] = httpx.get(f"{batch}/v1/batches/{batch_id}", timeout=60, **HTTP).json()
    return got


def cancel(batch: str, batch_id: str) -> dict[str, Any]:
    got: dict[str, Any] = httpx.post(f"{batch}/v1/batches/{batch_id}/cancel", timeout=60, **HTTP).json()
    return got


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else float("nan")


async def measure(a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["capacity_tokens_per_s"] = await capacity(a.upstream, a.model, a.capacity_clients, a.seconds, a.max_tokens)
    tmp = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    # Outlasts the online phase (and is at least --lines long).
    lines = max(a.lines, int(out["capacity_tokens_per_s"] * a.seconds * 3 / a.max_tokens) + 50)
    out["job_lines"] = lines
    # Rounds alternate without and with batch, so load from anything else on the machine hits both alike.
    alone: list[float] = []
    shared: list[float] = []
    shared_tokens, shared_seconds = 0, 0.0
    for r in range(a.rounds):
        alone += await online(a.upstream, a.model, a.online_clients, a.seconds, a.think, a.max_tokens)
        batch_id = start_job(a.batch, _requests_file(tmp / f"long-{r}.jsonl", a.model, lines, a.max_tokens))
        await asyncio.sleep(2.0)  # let the pace find its level
        before, t0 = job(a.batch, batch_id), time.monotonic()
        shared += await online(a.upstream, a.model, a.online_clients, a.seconds, a.think, a.max_tokens)
        after, t1 = job(a.batch, batch_id), time.monotonic()
        cancel(a.batch, batch_id)
        shared_tokens += after["usage"]["output_tokens"] - before["usage"]["output_tokens"]
        shared_seconds += t1 - t0
    out["online_alone"] = {"requests": len(alone), "ttft_p50_s": pct(alone, 50), "ttft_p99_s": pct(alone, 99)}
    out["online_with_batch"] = {"requests": len(shared), "ttft_p50_s": pct(shared, 50), "ttft_p99_s": pct(shared, 99),
                                "batch_tokens_per_s": shared_tokens / shared_seconds}

    batch_id = start_job(a.batch, _requests_file(tmp / "alone.jsonl", a.model, lines, a.max_tokens))
    await asyncio.sleep(2.0)
    before, t0 = job(a.batch, batch_id), time.monotonic()
    await asyncio.sleep(a.seconds)
    after, t1 = job(a.batch, batch_id), time.monotonic()
    cancel(a.batch, batch_id)
    out["batch_alone_tokens_per_s"] = (after["usage"]["output_tokens"] - before["usage"]["output_tokens"]) / (t1 - t0)
    out["ttft_p99_ratio"] = out["online_with_batch"]["ttft_p99_s"] / out["online_alone"]["ttft_p99_s"]
    out["batch_share_of_idle_capacity"] = out["batch_alone_tokens_per_s"] / out["capacity_tokens_per_s"]
    return out


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def local(a: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    """A tiny llmrack server and the batch service on loopback ports, as `llmrack` commands."""
    from serving.model.tiny import make_tiny  # noqa: PLC0415 (torch loads only for --local)

    tmp = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    model = make_tiny("qwen2", tmp / "tiny-qwen2", seed=0)
    llmrack = [sys.executable, "-m", "llmrack"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([*llmrack, "serve", "--model", str(model), "--port", "18300", "--max-num-seqs",
                               str(a.max_num_seqs), "--threads", str(a.threads), "--log-level", "warning"], env=env)
    _wait("http://127.0.0.1:18300/ready", server)
    batch = subprocess.Popen([*llmrack, "batch", "serve", "--upstream", "http://127.0.0.1:18300", "--port", "18301",
                              "--state", str(tmp / "state"), "--prometheus", "http://127.0.0.1:18300/metrics",
                              "--max-inflight", str(a.max_num_seqs), "--priority", str(a.batch_priority),
                              "--log-level", "warning"], env=env)
    _wait("http://127.0.0.1:18301/health", batch)
    a.upstream, a.batch, a.model = "http://127.0.0.1:18300", "http://127.0.0.1:18301", "tiny-qwen2"
    return [batch, server]


def lab(a: argparse.Namespace) -> None:
    """A running lab (`llmrack lab up --lab-dir DIR`): online users, the direct clients and the batch job all go
    through its gateway (TLS, the lab's key), so the batch service and both nodes are the rack's own."""
    from llmrack.lab import lab as labs  # noqa: PLC0415
    from llmrack.lab import serving_artifacts  # noqa: PLC0415

    state = labs.require(Path(a.lab_dir))
    if not state.gateway_url:
        raise SystemExit(f"the lab in {a.lab_dir} has no gateway")
    a.upstream = state.gateway_url
    # --batch: a batch service of the caller's (e.g. started with other flags, sending to this lab's gateway).
    a.batch = a.batch or state.gateway_url
    a.model = serving_artifacts.SERVED_NAME
    HTTP.update(headers={"Authorization": f"Bearer {serving_artifacts.api_key(state.lab_dir)}"},
                verify=ssl.create_default_context(cafile=str(state.rack_ca)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", help="the rack's OpenAI API (gateway or node)")
    parser.add_argument("--batch", help="the batch service (with --lab-dir: instead of the lab's own)")
    parser.add_argument("--model", help="served model name")
    parser.add_argument("--local", action="store_true", help="start a tiny llmrack server and a batch service")
    parser.add_argument("--lab-dir", help="a running lab: its gateway is the upstream and the batch service")
    parser.add_argument("--lines", type=int, default=0, help="the batch job's lines, at least (default: enough)")
    parser.add_argument("--max-num-seqs", type=int, default=16, help="--local: the server's batch size")
    parser.add_argument("--threads", type=int, default=1, help="--local: the server's torch threads")
    parser.add_argument("--batch-priority", type=int, default=BATCH_PRIORITY,
                        help="--local: the priority the batch service sends (0: none, to compare)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--online-clients", type=int, default=4)
    parser.add_argument("--capacity-clients", type=int, default=16)
    parser.add_argument("--think", type=float, default=0.5, help="seconds between one user's requests")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of online alone / online with batch")
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    procs = local(a) if a.local else []
    if a.lab_dir:
        lab(a)
    if not (a.upstream and a.batch and a.model):
        parser.error("give --upstream, --batch and --model, or --local")
    try:
        report = asyncio.run(measure(a))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    if a.json:
        print(json.dumps(report, indent=2))
        return
    alone, shared = report["online_alone"], report["online_with_batch"]
    print(f"batch job                {report['job_lines']:8d} lines of {a.max_tokens} tokens")
    print(f"idle capacity            {report['capacity_tokens_per_s']:8.1f} tokens/s "
          f"({a.capacity_clients} direct clients)")
    print(f"online alone             TTFT p50 {alone['ttft_p50_s'] * 1000:7.1f} ms  p99 "
          f"{alone['ttft_p99_s'] * 1000:7.1f} ms  ({alone['requests']} requests)")
    print(f"online with a batch job  TTFT p50 {shared['ttft_p50_s'] * 1000:7.1f} ms  p99 "
          f"{shared['ttft_p99_s'] * 1000:7.1f} ms  ({shared['requests']} requests; batch meanwhile "
          f"{shared['batch_tokens_per_s']:.1f} tokens/s)")
    print(f"p99 TTFT ratio           {report['ttft_p99_ratio']:8.2f} x   (goal <= 1.2)")
    print(f"batch alone              {report['batch_alone_tokens_per_s']:8.1f} tokens/s = "
          f"{100 * report['batch_share_of_idle_capacity']:.0f} % of idle capacity (goal >= 70 %)")


if __name__ == "__main__":
    main()
