"""The lab's registry: Debian's `docker-registry` (the reference OCI distribution registry) as the rack's
internal registry, holding the serving image (pulled by digest by containerd) and the model versions the serving
role pulls.

It runs in its own container on the lab network (the lab's node image, with the host's docker-registry binary
mounted read-only: installed by scripts/setup.sh), so nodes reach it at its lab-network address like a rack's
nodes reach their registry, and the host pushes to it through a port published on 127.0.0.1 only. Its storage
lives in the lab directory; `llmrack lab down` removes it with the nodes (same container label).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from llmrack.errors import LlmrackError
from llmrack.images import push as image_push
from llmrack.lab import nodes
from llmrack.lab.podman import Podman
from llmrack.lab.serving_artifacts import MODEL_NAME, ServingArtifacts
from llmrack.lab.state import LabState
from llmrack.models import transfer

BINARY = Path("/usr/bin/docker-registry")
PORT_ON_NETWORK = 5000
MODEL_REPOSITORY = f"models/{MODEL_NAME}"
IMAGE_REPOSITORY = "llmrack-serving"
CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: :{port}
"""


@dataclass(frozen=True)
class LabRegistry:
    container: str
    host_port: int  # on 127.0.0.1, for pushing from the host
    address: str  # IP on the lab network, as nodes reach it

    @property
    def push_base(self) -> str:
        return f"oci+http://127.0.0.1:{self.host_port}"

    @property
    def node_base(self) -> str:
        return f"oci+http://{self.address}:{PORT_ON_NETWORK}"

    @property
    def host(self) -> str:
        """host:port as nodes name it (containerd's hosts.toml directory, image references)."""
        return f"{self.address}:{PORT_ON_NETWORK}"


def _info_file(state: LabState) -> Path:
    return state.lab_dir / "registry" / "registry.json"


def start(podman: Podman, state: LabState, timeout: float = 30.0) -> LabRegistry:
    """Start the registry (or find it running) and wait until it answers /v2/."""
    if not BINARY.exists():
        raise LlmrackError(f"{BINARY} not found: the lab's registry is Debian's docker-registry",
                           hint="run scripts/setup.sh (or apt-get install docker-registry)")
    container = f"{state.prefix}-registry"
    root = state.lab_dir / "registry"
    info_file = _info_file(state)
    known = json.loads(info_file.read_text()) if info_file.exists() else {}
    running = podman.inspect(container)
    if running is not None and not running["State"]["Running"]:
        podman.run("start", container)
    if running is None:
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "config.yml").write_text(CONFIG.format(port=PORT_ON_NETWORK))
        port = nodes.free_port({n.ssh_port for n in state.nodes})
        podman.run(
            "run", "-d", "--runtime", "runc", "--name", container, "--network", state.network,
            "--ip", nodes.registry_address(podman, state),
            "-p", f"127.0.0.1:{port}:{PORT_ON_NETWORK}", "--label", f"llmrack.lab={state.prefix}",
            "-v", f"{BINARY}:/usr/local/bin/docker-registry:ro",
            "-v", f"{root / 'config.yml'}:/etc/docker/registry/config.yml:ro",
            "-v", f"{root / 'data'}:/var/lib/docker-registry",
            state.image, "/usr/local/bin/docker-registry", "serve", "/etc/docker/registry/config.yml",
        )
        known = {"host_port": port}
    inspected = podman.inspect(container) or {}
    address = inspected.get("NetworkSettings", {}).get("Networks", {}).get(state.network, {}).get("IPAddress", "")
    if not address:
        raise LlmrackError(f"{container} has no address on the lab network {state.network}")
    reg = LabRegistry(container, int(known["host_port"]), address)
    info_file.write_text(json.dumps({"host_port": reg.host_port, "address": address}))
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{reg.host_port}/v2/", timeout=2).status_code == 200:
                return reg
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.5)
    logs = podman.run("logs", "--tail", "20", container, check=False)
    raise LlmrackError(f"the lab's registry did not answer on 127.0.0.1:{reg.host_port} in {timeout:.0f} s: "
                       f"{last}\n{logs}")


def load(state: LabState) -> LabRegistry | None:
    """The registry of a running lab (for tests and benchmarks that push to it)."""
    info_file = _info_file(state)
    if not info_file.exists():
        return None
    known = json.loads(info_file.read_text())
    return LabRegistry(f"{state.prefix}-registry", int(known["host_port"]), known["address"])


def provide_model(podman: Podman, state: LabState, artifacts: ServingArtifacts) -> ServingArtifacts:
    """Start the registry and push the lab's model to it (`llmrack model push`: blobs it holds are not sent
    again); the serving role then pulls that version onto every node by its digest."""
    reg = start(podman, state)
    pushed = transfer.push(artifacts.model_dir, f"{reg.push_base}/{MODEL_REPOSITORY}:lab")
    return replace(artifacts, model_source=f"{reg.node_base}/{MODEL_REPOSITORY}", model_version=pushed.version)


def provide_image(podman: Podman, state: LabState, artifacts: ServingArtifacts) -> ServingArtifacts:
    """Push the serving image the scan gate passed to the registry under its digest (`llmrack image push`: layers
    the registry holds are not sent again); nodes then pull it by that digest, as a rack's nodes do."""
    reg = start(podman, state)
    push_image(reg, artifacts.archive)
    return replace(artifacts, image_repository=f"{reg.host}/{IMAGE_REPOSITORY}", registry_host=reg.host)


def push_image(reg: LabRegistry, archive: Path) -> str:
    """Push an image archive to the lab's registry from the host; returns its digest."""
    return image_push.push(archive, f"127.0.0.1:{reg.host_port}/{IMAGE_REPOSITORY}", plain_http=True).digest
