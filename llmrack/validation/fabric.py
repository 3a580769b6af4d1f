"""Replica-level evidence for `llmrack validate`: the accelerators' own fabric between the nodes of a replica.

- NVIDIA: nccl-tests' `all_reduce_perf` over every GPU of the replica, launched from the leader with Open MPI's
  `mpirun -H LEADER:G,WORKER:G,...` as operators run it. mpirun reaches the other nodes over SSH: the nccl_tuning
  role installs Open MPI and the site's nccl-tests build (MPI=1) on every NVIDIA node, at the same path, and gives a
  replica's members each other's keys; the firewall role lets SSH in from a node's replica peers. NCCL's own
  transport (InfiniBand / RoCE, GPUDirect) is what is measured, not the TCP path serving.allreduce measures.
- Ascend: on every node `hccn_tool` per NPU (`-ip -g`, `-link -g`, `-net_health -g`), then from every NPU a
  `hccn_tool -i N -ping -g address A` to the NPU of the same index on each other node of the replica (the pairs
  HCCL's rings use across nodes), as Huawei's and vllm-ascend's multi-node guides check the parameter-plane
  network before a multi-node start.

Both give the leader's evidence the item `fabric` (JSON: the tool, the members, the raw outputs), which
serving.fabric parses and judges (llmrack.validation.checks.serving).
"""

from __future__ import annotations

import json
import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llmrack.contracts.inventory import NODE_ADDRESS_VAR, NODE_INTERFACE_VAR, REPLICA_VAR
from llmrack.validation.evidence import Item
from llmrack.validation.parsers import ascend as asc
from llmrack.validation.parsers import blocks
from llmrack.validation.replica import Member

ITEM = "fabric"
# The path of nccl-tests' all_reduce_perf on every node (default: on PATH, else where its README builds it).
ALL_REDUCE_PERF_VAR = "llmrack_validation_all_reduce_perf"
ALL_REDUCE_PERF = "/opt/nccl-tests/build/all_reduce_perf"
# The bus bandwidth floor across nodes, GB/s (default: the catalog's internode figure x allreduce_practical_fraction).
FLOOR_VAR = "llmrack_validation_internode_gbps"
# 8 MiB to 1 GiB, doubling: large enough for the fabric's bandwidth, short enough for a validation run.
NCCL_ARGS = "-b 8M -e 1G -f 2 -g 1 -c 1 -n 20 -w 5"
NCCL_TIMEOUT_S = 600
HCCN = "$(command -v hccn_tool || echo /usr/local/Ascend/driver/tools/hccn_tool)"
PING_PACKETS = 3


def _run(host: Any, command: str) -> Any:
    return host.run("sh -c %s", command)


def nccl_command(members: list[Member]) -> str:
    """The shell command the leader runs: mpirun over every GPU of the replica, NCCL's sockets (bootstrap) and
    Open MPI's own traffic on the data network's interface."""
    leader = members[0]
    hosts = ",".join(f"{m.vars[NODE_ADDRESS_VAR]}:{m.devices}" for m in members)
    world = sum(m.devices for m in members)
    interface = leader.vars.get(NODE_INTERFACE_VAR)
    net = (f"-x NCCL_SOCKET_IFNAME={shlex.quote(str(interface))} --mca btl_tcp_if_include {shlex.quote(str(interface))}"
           f" --mca oob_tcp_if_include {shlex.quote(str(interface))} " if interface else "")
    binary = leader.vars.get(ALL_REDUCE_PERF_VAR)
    find = (f"B={shlex.quote(str(binary))}" if binary else
            f"B=$(command -v all_reduce_perf || echo {ALL_REDUCE_PERF})")
    return (f"{find}; "
            "command -v mpirun >/dev/null || { echo \"mpirun (Open MPI) is not installed on this node: nccl-tests "
            "runs across nodes through it (site.yml's nccl_tuning role installs it)\" >&2; exit 127; }; "
            "[ -x \"$B\" ] || { echo \"nccl-tests' all_reduce_perf is not at $B: the nccl_tuning role installs "
            "the site's build from nccl_tuning_nccl_tests_mirror_url (or set " + ALL_REDUCE_PERF_VAR + " to where "
            "yours is)\" >&2; exit 127; }; "
            f"exec timeout {NCCL_TIMEOUT_S} mpirun --allow-run-as-root -np {world} -H {hosts} --bind-to none "
            f"--map-by slot {net}-x NCCL_DEBUG=WARN \"$B\" {NCCL_ARGS}")


