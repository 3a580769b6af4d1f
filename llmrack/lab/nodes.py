"""Boot, inspect and remove lab nodes: privileged podman containers running systemd and sshd.

Privileged because the nodes run containerd (nested containers) like a real rack node; every port is
published on 127.0.0.1 only, and the host reaches nodes only through those ports.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llmrack.lab import sim
from llmrack.lab.podman import Podman, PodmanError
from llmrack.lab.state import LabState, NodeState

MIRROR_ON_NODE = "/srv/mirror"
# containerd's root on every node is a podman volume, a directory of the host's own filesystem: overlayfs mounts
# there as on a rack's disk. On the node's root (itself an overlay mount) it cannot, which left only containerd's
# native snapshotter, a full copy of every layer per image.
CONTAINERD_ROOT_ON_NODE = "/var/lib/containerd"
SERVING_PORT_ON_NODE = 8000
PROMETHEUS_PORT_ON_NODE = 9090
GATEWAY_PORT_ON_NODE = 8080  # the lab sets the gateway role's gateway_port to this


def free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            taken.add(port)
            return port


def ensure_network(podman: Podman, name: str) -> None:
    if not podman.ok("network", "exists", name):
        podman.run("network", "create", name)


# Nodes find each other by name through /etc/hosts (podman --add-host) and fixed addresses on the lab network,
# never through the network's DNS: podman's CNI backend without the dnsname plugin (Debian 12 installed without
# recommends, as scripts/setup.sh does) makes networks with dns_enabled false, and Prometheus on node1 then could
# not resolve node2, whose node and serving targets never came up. Fixed addresses also survive a node restart.
NODE_ADDRESS_OFFSET = 200  # node i gets <subnet base> + 200 + i, clear of the low addresses podman hands out


def node_addresses(podman: Podman, state: LabState) -> dict[str, str]:
    """Each node's address on the lab network (the network must exist)."""
    subnet = _subnet(podman, state)
    if subnet.num_addresses < NODE_ADDRESS_OFFSET + len(state.nodes) + 2:
        raise PodmanError(f"the lab network {state.network} ({subnet}) is too small for {len(state.nodes)} nodes")
    return {n.name: str(subnet.network_address + NODE_ADDRESS_OFFSET + i) for i, n in enumerate(state.nodes, 1)}


# --- firewall: the host's side of the lab network ---
def host_side_address(podman: Podman, state: LabState) -> str:
    """The host's own address on the lab network (the bridge's gateway). Every connection the host makes to a node
    through a published 127.0.0.1 port arrives from it (podman's port forwarding masquerades loopback clients), so
    it is the lab's admin network: the firewall lets it reach everything, and the lab's tools keep their URLs."""
    out = podman.run("network", "inspect", state.network, "--format", "{{range .Subnets}}{{.Gateway}} {{end}}")
    return out.split()[0]
# --- end firewall ---


def registry_address(podman: Podman, state: LabState) -> str:
    """The registry's fixed address, just below the nodes': containerd's hosts.toml names the registry by it, and
    a registry restarted with another address would leave every node's hosts.toml pointing nowhere."""
    return str(_subnet(podman, state).network_address + NODE_ADDRESS_OFFSET)


def _subnet(podman: Podman, state: LabState) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    out = podman.run("network", "inspect", state.network, "--format", "{{range .Subnets}}{{.Subnet}} {{end}}")
    return ipaddress.ip_network(out.split()[0])


