"""Performance probe, run ON the node with the node's own Python and torch (standard library + torch only).

It is shipped to the node by the evidence collector and prints one JSON object on stdout. It measures; it
judges nothing (thresholds live with the checks on the control machine). A figure it could not measure is
absent, with the reason under "errors" or "skipped", so nothing downstream can pass on a number never taken.

    python probe_node.py --level standard|full
"""

# ruff: noqa: PLC0415  (torch, torch_npu and torch.distributed are imported only where the node has them)
# mypy: ignore-errors
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from typing import Any

# Seconds of timed work per measurement: short probes (standard) vs burn-in (full).
SECONDS = {"standard": 1.0, "full": 30.0}
# Small-copy latency: copies per timed batch, batches (the median is reported), and the GPU cycles the stream is
# held for so every copy of a batch is queued before the first runs (CUDA's p2pBandwidthLatencyTest holds its
# stream with a spin kernel for the same reason: the timing then shows the copies, not the CPU queueing them).
LATENCY_COPIES = 100
LATENCY_BATCHES = 5
HOLD_CYCLES = 20_000_000


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def copy_latency_us(torch: Any, kind: str, index: int, copy: Any) -> tuple[float, str]:
    """Per-copy time of `copy()` on device `index`: LATENCY_COPIES queued copies between two device events,
    median of LATENCY_BATCHES batches. Returns (microseconds, how the stream was held)."""
    mod = getattr(torch, kind)
    hold = getattr(mod, "_sleep", None)  # torch.cuda._sleep(cycles): a spin kernel; torch_npu has none
    copy()
    mod.synchronize(index)
    times = []
    for _ in range(LATENCY_BATCHES):
        start, end = mod.Event(enable_timing=True), mod.Event(enable_timing=True)
        if hold is not None:
            hold(HOLD_CYCLES)
        start.record()
        for _ in range(LATENCY_COPIES):
            copy()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000.0 / LATENCY_COPIES)  # elapsed_time is in ms
    how = "stream held by a spin kernel" if hold is not None else "stream not held: includes queueing"
    return round(_median(times), 3), how


def latency_probes(torch: Any, kind: str, index: int) -> dict[str, Any]:
    """Host-to-device latency of a pinned 1-element tensor: per copy with device events, and the CPU-side round
    trip (one copy, then wait for it) as a caller sees it."""
    mod = getattr(torch, kind)
    dev = torch.device(kind, index)
    host = torch.ones(1, dtype=torch.float32).pin_memory()
    devbuf = torch.empty(1, dtype=torch.float32, device=dev)
    per_copy, how = copy_latency_us(torch, kind, index, lambda: devbuf.copy_(host, non_blocking=True))
    trips = []
    for _ in range(LATENCY_COPIES):
        started = time.perf_counter()
        devbuf.copy_(host, non_blocking=True)
        mod.synchronize(index)
        trips.append((time.perf_counter() - started) * 1e6)
    return {"h2d_latency_us": per_copy, "h2d_roundtrip_us": round(_median(trips), 2),
            "latency_copies": LATENCY_COPIES, "latency_method": how}


def p2p_probes(torch: Any, kind: str, count: int) -> list[dict[str, Any]]:
    """Device-to-device small-copy latency for every ordered pair i < j (copies issued on the source device)."""
    mod = getattr(torch, kind)
    out: list[dict[str, Any]] = []
    for src in range(count):
        for dst in range(src + 1, count):
            entry: dict[str, Any] = {"src": src, "dst": dst}
            can = getattr(mod, "can_device_access_peer", None)
            if can is not None:
                entry["peer_access"] = bool(can(src, dst))
            try:
                a = torch.ones(1, dtype=torch.float32, device=torch.device(kind, src))
                b = torch.empty(1, dtype=torch.float32, device=torch.device(kind, dst))
                with mod.device(src):
                    entry["latency_us"], entry["method"] = copy_latency_us(
                        torch, kind, src, lambda a=a, b=b: b.copy_(a, non_blocking=True))
            except Exception as exc:  # one pair that fails is reported, the others still run
                entry["error"] = repr(exc)
            out.append(entry)
    return out


def _timed(fn: Any, sync: Any, seconds: float, warmup: int = 2) -> tuple[int, float]:
    """Run fn repeatedly for about `seconds`; return (iterations, elapsed)."""
    for _ in range(warmup):
        fn()
    sync()
    iters, start = 0, time.perf_counter()
    while True:
        fn()
        iters += 1
        if iters % 4 == 0:
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return iters, elapsed