def nccl(members: list[Member]) -> Item:
    leader = members[0]
    command = nccl_command(members)
    try:
        result = _run(leader.host, command)
    except Exception as exc:  # testinfra raises RuntimeError when ssh itself fails
        return Item(ITEM, 255, "", f"{leader.name}: cannot reach the node: {exc}"[:2000])
    data = {"tool": "nccl-tests", "command": command, "members": [m.name for m in members],
            "world": sum(m.devices for m in members), "output": result.stdout[-20000:]}
    return Item(ITEM, result.rc, json.dumps(data), result.stderr[-2000:])


def _hccn_state(devices: int) -> str:
    """Per NPU: its address, its port's link and the network health, each block headed "== npu N"."""
    loop = f"for i in $(seq 0 {devices - 1}); do echo \"== npu $i\"; \"$H\" -i \"$i\" {{}} -g; done"
    return (f"H={HCCN}; echo '### ip'; {loop.format('-ip')}; echo '### link'; {loop.format('-link')}; "
            f"echo '### net_health'; {loop.format('-net_health')}")


SECTION_HEADER = re.compile(r"^### \s*(.*?)\s*$")


def sections(text: str) -> dict[str, str]:
    """Output blocks headed "### NAME" -> {NAME: block}."""
    return blocks(text, SECTION_HEADER)


def hccn(members: list[Member]) -> Item:
    data: dict[str, Any] = {"tool": "hccn_tool", "members": [m.name for m in members], "nodes": {}, "pings": {}}
    with ThreadPoolExecutor(max_workers=len(members), thread_name_prefix="llmrack-hccn") as pool:
        try:
            states = list(pool.map(lambda m: _run(m.host, _hccn_state(m.devices)), members))
        except Exception as exc:
            return Item(ITEM, 255, "", f"cannot reach a node of the replica: {exc}"[:2000])
        addresses = {}
        for m, r in zip(members, states, strict=True):
            data["nodes"][m.name] = {"rc": r.rc, **sections(r.stdout), "stderr": r.stderr[-1000:]}
            addresses[m.name] = asc.npu_addresses(data["nodes"][m.name].get("ip", ""))

        def pings(m: Member) -> Any:
            lines = [f"H={HCCN}"]
            for peer in members:
                if peer is m:
                    continue
                for npu in range(m.devices):
                    address = addresses[peer.name].get(npu)
                    if address:
                        lines.append(f"echo '### {peer.name} {npu}'; \"$H\" -i {npu} -ping -g address "
                                     f"{shlex.quote(address)} pkt {PING_PACKETS}")
            return _run(m.host, "; ".join(lines))

        try:
            results = list(pool.map(pings, members))
        except Exception as exc:
            return Item(ITEM, 255, json.dumps(data), f"cannot reach a node of the replica: {exc}"[:2000])
    for m, r in zip(members, results, strict=True):
        data["pings"][m.name] = {"rc": r.rc, "output": r.stdout[-20000:], "stderr": r.stderr[-1000:]}
    return Item(ITEM, 0, json.dumps(data))


def run(members: list[Member]) -> Item | None:
    """The fabric check of one replica (members by rank), by the kind of its nodes; None for CPU replicas."""
    missing = [m.name for m in members if not m.vars.get(NODE_ADDRESS_VAR)]
    kind = members[0].kind
    if kind not in ("nvidia", "ascend"):
        return None
    if kind == "nvidia" and missing:
        return Item(ITEM, 2, "", f"replica {members[0].vars.get(REPLICA_VAR)}: {', '.join(missing)} "
                    f"{'has' if len(missing) == 1 else 'have'} no {NODE_ADDRESS_VAR} (the data network address "
                    "mpirun starts the ranks on)")
    return nccl(members) if kind == "nvidia" else hccn(members)
