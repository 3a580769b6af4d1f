"""Pull throughput of a model version from the lab's registry to its nodes, against loopback and disk, and the
time to resume a pull killed halfway.

    .venv/bin/llmrack lab up --nodes 2 --no-provision --lab-dir .lab-bench   # nodes + registry, no site.yml needed
    .venv/bin/python benchmarks/model_pull.py --lab-dir .lab-bench [--size-gb 1.0]
    .venv/bin/llmrack lab down --lab-dir .lab-bench

It puts the model agent on each node (what the serving role copies: `llmrack model agent`, plus Debian's
python3-requests and python3-jsonschema), writes a model of --size-gb (4 weight shards of random bytes) on this
machine, pushes it to the lab's registry (`llmrack model push`, oras), and measures:
  disk       writing the shards (fsync'd) and reading them back (page cache warm) on this machine
  loopback   one HTTP GET of a shard from the registry on 127.0.0.1 (registry + loopback, no node)
  1 node     node1's agent pulling the version (what the serving role runs), alone
  2 nodes    both nodes pulling at once: MB/s per node and aggregate
  resume     node1's pull killed once half the bytes arrived, then the time the next pull takes to finish
Every pull goes through the node's sha256 verification and rename; the bench removes its versions from the
nodes' stores afterwards. Figures go to stdout (docs/models.md records them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmrack.contracts.model_manifest import NODE_AGENT, NODE_STORE, version_hex  # noqa: E402
from llmrack.lab import lab, registry  # noqa: E402
from llmrack.lab.state import LabState, NodeState  # noqa: E402
from llmrack.models import agent, local, transfer  # noqa: E402

STORE = NODE_STORE
AGENT_PATH = NODE_AGENT
AGENT = f"python3 {AGENT_PATH}"
SHARDS = 4


def ssh(state: LabState, node: NodeState, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ssh", "-i", str(state.ssh_key), "-p", str(node.ssh_port), "-o", "BatchMode=yes",
           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
           "root@127.0.0.1", command]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        sys.exit(f"{node.name}: {command} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


def install_agent(state: LabState, node: NodeState, zipapp: Path) -> None:
    """The serving role's model.yml steps, done directly: the nodes of a `--no-provision` lab have neither."""
    if ssh(state, node, "python3 -c 'import requests, jsonschema'", check=False).returncode != 0:
        ssh(state, node, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                         "python3-requests python3-jsonschema >/dev/null")
    ssh(state, node, f"mkdir -p {Path(AGENT_PATH).parent} {STORE}")
    subprocess.run(["scp", "-q", "-i", str(state.ssh_key), "-P", str(node.ssh_port), "-o", "BatchMode=yes",
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                    str(zipapp), f"root@127.0.0.1:{AGENT_PATH}"], check=True)


