"""Time a one-node release on a running lab: drain, image in, restart, ready, back in the gateway.

    .venv/bin/llmrack lab up --nodes 2 --lab-dir .lab-bench                 # any running lab (either engine)
    .venv/bin/python benchmarks/lab_release.py --lab-dir .lab-bench [--node node1]

Three releases of the lab's image, each rolled onto one node with `serving.yml -l NODE`, then the node is put back
on the inventory's release: through the lab's registry with the same layers (a new manifest digest: what a
config-only rebuild gives), through the registry with a new 200 MiB layer (what a rebuilt image brings), and as an
OCI archive from the mirror (a site without a registry). Prints each run's seconds and its slowest tasks (the lab's
ansible.cfg enables profile_tasks).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from llmrack.lab import lab, releases

STEPS = re.compile(r"Pull the image|Import the archive|Fetch the image|Wait until the|Restart the service|"
                   r"Check the room|Drain")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lab-dir", type=Path, default=Path(".lab-bench"))
    ap.add_argument("--node", default="node1")
    ap.add_argument("--new-layer-mib", type=int, default=200)
    args = ap.parse_args()
    state = lab.require(args.lab_dir)
    for via, extra_mib in (("registry", 0), ("registry", args.new_layer_mib), ("archive", 0)):
        start = time.monotonic()
        rel = releases.make_release(state, f"bench-{via}-{extra_mib}-{int(time.time())}", via=via,
                                    extra_bytes=extra_mib << 20)
        published = time.monotonic() - start
        start = time.monotonic()
        run = lab.provision(args.lab_dir, "serving.yml", ["-l", args.node, *rel.extra_vars])
        secs = time.monotonic() - start
        changed = run.recap.get(args.node, {}).get("changed")
        print(f"release via {via}, new layer {extra_mib} MiB: {secs:.1f} s (rc {run.rc}, changed {changed}; "
              f"made and published in {published:.1f} s)")
        for line in (run.log.read_text().splitlines() if run.log else []):
            if "---" in line and STEPS.search(line):
                print("    " + " ".join(line.split()))
    back = lab.provision(args.lab_dir, "serving.yml", ["-l", args.node])
    print(f"back on the inventory's release: rc {back.rc}, {back.seconds['serving.yml']:.1f} s")


if __name__ == "__main__":
    main()
