"""Where `llmrack lab down` spends its time for two provisioned nodes, the old way and this version's.

    flock /tmp/llmrack-lab.lock .venv/bin/python benchmarks/lab_down.py

1. `llmrack lab up --nodes 2` in its own lab directory (.lab-down-bench; caches reused), then the size of each
   node's writable layer and of containerd's state inside node1.
2. The sequence `lab down` ran before (one `podman rm -f -t 5` per node, then the network, then the lab
   directory), each step timed.
3. `llmrack lab up --nodes 2` again, then this version's `llmrack lab down`, timed as a whole.
Prints the figures (docs/lab.md records them).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmrack.lab.podman import Podman  # noqa: E402
from llmrack.lab.state import load  # noqa: E402

LLMRACK = Path(sys.executable).parent / "llmrack"


def llmrack(*args: str) -> float:
    start = time.monotonic()
    proc = subprocess.run([str(LLMRACK), *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"llmrack {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.monotonic() - start


def timed(label: str, fn: object, *args: str) -> float:
    start = time.monotonic()
    fn(*args)  # type: ignore[operator]
    secs = time.monotonic() - start
    print(f"  {label}: {secs:.1f} s", flush=True)
    return secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lab-dir", type=Path, default=ROOT / ".lab-down-bench")
    lab_dir = ap.parse_args().lab_dir.resolve()

    print(f"lab up --nodes 2: {llmrack('lab', 'up', '--nodes', '2', '--lab-dir', str(lab_dir)):.0f} s", flush=True)
    state = load(lab_dir)
    assert state is not None
    podman = Podman(lab_dir)
    sizes = podman.run("ps", "-a", "--size", "--filter", f"label=llmrack.lab={state.prefix}",
                       "--format", "{{.Names}} {{.Size}}")
    print("writable layers:\n  " + "\n  ".join(sizes.strip().splitlines()))
    usage = podman.run("exec", state.nodes[0].container, "du", "-sh", "/var/lib/containerd", check=False)
    print(f"containerd state in {state.nodes[0].name}: {usage.strip()}")

    print("before (one `podman rm -f -t 5` per node):", flush=True)
    total = 0.0
    for node in state.nodes:
        total += timed(f"podman rm -f -t 5 {node.name}", podman.run, "rm", "-f", "-t", "5", node.container)
    rest = podman.run("ps", "-a", "-q", "--filter", f"label=llmrack.lab={state.prefix}").split()
    if rest:
        total += timed(f"podman rm -f -t 5 ({len(rest)} more: registry)", podman.run, "rm", "-f", "-t", "5", *rest)
    total += timed("podman network rm", podman.run, "network", "rm", state.network)
    total += timed("rm -rf lab dir", shutil.rmtree, str(lab_dir))
    print(f"  total: {total:.1f} s", flush=True)

    print(f"lab up --nodes 2 (again): {llmrack('lab', 'up', '--nodes', '2', '--lab-dir', str(lab_dir)):.0f} s",
          flush=True)
    print(f"after: llmrack lab down: {llmrack('lab', 'down', '--lab-dir', str(lab_dir)):.1f} s", flush=True)


if __name__ == "__main__":
    main()
