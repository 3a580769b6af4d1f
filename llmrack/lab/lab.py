"""`llmrack lab up/status/down`: the lab's steps, independent of the CLI (which only shows progress)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrack.batch import wheelhouse
from llmrack.errors import LlmrackError, UsageError
from llmrack.images import build
from llmrack.lab import image, inventory, nodes, registry, serving_artifacts, sim
from llmrack.lab.podman import Podman
from llmrack.lab.runner import ansible_bin, run_playbook
from llmrack.lab.state import LabState, NodeState, Profile, load, prefix_for, save
from llmrack.scan.gate import RESULTS_SUBDIR, ScanResult, ScanStatus, gate_decision, record_result
from llmrack.spec import parse_spec

DEFAULT_LAB_DIR = Path(".lab")
MAX_NODES = 16


@dataclass
class UpResult:
    state: LabState
    rc: int
    recap: dict[str, dict[str, int]]
    log: Path | None
    seconds: dict[str, float] = field(default_factory=dict)
    gate: str | None = None  # the scan gate's verdict on the serving image

    @property
    def failed_hosts(self) -> list[str]:
        return sorted(h for h, c in self.recap.items() if c.get("failed", 0) or c.get("unreachable", 0))

    @property
    def failed_tasks(self) -> list[str]:
        """The log's `fatal:`/`failed:` lines, the failed tasks' messages (the log goes with the lab's directory)."""
        if self.log is None or not self.log.exists():
            return []
        return [line.strip() for line in self.log.read_text(errors="replace").splitlines()
                if line.lstrip().startswith(("fatal:", "failed:"))]

    @property
    def unreached_hosts(self) -> list[str]:
        """Nodes a failed run never got to (a `serial` play stops at its first failed node). A playbook that
        targets only some groups leaves the rest out of the recap on success too: those are not listed."""
        return [n.name for n in self.state.nodes if n.name not in self.recap] if self.rc != 0 else []


Step = Callable[[str], None]


def _profiles_for(count: int, profiles: list[Profile]) -> list[Profile]:
    """Node i gets the i-th profile; the last one given fills the rest (default: all cpu)."""
    if not profiles:
        profiles = [Profile.cpu]
    if len(profiles) > count:
        raise UsageError(f"{len(profiles)} profiles given for {count} nodes; give at most one per node")
    return [profiles[min(i, len(profiles) - 1)] for i in range(count)]


def _plan_nodes(lab_dir: Path, count: int, profiles: list[Profile], existing: LabState | None) -> LabState:
    if not 1 <= count <= MAX_NODES:
        raise UsageError(f"--nodes must be from 1 to {MAX_NODES}, got {count}")
    prefix = prefix_for(lab_dir)
    state = existing or LabState(lab_dir=lab_dir, prefix=prefix, network=prefix, image=image.IMAGE)
    if len(state.nodes) > count:
        raise UsageError(
            f"the lab in {lab_dir} has {len(state.nodes)} nodes; `llmrack lab down` first to start with fewer"
        )
    wanted = _profiles_for(count, profiles)
    for node, profile in zip(state.nodes, wanted, strict=False):
        if profiles and node.profile is not profile:
            raise UsageError(f"{node.name} exists with profile {node.profile.value}; `llmrack lab down` to change it")
    taken = {p for n in state.nodes for p in (n.ssh_port, n.http_port, n.prometheus_port, n.gateway_port) if p}
    for i in range(len(state.nodes), count):
        name = f"node{i + 1}"
        first = i == 0
        state.nodes.append(
            NodeState(
                name=name, container=f"{prefix}-{name}", profile=wanted[i],
                ssh_port=nodes.free_port(taken), http_port=nodes.free_port(taken),
                prometheus_port=nodes.free_port(taken) if first else None, monitoring=first,
                gateway_port=nodes.free_port(taken) if first else None,
            )
        )
    return state


def up(lab_dir: Path, count: int, profiles: list[Profile], *, provision: bool = True, serving: bool = True,
       step: Step = lambda _m: None, on_task: Step = lambda _t: None, engine: str = "llmrack",
       tensor_parallel: int | None = None, pipeline_parallel: int | None = None) -> UpResult:
    """`engine`: llmrack (the cpu image) or vllm (the cpu-vllm image; the spec's serving.engine: vllm).
    `tensor_parallel`: the spec's serving.tensor_parallel (None: auto, from the plan); vLLM runs that many ranks
    on each node's cores. `pipeline_parallel`: the spec's serving.pipeline_parallel; more than 1 makes a replica of
    that many nodes (one stage each) serving a tiny DeepSeek-V3 (docs/multinode.md)."""
    lab_dir = lab_dir.resolve()
    _spec_engine(engine)
    tp = _tensor_parallel(engine, tensor_parallel)
    # --- replicas across nodes ---
    pp = _pipeline_parallel(engine, pipeline_parallel, count)
    arch = "deepseek_v3" if pp != "auto" and int(pp) > 1 else "qwen2"
    # --- end replicas across nodes ---
    timings: dict[str, float] = {}
    podman = Podman(lab_dir)
    t = time.monotonic()
    step("node image")
    image.build_image(podman, lab_dir / "work", log=step)
    timings["image"] = time.monotonic() - t

    state = _plan_nodes(lab_dir, count, profiles, load(lab_dir))
    save(state)
    inventory.ensure_ssh_key(state)
    mirror = lab_dir / "mirror"
    step("mirror: simulated accelerator installers and the serving image")
    t = time.monotonic()
    sim.build_mirror(mirror)
    artifacts = serving_artifacts.prepare(lab_dir, mirror, log=step, engine=engine,
                                          arch=arch) if serving else None
    # --- batch service: llmrack's wheel and the wheels of its batch extra, for the batch role on the gateway ---
    if serving:
        step("mirror: llmrack's wheel and the batch service's wheels")
        wheelhouse.wheelhouse(mirror / inventory.BATCH_WHEELS, cache=serving_artifacts.cache_dir(lab_dir) / "wheels")
    # --- end batch service ---
    timings["artifacts"] = time.monotonic() - t

    t = time.monotonic()
    nodes.ensure_network(podman, state.network)
    state.host_address = nodes.host_side_address(podman, state)  # firewall: the admin network
    if artifacts is not None:
        step("registry: docker-registry on the lab network; the model pushed to it")
        artifacts = registry.provide_model(podman, state, artifacts)
    for node in state.nodes:
        step(f"booting {node.name} ({node.profile.value})")
        nodes.start_node(podman, state, node, mirror)
    for node in state.nodes:
        nodes.wait_for_ssh(state, node)
        nodes.install_sim_hardware(podman, node)
        node.address = nodes.address_of(podman, state, node)
        node.interface = nodes.interface_of(podman, node)
    timings["boot"] = time.monotonic() - t

    gate = None
    if artifacts is not None:
        gate = _scan_gate(state, artifacts, step, engine, tp, pp)
        step("registry: the serving image pushed to it by digest")
        t = time.monotonic()
        artifacts = registry.provide_image(podman, state, artifacts)
        timings["image push"] = time.monotonic() - t
    inventory.write_inventory(
        state, serving_artifacts.deployment(artifacts, engine=_spec_engine(engine), tensor_parallel=tp,
                                            pipeline_parallel=pp),
        artifacts.ansible_vars if artifacts else None
    )
    inventory.write_vault(state, ansible_bin(), serving_artifacts.api_key(lab_dir))
    for node in state.nodes:  # monitoring credentials: the lab's tools read Prometheus with them
        node.prometheus_credentials = inventory.monitoring_credentials(state) if node.prometheus_port else None
    inventory.write_ansible_cfg(state)
    save(state)
    if not provision:
        return UpResult(state, 0, {}, None, timings, gate)
    step("ansible-playbook site.yml")
    # Until the serving image and model can be built, everything else is still provisioned.
    extra = [] if artifacts else ["--skip-tags", "serving"]
    rc, recap, log, secs = run_playbook(
        inventory.ANSIBLE_DIR / "playbooks" / "site.yml", state.ansible_cfg, lab_dir / "logs", extra, on_task=on_task
    )
    timings["site.yml"] = secs
    state.last_run = recap
    save(state)
    return UpResult(state, rc, recap, log, timings, gate)


def _spec_engine(engine: str) -> str:
    """The spec's serving.engine for the lab's image: the llmrack image runs whatever `auto` picks (one device)."""
    if engine not in serving_artifacts.VARIANT_OF_ENGINE:
        raise UsageError(f"--engine {engine!r}: choose one of {', '.join(serving_artifacts.VARIANT_OF_ENGINE)}")
    return "vllm" if engine == "vllm" else "auto"


def _tensor_parallel(engine: str, tensor_parallel: int | None) -> int | str:
    if tensor_parallel is None:
        return "auto"
    if tensor_parallel < 1:
        raise UsageError(f"--tensor-parallel must be 1 or more, got {tensor_parallel}")
    if tensor_parallel > 1 and engine != "vllm":
        raise UsageError(f"--tensor-parallel {tensor_parallel}: llmrack's engine serves one device; "
                         "add --engine vllm (vLLM runs one rank per core set of the node)")
    return tensor_parallel


# --- replicas across nodes ---
def _pipeline_parallel(engine: str, pipeline_parallel: int | None, count: int) -> int | str:
    """--pipeline-parallel: the spec's serving.pipeline_parallel; the nodes make whole replicas of that many."""
    if pipeline_parallel is None:
        return "auto"
    if pipeline_parallel < 1:
        raise UsageError(f"--pipeline-parallel must be 1 or more, got {pipeline_parallel}")
    if pipeline_parallel > 1 and engine != "vllm":
        raise UsageError(f"--pipeline-parallel {pipeline_parallel}: a replica across nodes runs vLLM; "
                         "add --engine vllm")
    if count % pipeline_parallel:
        raise UsageError(f"--pipeline-parallel {pipeline_parallel} makes replicas of {pipeline_parallel} nodes and "
                         f"--nodes is {count}: give --nodes a multiple of {pipeline_parallel}")
    return pipeline_parallel
# --- end replicas across nodes ---


def _scan_gate(state: LabState, artifacts: serving_artifacts.ServingArtifacts, step: Step,
               engine: str = "llmrack", tensor_parallel: int | str = "auto",
               pipeline_parallel: int | str = "auto") -> str:
    """The lab has no Clair to scan with: file the image as unscanned under its digest (as a rack's rollout
    records every verdict) and ask the same gate the serving role asks. The lab's spec (environment lab)
    allows unscanned images, so this passes, loudly; a prod spec would stop here."""
    results = state.inventory.parent / RESULTS_SUBDIR
    record_result(results, ScanResult(digest=artifacts.digest, status=ScanStatus.unscanned,
                                      scanned_at=dt.datetime.now(dt.UTC), reason="no Clair endpoint in the lab"),
                  keep_existing_verdict=True)
    spec = parse_spec(serving_artifacts.deployment(artifacts, engine=_spec_engine(engine),
                                                   tensor_parallel=tensor_parallel,
                                                   pipeline_parallel=pipeline_parallel), "the lab's deployment spec")
    ok, reason = gate_decision(artifacts.digest, results, spec.unscanned_images_allowed)
    step(f"scan gate: {reason}")
    if not ok:
        raise LlmrackError(f"scan gate refused the serving image: {reason}")
    return reason


def validate(state: LabState, report_dir: Path, level: str = "quick") -> int:
    """Run `llmrack validate` against the lab's inventory (its own process: the suite imports Ansible,
    which must not share a process with torch); its summary goes to the terminal. Returns its exit code."""
    cmd = [sys.executable, "-m", "llmrack", "validate", "--inventory", str(state.inventory), "--level", level,
           "--report", str(report_dir)]
    env = {**os.environ, "ANSIBLE_CONFIG": str(state.ansible_cfg),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(cmd, env=env, check=False).returncode


def provision(lab_dir: Path, playbook: str = "site.yml", extra_args: list[str] | None = None,
              on_task: Step = lambda _t: None) -> UpResult:
    """Re-run a playbook against a running lab (what a second `lab up` does, without the boot checks)."""
    state = require(lab_dir)
    rc, recap, log, secs = run_playbook(
        inventory.ANSIBLE_DIR / "playbooks" / playbook, state.ansible_cfg, state.lab_dir / "logs",
        extra_args, on_task=on_task,
    )
    return UpResult(state, rc, recap, log, {playbook: secs})


def require(lab_dir: Path) -> LabState:
    state = load(lab_dir.resolve())
    if state is None:
        raise UsageError(f"no lab in {lab_dir} (start one with `llmrack lab up`)")
    return state


def status(lab_dir: Path) -> dict[str, Any]:
    state = require(lab_dir)
    podman = Podman(state.lab_dir)
    out_nodes = []
    for node in state.nodes:
        info = podman.inspect(node.container)
        out_nodes.append({
            "name": node.name,
            "profile": node.profile.value,
            "container": node.container,
            "running": bool(info and info["State"]["Running"]),
            "ssh": f"127.0.0.1:{node.ssh_port}",
            "serving_url": node.serving_url,
            "prometheus_url": node.prometheus_address,
            "last_run": state.last_run.get(node.name),
        })
    return {
        "lab_dir": str(state.lab_dir),
        "inventory": str(state.inventory),
        "ansible_cfg": str(state.ansible_cfg),
        "api_key_file": str(serving_artifacts.api_key_file(state.lab_dir)),
        "ssh_key": str(state.ssh_key),
        "gateway_url": state.gateway_url,
        "rack_ca": str(state.rack_ca),
        "monitoring_password_file": str(inventory.monitoring_password_file(state.lab_dir)),
        "nodes": out_nodes,
    }


@dataclass
class Leftovers:
    """What `down` keeps on purpose (caches the next `lab up` reuses), so it can say how to remove them."""
    images: list[str]  # podman images: the node image, the serving image and the Debian base it was built on
    dirs: list[Path]   # the serving archive + tiny model, and `llmrack image build`'s cache (base rootfs, wheels)

    def remove_command(self) -> str:
        parts = []
        if self.images:
            parts.append("podman image rm " + " ".join(self.images) + " && podman image prune -f")
        if self.dirs:
            parts.append("rm -rf " + " ".join(str(d) for d in self.dirs))
        return " && ".join(parts)


def down(lab_dir: Path) -> tuple[list[str], Leftovers]:
    """Remove the nodes, their network and the lab's state; keep the caches (and report them)."""
    lab_dir = lab_dir.resolve()
    state = load(lab_dir)
    podman = Podman(lab_dir)
    removed: list[str] = []
    if state is not None:
        removed = nodes.remove_all(podman, state)
    listed = podman.run("images", "--format", "{{.Repository}}:{{.Tag}}", check=False).split()
    shutil.rmtree(lab_dir, ignore_errors=True)
    ours = (image.IMAGE.rsplit(":", 1)[0], build.IMAGE_NAME, build.BASE_NAME)
    kept = sorted({ref for ref in listed if ref.rsplit(":", 1)[0] in ours})
    dirs = [d for d in (serving_artifacts.cache_dir(lab_dir), build.default_cache_dir()) if d.exists()]
    return removed, Leftovers(kept, dirs)


def load_state(lab_dir: Path) -> LabState | None:
    return load(lab_dir.resolve())
