"""A replica's cross-node collective, measured: torch.distributed all-reduce across the replica's nodes.

Run on every node of a replica at once, one process per node (rank 0 on the leader), in any image that has torch
(the serving image: this file needs only torch and the standard library, so its source is handed to the image's
Python with `python3 -c`). Backend gloo over TCP on the data network (GLOO_SOCKET_IFNAME = the inventory's
llmrack_node_interface), as the lab's CPU replicas use it; on NVIDIA racks nccl-tests' all_reduce_perf is the
instrument for NVLink/InfiniBand and this measures only the TCP path.

Figures as nccl-tests reports them: algorithm bandwidth = bytes / time, bus bandwidth = algbw x 2(n-1)/n (what
each link carries in a ring all-reduce, comparable across world sizes). Rank 0 prints one JSON object:

    {"world": 2, "backend": "gloo", "sizes": [{"bytes": N, "seconds": s, "algbw_gbps": x, "busbw_gbps": y}, ...],
     "busbw_gbps": <at the largest size>, "correct": true}

`correct`: every rank contributed rank + 1, so each element must equal n(n+1)/2; a wrong sum is a failed check
whatever the speed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import timedelta
from typing import Any

SIZES_MIB = (1, 16, 64)


def measure(rank: int, world: int, master: str, sizes_mib: tuple[int, ...] = SIZES_MIB, iters: int = 5,
            timeout_s: int = 120) -> dict[str, Any]:
    import torch  # noqa: PLC0415  (only the nodes that measure need torch; --help and the tests of the CLI do not)
    import torch.distributed as dist  # noqa: PLC0415

    host, port = master.rsplit(":", 1)
    dist.init_process_group("gloo", init_method=f"tcp://{host}:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    try:
        rows = []
        correct = True
        for mib in sizes_mib:
            n = mib * (1 << 20) // 4
            buf = torch.full((n,), float(rank + 1), dtype=torch.float32)
            dist.all_reduce(buf)  # warm-up, and the correctness check
            correct = correct and bool(torch.all(buf == world * (world + 1) / 2))
            dist.barrier()
            start = time.perf_counter()
            for _ in range(iters):
                dist.all_reduce(buf)
            seconds = (time.perf_counter() - start) / iters
            nbytes = n * 4
            algbw = nbytes / seconds / 1e9
            rows.append({"bytes": nbytes, "seconds": round(seconds, 6), "algbw_gbps": round(algbw, 4),
                         "busbw_gbps": round(algbw * 2 * (world - 1) / world, 4)})
        return {"world": world, "backend": "gloo", "sizes": rows, "busbw_gbps": rows[-1]["busbw_gbps"],
                "correct": correct}
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmrack.validation.allreduce")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--master", required=True, help="ADDRESS:PORT of rank 0")
    parser.add_argument("--interface", help="the data network's interface (GLOO_SOCKET_IFNAME)")
    parser.add_argument("--sizes-mib", default=",".join(map(str, SIZES_MIB)))
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args(argv)
    if args.interface:
        os.environ["GLOO_SOCKET_IFNAME"] = args.interface
    result = measure(args.rank, args.world, args.master, tuple(int(s) for s in args.sizes_mib.split(",")), args.iters)
    if args.rank == 0:
        print(json.dumps(result))
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
