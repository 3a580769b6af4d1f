"""Drive a server with N concurrent streaming clients; measure the two references on the same model in the same run.

1. the engine: `python -m serving` in its own process, N clients each sending `rounds` streaming requests back to
   back (so requests keep joining and leaving the running batch);
2. the baseline: `serving.bench.baseline` (per-request generate() behind FastAPI), same clients, non-streaming;
3. the ceiling: one offline `generate()` of all N prompts as a single static batch, no HTTP.

Every request has the same prompt length and generates exactly `max_tokens` tokens (ignore_eos), greedily.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from serving.readiness import wait_ready


@dataclass
class RequestTiming:
    start: float
    first: float
    end: float
    tokens: int
    gaps: list[float] = field(default_factory=list)


def _process_cpu_seconds(pid: int) -> float | None:
    """User+system CPU time of a process (all its threads), from /proc; None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid`, from /proc (each process's parent is field 4 of its stat line)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _self_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Result:
    name: str
    requests: int
    tokens: int
    seconds: float
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    chunks: int = 0
    cpu_seconds: float | None = None  # server (or offline generate) + benchmark client, CPU time

    @property
    def throughput(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name, "requests": self.requests, "generated_tokens": self.tokens,
            "seconds": round(self.seconds, 3), "throughput_tok_s": round(self.throughput, 1),
            "ttft_p50_s": _pct(self.ttft, 50), "ttft_p99_s": _pct(self.ttft, 99),
            "itl_p50_ms": _ms(_pct(self.itl, 50)), "itl_p99_ms": _ms(_pct(self.itl, 99)),
            "stream_chunks": self.chunks or None,
            # Load-independent efficiency: on a shared CPU, throughput follows the share the scheduler gives us,
            # CPU time per token does not.
            "cpu_ms_per_token": round(self.cpu_seconds / self.tokens * 1000, 3) if self.cpu_seconds else None,
        }


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 4)


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_prompts(model_dir: Path, clients: int, prompt_tokens: int, seed: int = 0) -> list[list[int]]:
    """Random ordinary (non-special) token ids: exact prompt lengths, independent of the tokenizer's merges."""
    config = json.loads((model_dir / "config.json").read_text())
    vocab = int(config["vocab_size"])
    rng = random.Random(seed)
    return [[rng.randrange(8, vocab) for _ in range(prompt_tokens)] for _ in range(clients)]


class _Process:
    def __init__(self, argv: list[str], port: int, env: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{port}"
        # A file, not a pipe: a server that logs more than a pipe buffer would block on a full pipe mid-benchmark.
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  # lives as long as the server; closed in stop()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log, text=True, env=env)

    def wait_ready(self, timeout: float = 180.0, path: str = "/ready") -> None:
        wait_ready(self.url, timeout, path=path, interval=0.2, exited=self._exit_reason)

    def _exit_reason(self) -> str | None:
        if self.proc.poll() is None:
            return None
        self.log.seek(0)
        return f"exit code {self.proc.returncode}: {self.log.read()[-2000:]}"

    def cpu_seconds(self) -> float | None:
        """The server's CPU time with its child processes' (vLLM computes in an engine process and one worker per
        rank); None where /proc is not there."""
        own = _process_cpu_seconds(self.proc.pid)
        if own is None:
            return None
        return own + sum(_process_cpu_seconds(pid) or 0.0 for pid in _descendants(self.proc.pid))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


async def _drive(url: str, prompts: list[list[int]], rounds: int, max_tokens: int, stream: bool) -> Result:
    import httpx

    timings: list[RequestTiming] = []
    chunks = [0]

    async def one(client: httpx.AsyncClient, prompt: list[int]) -> None:
        body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True,
                "temperature": 0, "stream": stream}
        start = time.perf_counter()
        if not stream:
            r = await client.post(f"{url}/v1/completions", json=body)
            r.raise_for_status()
            end = time.perf_counter()
            timings.append(RequestTiming(start, end, end, int(r.json()["usage"]["completion_tokens"])))
            return
        body["stream_options"] = {"include_usage": True}
        first = None
        last = start
        gaps: list[float] = []
        tokens = 0
        # The client shares the CPU with the server it measures, so it does as little as it can: split raw bytes
        # into SSE events (each stamped with the time its bytes arrived) and parse only the final usage event.
        buffer = b""
        async with client.stream("POST", f"{url}/v1/completions", json=body) as r:
            r.raise_for_status()
            async for data in r.aiter_raw():
                now = time.perf_counter()
                buffer += data
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    if not event.startswith(b"data: {"):
                        continue  # [DONE]
                    if b'"choices":[]' in event:
                        tokens = int(json.loads(event[6:])["usage"]["completion_tokens"])
                        continue
                    if first is None:
                        first = now
                    else:
                        gaps.append(now - last)
                    last = now
        timings.append(RequestTiming(start, first or last, last, tokens, gaps))
        chunks[0] += len(gaps) + 1

    async def client_loop(client: httpx.AsyncClient, i: int) -> None:
        for _ in range(rounds):
            await one(client, prompts[i % len(prompts)])

    limits = httpx.Limits(max_connections=len(prompts), max_keepalive_connections=len(prompts))
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client, i) for i in range(len(prompts))))
        seconds = time.perf_counter() - t0
    return Result(
        name="", requests=len(timings), tokens=sum(t.tokens for t in timings), seconds=seconds,
        ttft=[t.first - t.start for t in timings], itl=[g for t in timings for g in t.gaps],
        chunks=chunks[0] if stream else 0,
    )


def _measured(server: _Process, url: str, prompts: list[list[int]], rounds: int, max_tokens: int,
              stream: bool) -> Result:
    server_cpu, client_cpu = server.cpu_seconds(), _self_cpu_seconds()
    result = asyncio.run(_drive(url, prompts, rounds, max_tokens, stream))
    server_after = server.cpu_seconds()
    if server_cpu is not None and server_after is not None:
        result.cpu_seconds = server_after - server_cpu + _self_cpu_seconds() - client_cpu
    return result


def _warm(url: str, prompts: list[list[int]], stream: bool) -> None:
    asyncio.run(_drive(url, prompts[:2], 1, 4, stream))


def run_engine(model_dir: Path, prompts: list[list[int]], rounds: int, max_tokens: int,
               extra_flags: list[str], env: dict[str, str]) -> Result:
    port = _free_port()
    argv = [sys.executable, "-m", "serving", "--model", str(model_dir), "--served-model-name", "bench",
            "--host", "127.0.0.1", "--port", str(port), "--max-num-seqs", str(len(prompts)),
            "--max-model-len", str(len(prompts[0]) + max_tokens + 8), "--log-level", "warning", *extra_flags]
    server = _Process(argv, port, env)
    try:
        server.wait_ready()
        _warm(server.url, prompts, stream=True)
        result = _measured(server, server.url, prompts, rounds, max_tokens, stream=True)
    finally:
        server.stop()
    result.name = "engine (continuous batching, streaming)"
    return result


def run_baseline(model_dir: Path, prompts: list[list[int]], rounds: int, max_tokens: int,
                 env: dict[str, str], device: str = "cpu", dtype: str | None = None) -> Result:
    port = _free_port()
    argv = [sys.executable, "-m", "serving.bench.baseline", "--model", str(model_dir), "--port", str(port),
            "--device", device, *(["--dtype", dtype] if dtype else [])]
    server = _Process(argv, port, env)
    try:
        server.wait_ready()
        _warm(server.url, prompts, stream=False)
        result = _measured(server, server.url, prompts, rounds, max_tokens, stream=False)
    finally:
        server.stop()
    result.name = "baseline (generate() per request)"
    return result


def run_static(model_dir: Path, prompts: list[list[int]], max_tokens: int, threads: int | None = None,
               device: str = "cpu", dtype: str | None = None) -> Result:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModelForCausalLM

    from serving.model.devices import resolve, synchronize

    if threads:
        torch.set_num_threads(threads)
    torch_device, torch_dtype = resolve(device, dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch_dtype)
    model = model.to(torch_device).eval()
    ids = torch.tensor(prompts, device=torch_device)
    with torch.inference_mode():
        model.generate(ids[:2], attention_mask=torch.ones_like(ids[:2]), max_new_tokens=4, do_sample=False)
        t0, cpu0 = time.perf_counter(), _self_cpu_seconds()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                             min_new_tokens=max_tokens, do_sample=False)
        synchronize(torch_device)
        seconds, cpu = time.perf_counter() - t0, _self_cpu_seconds() - cpu0
    tokens = int((out.shape[1] - ids.shape[1]) * ids.shape[0])
    return Result(name="ceiling (static-batch generate(), offline)", requests=len(prompts), tokens=tokens,
                  seconds=seconds, cpu_seconds=cpu)


@dataclass
class BenchReport:
    model: str
    clients: int
    prompt_tokens: int
    max_tokens: int
    rounds: int
    engine: dict[str, Any]
    baseline: dict[str, Any]
    ceiling: dict[str, Any]
    vs_baseline: float
    vs_ceiling: float
    targets: dict[str, bool]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def run(model_dir: Path, clients: int = 32, prompt_tokens: int = 64, max_tokens: int = 64, rounds: int = 3,
        baseline_rounds: int = 1, threads: int | None = None, engine_flags: list[str] | None = None,
        device: str = "cpu", dtype: str | None = None) -> BenchReport:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    prompts = make_prompts(model_dir, clients, prompt_tokens)
    flags = ["--device", device, *(["--dtype", dtype] if dtype else [])]
    flags += ["--threads", str(threads)] if threads else []
    engine = run_engine(model_dir, prompts, rounds, max_tokens, flags + list(engine_flags or []), env)
    baseline = run_baseline(model_dir, prompts, baseline_rounds, max_tokens, env, device, dtype)
    ceiling = run_static(model_dir, prompts, max_tokens, threads, device, dtype)
    vs_baseline = engine.throughput / baseline.throughput
    vs_ceiling = engine.throughput / ceiling.throughput
    ttft_p99 = _pct(engine.ttft, 99) or 0.0
    return BenchReport(
        model=str(model_dir), clients=clients, prompt_tokens=prompt_tokens, max_tokens=max_tokens, rounds=rounds,
        engine=engine.summary(), baseline=baseline.summary(), ceiling=ceiling.summary(),
        vs_baseline=round(vs_baseline, 2), vs_ceiling=round(vs_ceiling, 3),
        targets={"throughput >= 8x baseline": vs_baseline >= 8, "throughput >= 50% of ceiling": vs_ceiling >= 0.5,
                 "TTFT p99 < 1 s": ttft_p99 < 1.0},
    )


def render(report: BenchReport) -> str:
    rows = [report.engine, report.baseline, report.ceiling]

    def cell(v: Any) -> str:
        return "-" if v is None else str(v)

    lines = [
        f"model {report.model}: {report.clients} clients, {report.prompt_tokens}-token prompts, "
        f"{report.max_tokens} generated tokens (ignore_eos, greedy), engine {report.rounds} request(s) per client",
        f"{'':44} {'req':>4} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL p50':>8} {'ITL p99':>8} "
        f"{'CPU ms/tok':>10}",
    ]
    for r in rows:
        lines.append(
            f"{r['name']:44} {r['requests']:>4} {r['throughput_tok_s']:>8} {cell(r['ttft_p50_s']):>8}s "
            f"{cell(r['ttft_p99_s']):>8}s {cell(r['itl_p50_ms']):>6}ms {cell(r['itl_p99_ms']):>6}ms "
            f"{cell(r['cpu_ms_per_token']):>10}"
        )
    engine = report.engine
    if engine.get("stream_chunks"):
        lines.append(f"engine stream: {engine['stream_chunks']} chunks for {engine['generated_tokens']} tokens "
                     "(fewer chunks than tokens means outputs were coalesced when a client fell behind)")
    lines.append(f"engine / baseline throughput: {report.vs_baseline}x   engine / ceiling: "
                 f"{report.vs_ceiling * 100:.0f}%")
    lines.append("targets: " + ", ".join(f"{k}: {'met' if ok else 'MISSED'}" for k, ok in report.targets.items()))
    return "\n".join(lines)
