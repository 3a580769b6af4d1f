"""Time the lab: first `llmrack lab up --nodes 2`, a no-op re-run of site.yml on 2 nodes, and on 4 nodes; with the
controller's CPU per node of each no-op run (user + system time of `llmrack lab provision` and everything it
started: ansible-playbook, its workers, ssh), which is what decides a large rack's converge time.

    .venv/bin/python benchmarks/lab_timings.py            # node image and serving image cached if present
    .venv/bin/python benchmarks/lab_timings.py --cold     # from nothing: removes both caches first

Runs the real CLI in its own lab directory (.lab-bench) and prints the figures (docs/lab.md records them).
Each no-op figure is the median of --repeat runs (default 3); the ratio is of the medians.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LLMRACK = Path(sys.executable).parent / "llmrack"


def run(*args: str) -> tuple[float, str]:
    start = time.monotonic()
    proc = subprocess.run([str(LLMRACK), *args], cwd=ROOT, capture_output=True, text=True, check=False)
    secs = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"llmrack {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return secs, proc.stderr


def recap(stderr: str) -> dict[str, int]:
    out = {}
    for line in stderr.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].startswith("node") and parts[0].endswith(":"):
            fields = dict(p.split("=") for p in parts[1:] if "=" in p)
            out[parts[0][:-1]] = int(fields.get("changed", -1))
    return out


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def noop(lab: str, repeat: int) -> tuple[float, list[float], dict[str, int], float]:
    """`repeat` no-op site.yml runs: (median seconds, every run's seconds, the last run's changed counts, the
    median controller CPU-seconds per node)."""
    runs, cpu, changed = [], [], {}
    for _ in range(repeat):
        before = children_cpu()
        secs, err = run("lab", "provision", "--lab-dir", lab)
        runs.append(round(secs, 1))
        changed = recap(err)
        cpu.append((children_cpu() - before) / max(len(changed), 1))
    return statistics.median(runs), runs, changed, round(statistics.median(cpu), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cold", action="store_true", help="remove the cached node image and serving image first")
    ap.add_argument("--lab-dir", type=Path, default=ROOT / ".lab-bench")
    ap.add_argument("--no-grow", action="store_true", help="measure 2 nodes only (skip growing to 4)")
    ap.add_argument("--repeat", type=int, default=3, help="no-op runs per size; the median is reported")
    ap.add_argument("--keep", action="store_true", help="leave the lab running (its logs/ hold profile_tasks tables)")
    args = ap.parse_args()
    lab = str(args.lab_dir)
    if (args.lab_dir / "state.json").exists():
        run("lab", "down", "--lab-dir", lab)
    if args.cold:
        from llmrack.lab import image, serving_artifacts  # noqa: PLC0415

        subprocess.run(["podman", "image", "rm", "-f", image.IMAGE], capture_output=True, check=False,
                       env={**os.environ, "CONTAINERS_CONF": str(ROOT / ".lab" / "containers.conf")})
        shutil.rmtree(serving_artifacts.cache_dir(args.lab_dir), ignore_errors=True)
    figures: dict[str, object] = {"cold": args.cold}
    figures["first_up_2_nodes_s"], _ = run("lab", "up", "--nodes", "2", "--lab-dir", lab)
    (figures["noop_site_2_nodes_s"], figures["noop_runs_2_nodes_s"], figures["noop_changed_2_nodes"],
     figures["noop_controller_cpu_s_per_node_2"]) = noop(lab, args.repeat)
    if not args.no_grow:
        figures["grow_to_4_nodes_s"], _ = run("lab", "up", "--nodes", "4", "--lab-dir", lab)
        (figures["noop_site_4_nodes_s"], figures["noop_runs_4_nodes_s"], figures["noop_changed_4_nodes"],
         figures["noop_controller_cpu_s_per_node_4"]) = noop(lab, args.repeat)
        ratio = float(figures["noop_site_4_nodes_s"]) / float(figures["noop_site_2_nodes_s"])  # type: ignore[arg-type]
        figures["ratio_4_to_2"] = round(ratio, 2)
    if not args.keep:
        figures["down_s"], _ = run("lab", "down", "--lab-dir", lab)
    for key, value in figures.items():
        print(f"{key:<24} {round(value, 1) if isinstance(value, float) else value}")


if __name__ == "__main__":
    main()
