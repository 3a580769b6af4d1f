"""Replica-level evidence for `llmrack validate`: the cross-node all-reduce of a replica that spans nodes.

Every node of the replica runs llmrack.validation.allreduce at once, rank 0 on the leader, inside the node's
serving image (its torch) through containerd's `ctr` on the host network, over the data network (the inventory's
llmrack_node_address of the leader and llmrack_node_interface of each node). The leader's evidence gets the
item `allreduce`: rank 0's JSON (bus bandwidth per size, correctness), checked by serving.allreduce.
"""

from __future__ import annotations

import base64
import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Any

from llmrack.contracts.inventory import NODE_ADDRESS_VAR, NODE_INTERFACE_VAR, REPLICA_VAR
from llmrack.validation.evidence import Item, ServingImageProbe

ITEM = "allreduce"
# Inside 29500-29600, which the firewall opens between a replica's nodes (vLLM's own launcher uses 29500).
PORT = 29599
SIZES_MIB = (1, 16, 64)
TIMEOUT_S = 300


@dataclass(frozen=True)
class Member:
    name: str
    host: Any  # a testinfra Host
    rank: int
    vars: dict[str, Any]
    image: ServingImageProbe
    kind: str = "cpu"  # the node kind (llmrack.validation.expect.NodeKind): which fabric check the replica gets
    devices: int = 0  # accelerators on the node


def replicas(members: list[Member]) -> dict[str, list[Member]]:
    """Replicas of more than one node among `members`, each by rank (only those whose every rank is here)."""
    out: dict[str, list[Member]] = {}
    for m in members:
        name = m.vars.get(REPLICA_VAR)
        if name:
            out.setdefault(str(name), []).append(m)
    return {name: sorted(ms, key=lambda m: m.rank) for name, ms in out.items()
            if len(ms) > 1 and [m.rank for m in sorted(ms, key=lambda m: m.rank)] == list(range(len(ms)))}


def command(member: Member, world: int, master: str, sizes_mib: tuple[int, ...] = SIZES_MIB,
            iters: int = 5) -> str:
    """The shell command one node runs: allreduce.py in the image of its running serving container."""
    source = base64.b64encode(resources.files("llmrack.validation").joinpath("allreduce.py").read_bytes()).decode()
    interface = member.vars.get(NODE_INTERFACE_VAR)
    args = [f"--rank {member.rank}", f"--world {world}", f"--master {shlex.quote(master)}",
            f"--sizes-mib {','.join(map(str, sizes_mib))}", f"--iters {iters}",
            *([f"--interface {shlex.quote(str(interface))}"] if interface else [])]
    return member.image.run("the all-reduce", "--net-host ",
                            f'llmrack-allreduce-$$ python3 -c "$(echo {source} | base64 -d)" {" ".join(args)}',
                            prefix=f"timeout {TIMEOUT_S} ")


def allreduce(members: list[Member]) -> Item:
    """Run the all-reduce on every node of one replica at once; rank 0's result as the leader's item."""
    leader = members[0]
    address = leader.vars.get(NODE_ADDRESS_VAR)
    if not address:
        return Item(ITEM, 2, "", f"replica {leader.vars.get(REPLICA_VAR)}: its leader {leader.name} has no "
                    f"{NODE_ADDRESS_VAR} (the data network address the other ranks reach it on)")
    master = f"{address}:{PORT}"
    with ThreadPoolExecutor(max_workers=len(members), thread_name_prefix="llmrack-allreduce") as pool:
        futures = [pool.submit(m.host.run, "sh -c %s", command(m, len(members), master)) for m in members]
        results = []
        for m, f in zip(members, futures, strict=True):
            try:
                results.append(f.result())
            except Exception as exc:  # testinfra raises RuntimeError when ssh itself fails
                return Item(ITEM, 255, "", f"{m.name}: cannot reach the node: {exc}"[:2000])
    bad = [(m, r) for m, r in zip(members, results, strict=True) if r.rc != 0]
    if bad:
        return Item(ITEM, bad[0][1].rc, "", "; ".join(f"{m.name} (rank {m.rank}) rc={r.rc}: {r.stderr.strip()[-600:]}"
                                                      for m, r in bad))
    lines = results[0].stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return Item(ITEM, 3, results[0].stdout[-2000:], "rank 0 printed no result")
    data["members"] = [m.name for m in members]
    return Item(ITEM, 0, json.dumps(data))