def cpu_probes(torch: Any, seconds: float) -> dict[str, Any]:
    n = 2048
    a = torch.randn(n, n, dtype=torch.float32)
    b = torch.randn(n, n, dtype=torch.float32)
    iters, elapsed = _timed(lambda: torch.mm(a, b), lambda: None, seconds)
    gemm_gflops = 2 * n**3 * iters / elapsed / 1e9
    # 256 MiB copies: far beyond any cache, so this is DRAM read + write.
    src = torch.empty(64 * 1024 * 1024, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    iters, elapsed = _timed(lambda: dst.copy_(src), lambda: None, seconds)
    membw = 2 * src.numel() * 4 * iters / elapsed / 1e9
    return {
        "gemm_fp32_gflops": round(gemm_gflops, 2),
        "gemm_size": n,
        "membw_gbps": round(membw, 2),
        "threads": torch.get_num_threads(),
    }


def device_probes(torch: Any, kind: str, index: int, seconds: float) -> dict[str, Any]:
    mod = getattr(torch, kind)
    dev = torch.device(kind, index)
    mod.set_device(index)

    def sync() -> None:
        mod.synchronize(dev)

    # Each measurement in its own function, so its buffers are freed before the next one allocates.
    def matmul() -> float:
        n = 8192
        a = torch.randn(n, n, dtype=torch.bfloat16, device=dev)
        b = torch.randn(n, n, dtype=torch.bfloat16, device=dev)
        iters, elapsed = _timed(lambda: torch.mm(a, b), sync, seconds)
        return round(2 * n**3 * iters / elapsed / 1e12, 2)

    def membw() -> float:
        # Device memory bandwidth: a 1 GiB device-to-device copy reads and writes every byte once.
        src = torch.empty(256 * 1024 * 1024, dtype=torch.float32, device=dev).fill_(1.0)
        dst = torch.empty_like(src)
        iters, elapsed = _timed(lambda: dst.copy_(src), sync, seconds)
        return round(2 * src.numel() * 4 * iters / elapsed / 1e9, 1)

    def h2d() -> float:
        # Host to device over the PCIe link, from pinned memory (what a loader or KV offload gets at best).
        host = torch.empty(64 * 1024 * 1024, dtype=torch.float32).pin_memory()
        devbuf = torch.empty(host.numel(), dtype=torch.float32, device=dev)
        iters, elapsed = _timed(lambda: devbuf.copy_(host, non_blocking=True), sync, seconds)
        return round(host.numel() * 4 * iters / elapsed / 1e9, 2)

    result: dict[str, Any] = {"index": index, "name": mod.get_device_name(index)}
    result["matmul_bf16_tflops"] = matmul()
    mod.empty_cache()
    result["membw_gbps"] = membw()
    mod.empty_cache()
    result["h2d_gbps"] = h2d()
    mod.empty_cache()
    try:
        result.update(latency_probes(torch, kind, index))
    except Exception as exc:  # the throughput figures above still stand
        result["latency_error"] = f"latency probe: {exc!r}"
    return result


# The collective library per device kind; "cpu" (gloo) runs the same code path where no accelerator is.
BACKENDS = {"cuda": "nccl", "npu": "hccl", "cpu": "gloo"}


def _allreduce_worker(rank: int, world: int, kind: str, seconds: float, port: int, out: str,
                      nbytes: int = 256 * 1024 * 1024) -> None:
    import torch
    import torch.distributed as dist

    if kind == "npu":
        import torch_npu  # noqa: F401  (registers the npu device and the hccl backend)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if kind == "cpu":
        device = torch.device("cpu")

        def sync() -> None:
            pass
    else:
        getattr(torch, kind).set_device(rank)
        device = torch.device(kind, rank)

        def sync() -> None:
            getattr(torch, kind).synchronize()

    dist.init_process_group(BACKENDS[kind], rank=rank, world_size=world)
    buf = torch.ones(nbytes // 4, dtype=torch.float32, device=device)

    iters, elapsed = _timed(lambda: dist.all_reduce(buf), sync, seconds, warmup=5)
    if rank == 0:
        algbw = nbytes * iters / elapsed / 1e9
        with open(out, "w") as fh:
            json.dump({"n": world, "bytes": nbytes, "algbw_gbps": round(algbw, 2),
                       "busbw_gbps": round(algbw * 2 * (world - 1) / world, 2)}, fh)
    dist.destroy_process_group()


def allreduce_probe(torch: Any, kind: str, world: int, seconds: float,
                    nbytes: int = 256 * 1024 * 1024) -> dict[str, Any]:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "allreduce.json")
        mp.spawn(_allreduce_worker, args=(world, kind, seconds, port, out, nbytes), nprocs=world, join=True)
        with open(out) as fh:
            result: dict[str, Any] = json.load(fh)
            return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--level", choices=sorted(SECONDS), default="standard")
    args = parser.parse_args()
    seconds = SECONDS[args.level]
    report: dict[str, Any] = {
        "level": args.level, "seconds_per_probe": seconds, "python": platform.python_version(),
        "torch": None, "device_kind": "cpu", "devices": [], "errors": [], "skipped": {},
    }
    try:
        import torch
    except ImportError as exc:
        report["errors"].append(f"torch is not importable by {sys.executable}: {exc}")
        print(json.dumps(report))
        return 0
    report["torch"] = torch.__version__
    kind, count = "cpu", 0
    if torch.cuda.is_available():
        kind, count = "cuda", torch.cuda.device_count()
    else:
        try:
            import torch_npu  # noqa: F401

            if torch.npu.is_available():
                kind, count = "npu", torch.npu.device_count()
        except ImportError:
            report["skipped"]["npu"] = "torch_npu is not installed"
    report["device_kind"] = kind
    started = time.perf_counter()
    try:
        report["cpu"] = cpu_probes(torch, seconds)
    except Exception as exc:  # a probe that breaks is reported, the others still run
        report["errors"].append(f"cpu probe: {exc!r}")
    for index in range(count):
        try:
            report["devices"].append(device_probes(torch, kind, index, seconds))
        except Exception as exc:
            report["errors"].append(f"{kind}:{index} probe: {exc!r}")
            report["devices"].append({"index": index, "error": repr(exc)})
    if count >= 2:
        try:
            report["p2p"] = p2p_probes(torch, kind, count)
        except Exception as exc:
            report["errors"].append(f"p2p probe: {exc!r}")
        try:
            report["allreduce"] = allreduce_probe(torch, kind, count, seconds)
        except Exception:
            report["errors"].append("all-reduce probe: " + traceback.format_exc(limit=3))
    else:
        report["skipped"]["allreduce"] = f"{count} accelerator device(s) visible to torch: nothing to all-reduce"
        report["skipped"]["p2p"] = f"{count} accelerator device(s) visible to torch: no pair to copy between"
    report["probe_seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
