"""The lab's state on disk: which nodes exist, how to reach them, where the inventory is."""

from __future__ import annotations

import hashlib
import json
import os
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field

from llmrack.contracts.inventory import ASCEND_GROUP, CPU_GROUP, NVIDIA_GROUP

SSH_PORT_BASE = 22


class Profile(StrEnum):
    """What a node pretends to be; sim-* nodes get stub tools before Ansible runs (llmrack/lab/data/sim)."""

    cpu = "cpu"
    sim_a100 = "sim-a100"
    sim_ascend = "sim-ascend"


GROUP_OF_PROFILE = {Profile.cpu: CPU_GROUP, Profile.sim_a100: NVIDIA_GROUP, Profile.sim_ascend: ASCEND_GROUP}
# The catalog part each simulated board stands for (llmrack/lab/data/sim/hardware/<profile>.json): what the
# validation suite judges the node against, as `llmrack_accelerator` does for a rack's host.
ACCELERATOR_OF_PROFILE = {Profile.sim_a100: "a100-80g", Profile.sim_ascend: "ascend-910b"}


class NodeState(BaseModel):
    name: str
    container: str
    profile: Profile
    ssh_port: int
    http_port: int
    prometheus_port: int | None = None
    monitoring: bool = False
    gateway_port: int | None = None  # node1 runs the gateway (HAProxy): the rack's one endpoint
    address: str | None = None  # on the lab network, as podman reports it after boot (the gateway's backend address)
    interface: str | None = None  # the lab network's interface inside the node (the collectives' socket interface)
    # --- monitoring credentials: "user:password" Prometheus asks for (the lab's vault has the password too) ---
    prometheus_credentials: str | None = None

    @property
    def gateway_url(self) -> str | None:
        # TLS only (the gateway role); clients verify it against the rack CA (LabState.rack_ca).
        return f"https://127.0.0.1:{self.gateway_port}" if self.gateway_port else None

    @property
    def serving_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def prometheus_url(self) -> str | None:
        """With the credentials Prometheus asks for (httpx sends a URL's user and password): what the lab's tools
        and tests read it at."""
        if not self.prometheus_port:
            return None
        auth = f"{self.prometheus_credentials}@" if self.prometheus_credentials else ""
        return f"http://{auth}127.0.0.1:{self.prometheus_port}"

    @property
    def prometheus_address(self) -> str | None:
        """Without credentials: what the lab prints and writes to its inventory."""
        return f"http://127.0.0.1:{self.prometheus_port}" if self.prometheus_port else None


class LabState(BaseModel):
    lab_dir: Path
    prefix: str
    network: str
    image: str
    nodes: list[NodeState] = Field(default_factory=list)
    last_run: dict[str, dict[str, int]] = Field(default_factory=dict)
    host_address: str | None = None  # the host's side of the lab network: the firewall's admin network

    @property
    def inventory(self) -> Path:
        return self.lab_dir / "inventory" / "hosts.yml"

    @property
    def ansible_cfg(self) -> Path:
        return self.lab_dir / "ansible.cfg"

    @property
    def ssh_key(self) -> Path:
        return self.lab_dir / "ssh" / "id_ed25519"

    @property
    def rack_ca(self) -> Path:
        """The rack CA's certificate, written here by the gateway play: what clients pass as --cacert."""
        return self.lab_dir / "rack-ca.crt"

    @property
    def monitoring_node(self) -> NodeState | None:
        return next((n for n in self.nodes if n.monitoring), None)

    @property
    def gateway_url(self) -> str | None:
        return next((n.gateway_url for n in self.nodes if n.gateway_url), None)


def state_file(lab_dir: Path) -> Path:
    return lab_dir / "state.json"


def prefix_for(lab_dir: Path) -> str:
    """Container names unique per lab directory, so a test lab never touches a user's lab."""
    digest = hashlib.sha256(str(lab_dir.resolve()).encode()).hexdigest()[:6]
    return f"llmrack-lab-{digest}"


def load(lab_dir: Path) -> LabState | None:
    path = state_file(lab_dir)
    if not path.exists():
        return None
    return LabState.model_validate(json.loads(path.read_text()))


def save(state: LabState) -> None:
    state.lab_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_file(state.lab_dir).with_suffix(".tmp")
    # Owner only: the state holds the monitoring password (NodeState.prometheus_credentials).
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(state.model_dump_json(indent=2))
    tmp.replace(state_file(state.lab_dir))