def write_model(directory: Path, size: int) -> float:
    """Write SHARDS shards of random bytes, fsync'd; returns the write rate in MB/s."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "bench"}\n')
    block = os.urandom(16 << 20)
    start = time.monotonic()
    for i in range(SHARDS):
        with (directory / f"model-{i:05d}-of-{SHARDS:05d}.safetensors").open("wb") as f:
            left = size // SHARDS
            while left > 0:
                # Each block differs (its index up front) so no layer of the stack can deduplicate it.
                chunk = left.to_bytes(8, "little") + block[8:min(left, len(block))]
                f.write(chunk)
                left -= len(chunk)
            f.flush()
            os.fsync(f.fileno())
    return size / 1e6 / (time.monotonic() - start)


def read_rate(directory: Path) -> float:
    start, n = time.monotonic(), 0
    for path in sorted(directory.glob("*.safetensors")):
        with path.open("rb") as f:
            while block := f.read(16 << 20):
                n += len(block)
    return n / 1e6 / (time.monotonic() - start)


def loopback_rate(reg: registry.LabRegistry, repo: str, digest: str) -> float:
    url = f"http://127.0.0.1:{reg.host_port}/v2/{repo}/blobs/{digest}"
    start, n = time.monotonic(), 0
    with httpx.stream("GET", url, timeout=120) as resp:
        for block in resp.iter_bytes(1 << 20):
            n += len(block)
    return n / 1e6 / (time.monotonic() - start)


def pull(state: LabState, node: NodeState, source: str, version: str, out: dict[str, dict[str, float]]) -> None:
    proc = ssh(state, node, f"{AGENT} pull --source {source} --version {version} --store {STORE}")
    out[node.name] = json.loads(proc.stdout)


def remove(state: LabState, node: NodeState, version: str) -> None:
    ssh(state, node, f"rm -rf {STORE}/{version_hex(version)} {STORE}/{version_hex(version)}.partial")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lab-dir", type=Path, default=Path(".lab"))
    ap.add_argument("--size-gb", type=float, default=1.0)
    args = ap.parse_args()
    state = lab.require(args.lab_dir)
    reg = registry.load(state)
    if reg is None or len(state.nodes) < 2:
        sys.exit(f"need a running lab with 2 nodes and its registry in {args.lab_dir} (llmrack lab up --nodes 2)")
    node1, node2 = state.nodes[:2]
    size = int(args.size_gb * 1e9)
    repo = "bench/model"
    with tempfile.TemporaryDirectory(dir=args.lab_dir) as tmp:
        zipapp = agent.build_zipapp(Path(tmp) / "agent.pyz")
        for node in (node1, node2):
            install_agent(state, node, zipapp)
        model = Path(tmp) / "model"
        write = write_model(model, size)
        read = read_rate(model)
        t = time.monotonic()
        version = local.write_manifest(model)
        hashing = size / 1e6 / (time.monotonic() - t)
        pushed = transfer.push(model, f"{reg.push_base}/{repo}:bench")
        manifest, _ = local.read_manifest(model)
        shard = next(f for f in manifest.files if f.path.endswith(".safetensors"))
        loop = loopback_rate(reg, repo, shard.digest)
        shutil.rmtree(model)
    total = manifest.total_bytes
    source = f"{reg.node_base}/{repo}"
    print(f"model: {total / 1e9:.2f} GB in {len(manifest.files)} files, version {version}")
    print(f"disk (this machine): write {write:.0f} MB/s (fsync), read {read:.0f} MB/s (page cache), "
          f"sha256 {hashing:.0f} MB/s")
    print(f"push: {pushed.seconds:.1f} s ({total / 1e6 / pushed.seconds:.0f} MB/s)")
    print(f"loopback: one registry GET of a {shard.size / 1e6:.0f} MB shard at {loop:.0f} MB/s")

    for node in (node1, node2):
        remove(state, node, version)
    alone: dict[str, dict[str, float]] = {}
    pull(state, node1, source, version, alone)
    r = alone[node1.name]
    print(f"1 node: {node1.name} {r['seconds']:.1f} s, {total / 1e6 / r['seconds']:.0f} MB/s (incl. sha256 + rename)")
    for node in (node1, node2):
        remove(state, node, version)
    both: dict[str, dict[str, float]] = {}
    t = time.monotonic()
    threads = [threading.Thread(target=pull, args=(state, n, source, version, both)) for n in (node1, node2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.monotonic() - t
    per = ", ".join(f"{n} {total / 1e6 / both[n]['seconds']:.0f} MB/s" for n in sorted(both))
    print(f"2 nodes at once: {per}; aggregate {2 * total / 1e6 / wall:.0f} MB/s over {wall:.1f} s")

    remove(state, node1, version)
    # The pull records its own pid, so it is killed by id (as an operator's Ctrl-C or a node reboot would).
    cmd = f"echo $$ > /tmp/bench-pull.pid; exec {AGENT} pull --source {source} --version {version} --store {STORE}"
    proc = subprocess.Popen(["ssh", "-i", str(state.ssh_key), "-p", str(node1.ssh_port), "-o", "BatchMode=yes",
                             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                             "-o", "LogLevel=ERROR", "root@127.0.0.1", cmd],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = f"{STORE}/{version_hex(version)}.partial"
    have = 0
    while have < total // 2:
        du = ssh(state, node1, f"du -sb --exclude=llmrack-model.json {partial} 2>/dev/null || echo 0", check=False)
        have = int((du.stdout.split() or ["0"])[0])
        if proc.poll() is not None:
            break
    ssh(state, node1, "kill -KILL $(cat /tmp/bench-pull.pid)", check=False)
    proc.wait()
    resumed: dict[str, dict[str, float]] = {}
    pull(state, node1, source, version, resumed)
    r = resumed[node1.name]
    print(f"resume: killed at {r['resumed_bytes'] / 1e6:.0f} of {total / 1e6:.0f} MB; the next pull fetched "
          f"{r['fetched_bytes'] / 1e6:.0f} MB and finished in {r['seconds']:.1f} s "
          f"(a full pull took {alone[node1.name]['seconds']:.1f} s)")
    for node in (node1, node2):
        remove(state, node, version)


if __name__ == "__main__":
    main()
