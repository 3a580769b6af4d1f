"""The replica all-reduce measurement with real torch.distributed (gloo over TCP): two processes as two ranks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "llmrack" / "validation" / "allreduce.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_ranks_sum_correctly_and_report_bus_bandwidth() -> None:
    master = f"127.0.0.1:{_free_port()}"
    # The source alone, through `python -c`: how it runs inside a serving image that has torch but not llmrack.
    code = SOURCE.read_text()
    procs = [subprocess.Popen([sys.executable, "-c", code, "--rank", str(r), "--world", "2", "--master", master,
                               "--sizes-mib", "1,4", "--iters", "2"], stdout=subprocess.PIPE, text=True)
             for r in (0, 1)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    result = json.loads(outs[0])
    assert outs[1] == "" and result["world"] == 2 and result["correct"] is True
    assert [row["bytes"] for row in result["sizes"]] == [1 << 20, 4 << 20]
    for row in result["sizes"]:
        # Ring all-reduce: each link carries 2(n-1)/n of the buffer; with n = 2 bus and algorithm bandwidth agree.
        assert row["busbw_gbps"] == row["algbw_gbps"] > 0
    assert result["busbw_gbps"] == result["sizes"][-1]["busbw_gbps"]
