"""The lab's Ansible inputs: SSH key, inventory (the shape of llmrack.contracts.inventory), vault, ansible.cfg.

The inventory has the same shape as the example rack inventories (ansible/inventories/examples/); only the
values differ: hosts are 127.0.0.1 with a published port, downloads come from the lab mirror, and the serving image
comes from the lab's registry over plain HTTP (a closed network of the host's own).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import yaml

from llmrack.contracts.inventory import (
    ACCELERATOR_VAR,
    ADMIN_NETWORKS_VAR,
    API_KEYS_VAR,
    BATCH_GROUP,
    DEPLOYMENT_FILE,
    DEPLOYMENT_VAR,
    LAB_PROFILE_VAR,
    MONITORING_PASSWORD_VAR,
    MONITORING_USER_DEFAULT,
    NODE_ADDRESS_VAR,
    NODE_INTERFACE_VAR,
    SERVING_DEVICE_VAR,
    SERVING_URL_VAR,
    assign_replicas,
    hosts_document,
)
from llmrack.errors import LlmrackError
from llmrack.lab import sim
from llmrack.lab.nodes import GATEWAY_PORT_ON_NODE, MIRROR_ON_NODE
from llmrack.lab.state import ACCELERATOR_OF_PROFILE, GROUP_OF_PROFILE, LabState, Profile
from llmrack.stack_inventory import nodes_per_replica

ANSIBLE_DIR = Path(__file__).resolve().parents[2] / "ansible"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
# The mirror's directory of llmrack's wheel and the batch service's wheels (llmrack.batch.wheelhouse).
BATCH_WHEELS = "python"


def ensure_ssh_key(state: LabState) -> None:
    key = state.ssh_key
    if key.exists():
        return
    key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "llmrack-lab", "-f", str(key)], check=True)


def host_extra_cas() -> list[dict[str, str]]:
    """The CA certificates this host added locally (e.g. a TLS-inspecting egress proxy's): nodes trust them too."""
    if not HOST_CA_DIR.is_dir():
        return []
    return [{"name": p.stem, "content": p.read_text()} for p in sorted(HOST_CA_DIR.glob("*.crt"))]


def lab_vars(serving: dict[str, Any] | None) -> dict[str, Any]:
    vers = sim.versions()
    mirror = f"file://{MIRROR_ON_NODE}"
    data: dict[str, Any] = {
        "common_extra_ca_certificates": host_extra_cas(),
        # Lab nodes share the host's clock and NTP is not reachable from them.
        "common_timesync_enabled": False,
        "gateway_port": GATEWAY_PORT_ON_NODE,
        "nvidia_driver_version": vers["nvidia-driver"],
        "nvidia_driver_install_method": "runfile",
        "nvidia_driver_mirror_url": f"{mirror}/nvidia",
        "nvidia_fabricmanager_mirror_url": f"{mirror}/nvidia",
        "nccl_tuning_nccl_tests_version": vers["nccl-tests"],
        "nccl_tuning_nccl_tests_mirror_url": f"{mirror}/nvidia",
        "nvidia_container_toolkit_version": vers["nvidia-container-toolkit"],
        "nvidia_container_toolkit_install_method": "mirror_debs",
        "nvidia_container_toolkit_mirror_url": f"{mirror}/nvidia/container-toolkit",
        "ascend_driver_version": vers["ascend-driver"],
        "ascend_driver_firmware_version": vers["ascend-firmware"],
        "ascend_driver_cann_version": vers["ascend-cann"],
        "ascend_driver_mirror_url": f"{mirror}/ascend",
        "ascend_runtime_version": vers["ascend-docker-runtime"],
        "ascend_runtime_mirror_url": f"{mirror}/ascend",
    }
    if serving:
        data.update(serving)
    return data


# --- monitoring credentials ---
def monitoring_password_file(lab_dir: Path) -> Path:
    return lab_dir / "monitoring-password"


def monitoring_credentials(state: LabState) -> str:
    """user:password that the lab's Prometheus and HAProxy stats page ask for; made once, kept in the lab dir."""
    path = monitoring_password_file(state.lab_dir)
    if not path.exists():
        state.lab_dir.mkdir(parents=True, exist_ok=True)
        # Created owner-only (never readable by others, not even for a moment).
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(secrets.token_urlsafe(18) + "\n")
    return f"{MONITORING_USER_DEFAULT}:{path.read_text().strip()}"
# --- end monitoring credentials ---


def write_vault(state: LabState, ansible_bin: Path, api_key: str) -> None:
    pw = state.lab_dir / "vault-password"
    if not pw.exists():
        pw.write_text(secrets.token_urlsafe(24) + "\n")
        pw.chmod(0o600)
    vault = state.lab_dir / "inventory" / "group_vars" / "all" / "vault.yml"
    if vault.exists():
        return
    # The plaintext goes through stdin so the key never lands on disk unencrypted, and a caller's
    # ANSIBLE_CONFIG (another lab's, say) must not decide how this lab's vault is written.
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_CONFIG"}
    proc = subprocess.run(
        [str(ansible_bin / "ansible-vault"), "encrypt", "--vault-password-file", str(pw), "--output", str(vault), "-"],
        input=yaml.safe_dump({API_KEYS_VAR: [api_key],
                              MONITORING_PASSWORD_VAR: monitoring_credentials(state).split(":", 1)[1]}),
        capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        vault.unlink(missing_ok=True)
        raise LlmrackError(f"ansible-vault could not encrypt the lab's API key: {(proc.stderr or proc.stdout).strip()}")


def write_inventory(state: LabState, deployment: dict[str, Any], serving: dict[str, Any] | None) -> None:
    inv = state.inventory.parent
    (inv / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    # --- replicas across nodes: the nodes in order make replicas of the plan's nodes_per_replica ---
    replicas = assign_replicas([n.name for n in state.nodes], nodes_per_replica(deployment, "the lab's spec"))
    for node in state.nodes:
        host: dict[str, Any] = {
            "ansible_host": "127.0.0.1",
            "ansible_port": node.ssh_port,
            SERVING_URL_VAR: node.serving_url,
            LAB_PROFILE_VAR: node.profile.value,
        }
        if node.address:
            host["gateway_backend_address"] = node.address
            host[NODE_ADDRESS_VAR] = node.address
        if node.interface:
            host[NODE_INTERFACE_VAR] = node.interface
        host.update(replicas[node.name])
        if node.profile is not Profile.cpu:
            # Simulated accelerators cannot run kernels: the serving layer runs on the node's CPU.
            host[SERVING_DEVICE_VAR] = "cpu"
            host[ACCELERATOR_VAR] = ACCELERATOR_OF_PROFILE[node.profile]
        groups.setdefault(GROUP_OF_PROFILE[node.profile], {})[node.name] = host
    monitoring = state.monitoring_node
    hosts = hosts_document(groups, [n.name for n in state.nodes if n.monitoring], {
        # Where the controller reads Prometheus (`serving.yml -e promote=true` asks the canary judge there): the
        # lab host reaches node1's Prometheus through its published port, not by the node's name.
        **({"llmrack_prometheus_url": monitoring.prometheus_address}
           if monitoring and monitoring.prometheus_address else {}),
        # The firewall (site.yml) closes every node but to the host's side of the lab network: the host reaches
        # nodes only through published ports, which arrive from there.
        **({ADMIN_NETWORKS_VAR: [state.host_address]} if state.host_address else {}),
        "ansible_user": "root",
        "ansible_python_interpreter": "/usr/bin/python3",
        # In the inventory too (not only ansible.cfg): testinfra's ansible backend reads only these.
        "ansible_ssh_private_key_file": str(state.ssh_key.resolve()),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
    }, gateway=[n.name for n in state.nodes if n.gateway_port])
    # --- batch service: on the gateway (site.yml's batch play), installed from the wheels in the lab's mirror ---
    batch_vars: dict[str, Any] = {}
    wheels = sorted((state.lab_dir / "mirror" / BATCH_WHEELS).glob("llmrack-*.whl"))
    gateways = [n.name for n in state.nodes if n.gateway_port]
    if serving and wheels and gateways:
        hosts["all"]["children"][BATCH_GROUP] = {"hosts": {gateways[0]: {}}}
        batch_vars = {"batch_wheel": str(wheels[-1].resolve()),
                      "batch_pip_find_links": f"{MIRROR_ON_NODE}/{BATCH_WHEELS}"}
    # --- end batch service ---
    header = "# Written by `llmrack lab up`; regenerated on every run.\n"
    state.inventory.write_text(header + yaml.safe_dump(hosts, sort_keys=False))
    (inv / DEPLOYMENT_FILE).write_text(
        header + yaml.safe_dump({DEPLOYMENT_VAR: deployment}, sort_keys=False)
    )
    # The gateway play puts the rack CA's certificate where the lab's clients look for it.
    gateway_ca = {"gateway_tls_ca_fetch_to": str(state.rack_ca.resolve())}
    (inv / "group_vars" / "all" / "lab.yml").write_text(
        header + yaml.safe_dump({**lab_vars(serving), **gateway_ca, **batch_vars}, sort_keys=False))


def write_ansible_cfg(state: LabState) -> None:
    lab = state.lab_dir.resolve()
    state.ansible_cfg.write_text(
        "# Written by `llmrack lab up`: the repository's settings plus where this lab keeps its inputs.\n"
        "[defaults]\n"
        f"roles_path = {ANSIBLE_DIR / 'roles'}\n"
        f"inventory = {state.inventory.resolve()}\n"
        f"vault_password_file = {lab / 'vault-password'}\n"
        f"private_key_file = {state.ssh_key.resolve()}\n"
        "remote_user = root\n"
        "forks = 32\n"
        "gathering = smart\n"
        "fact_caching = jsonfile\n"
        f"fact_caching_connection = {lab / 'facts'}\n"
        "fact_caching_timeout = 86400\n"
        "host_key_checking = False\n"
        "retry_files_enabled = False\n"
        "interpreter_python = /usr/bin/python3\n"
        "nocows = True\n"
        "callbacks_enabled = ansible.posix.profile_tasks\n"
        "[ssh_connection]\n"
        "pipelining = True\n"
        "ssh_args = -o ControlMaster=auto -o ControlPersist=300s -o UserKnownHostsFile=/dev/null "
        "-o StrictHostKeyChecking=no -o IdentitiesOnly=yes -o LogLevel=ERROR\n"
    )