def start_node(podman: Podman, state: LabState, node: NodeState, mirror: Path) -> None:
    """Create the node's container, or start it if it exists but is stopped."""
    info = podman.inspect(node.container)
    if info is not None:
        if not info["State"]["Running"]:
            podman.run("start", node.container)
        return
    ports = ["-p", f"127.0.0.1:{node.ssh_port}:22", "-p", f"127.0.0.1:{node.http_port}:{SERVING_PORT_ON_NODE}"]
    if node.prometheus_port:
        ports += ["-p", f"127.0.0.1:{node.prometheus_port}:{PROMETHEUS_PORT_ON_NODE}"]
    if node.gateway_port:
        ports += ["-p", f"127.0.0.1:{node.gateway_port}:{GATEWAY_PORT_ON_NODE}"]
    addresses = node_addresses(podman, state)
    volume = containerd_volume(node)
    if not podman.ok("volume", "exists", volume):
        podman.run("volume", "create", "--label", f"llmrack.lab={state.prefix}", volume)
    peers = [f"--add-host={name}:{addr}" for name, addr in addresses.items() if name != node.name]
    podman.run(
        "run", "-d", "--runtime", "runc", "--privileged",
        "--name", node.container, "--hostname", node.name,
        "--network", state.network, "--network-alias", node.name, "--ip", addresses[node.name], *peers,
        *ports,
        "--label", f"llmrack.lab={state.prefix}",
        "-v", f"{mirror}:{MIRROR_ON_NODE}:ro",
        "-v", f"{volume}:{CONTAINERD_ROOT_ON_NODE}",
        state.image,
    )
    # The lab's key goes into a regular authorized_keys file, as a cloud image's first boot leaves it: roles add
    # their own keys to that file (the replica's keys for mpirun), which a read-only bind mount would refuse.
    podman.run("cp", str(state.ssh_key.with_suffix(".pub")), f"{node.container}:/root/.ssh/authorized_keys")
    podman.run("exec", node.container, "chmod", "0600", "/root/.ssh/authorized_keys")


def containerd_volume(node: NodeState) -> str:
    return f"{node.container}-containerd"


def address_of(podman: Podman, state: LabState, node: NodeState) -> str | None:
    """The node's address on the lab network (what the gateway on node1 sends requests to)."""
    info = podman.inspect(node.container) or {}
    network = (info.get("NetworkSettings", {}).get("Networks") or {}).get(state.network) or {}
    return network.get("IPAddress") or None


def interface_of(podman: Podman, node: NodeState) -> str | None:
    """The node's one network interface besides loopback (the lab network), as the node names it."""
    names = [n for n in podman.run("exec", node.container, "ls", "/sys/class/net", check=False).split() if n != "lo"]
    return names[0] if len(names) == 1 else None


def install_sim_hardware(podman: Podman, node: NodeState) -> None:
    """Give a sim-* node the hardware description its stub tools answer from (before Ansible runs)."""
    hw = sim.hardware_file(node.profile)
    if hw is None:
        return
    target = sim.HARDWARE_PATH_ON_NODE
    podman.run("exec", node.container, "mkdir", "-p", str(Path(target).parent))
    podman.run("cp", str(hw), f"{node.container}:{target}")


def wait_for_ssh(state: LabState, node: NodeState, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    cmd = [
        "ssh", "-i", str(state.ssh_key), "-p", str(node.ssh_port), "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=3",
        "-o", "LogLevel=ERROR", "root@127.0.0.1", "true",
    ]
    last = ""
    while time.monotonic() < deadline:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return
        last = proc.stderr.strip()
        time.sleep(1)
    raise PodmanError(f"{node.name}: sshd did not answer on 127.0.0.1:{node.ssh_port} within {timeout:.0f} s: {last}")


def remove_all(podman: Podman, state: LabState) -> list[str]:
    """Remove every container of the lab (its nodes, its registry, any a crashed `up` left behind unrecorded: all
    carry the lab's label), their containerd volumes and the lab's network; returns the containers' names.

    One `podman rm` for all of them, without a stop timeout: systemd, the nodes' PID 1, ignores the SIGTERM a stop
    sends first, so a timeout only delayed the SIGKILL; a node being deleted needs no clean shutdown. Deleting the
    files is the rest of the time: containerd's overlayfs snapshots hold each image once (benchmarks/lab_down.py,
    docs/lab.md), and the volumes go in parallel."""
    names = podman.run("ps", "-a", "--filter", f"label=llmrack.lab={state.prefix}", "--format", "{{.Names}}").split()
    if names:
        podman.run("rm", "-f", "-t", "0", *names)
    volumes = podman.run("volume", "ls", "-q", "--filter", f"label=llmrack.lab={state.prefix}").split()
    # One `podman volume rm` per volume, at once: each deletes its node's containerd snapshots file by file on one
    # thread, and those deletions are most of `down`'s time.
    with ThreadPoolExecutor(max_workers=max(1, len(volumes))) as pool:
        list(pool.map(lambda volume: podman.run("volume", "rm", "-f", volume), volumes))
    podman.run("network", "rm", state.network, check=False)  # absent when `up` failed before creating it
    return names
