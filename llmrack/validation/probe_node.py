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
            report["allreduce"] = allreduce_probe(torch, kind, count, seconds)
        except Exception:
            report["errors"].append("all-reduce probe: " + traceback.format_exc(limit=3))
    else:
        report["skipped"]["allreduce"] = f"{count} accelerator device(s) visible to torch: nothing to all-reduce"
    report["probe_seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
