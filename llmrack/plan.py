"""The capacity planner: from a model, a precision and an accelerator to a sized deployment.

Everything here is arithmetic over the catalogs (llmrack.catalog) and the architecture
(llmrack.arch); the assumptions are module constants with the reason for their value, and
docs/planning.md explains the model. No figure is measured here: bounds are bounds.

Memory per device  = weights / (TP x PP) + runtime overhead + activation workspace + KV cache + headroom,
                     all within `memory_utilization` x device memory (vLLM's --gpu-memory-utilization);
                     the headroom (default 20 %) is kept unused for growth.
Decode upper bound = batch / max(bytes read per step / HBM bandwidth, FLOPs per step / peak FLOPS).
Prefill lower bound = prompt FLOPs / (TP x peak FLOPS x MFU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pydantic import BaseModel

from llmrack.arch import ModelArch
from llmrack.catalog import GIB, Accelerator, Interconnect, accelerators
from llmrack.dtypes import KV_BYTES, WEIGHT_BYTES, KVCacheDType, WeightsDType, resolve_kv_dtype
from llmrack.errors import DoesNotFitError, UsageError

# Memory the serving process needs outside weights and KV cache on every device: CUDA/CANN context,
# cuBLAS workspaces, CUDA graphs and allocator slack. vLLM's start-up profiling reports 1-2 GiB of
# such "non-torch" and graph memory per GPU on A100/H100; we take 2 GiB, plus NCCL/HCCL buffers when
# devices talk to each other.
RUNTIME_OVERHEAD_BYTES = 2 * GIB
COLLECTIVE_BUFFERS_BYTES = GIB // 2
# Prefill is chunked (vLLM's max_num_batched_tokens): the activation workspace scales with this chunk.
PREFILL_CHUNK_TOKENS = 8192
ACTIVATION_BYTES = 2  # activations stay in bf16/fp16 whatever the weight format
LOGITS_BYTES = 4  # sampling works on fp32 logits, one row per running sequence
DEFAULT_MFU = 0.5  # a well-tuned prefill reaches 40-60 % of peak on large GEMMs
DEFAULT_MEMORY_UTILIZATION = 0.90
DEFAULT_AMORTIZATION_YEARS = 3.0
DEFAULT_MAX_NODES = 16
# The DeepSeek private-deployment selection guide (2025-09-15) advises keeping 20 % of the hardware in reserve for
# growth: the plan holds that share of usable memory and of the throughput target unused.
DEFAULT_HEADROOM = 0.2
HOURS_PER_YEAR = 24 * 365
# Tensor parallel degrees worth running: collectives are tuned for powers of two within a node.
TP_CANDIDATES = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class PlanRequest:
    model_name: str
    arch: ModelArch
    context: int
    concurrency: int = 1
    weights_dtype: WeightsDType = WeightsDType.bf16
    kv_cache_dtype: KVCacheDType = KVCacheDType.auto
    replicas: int = 1
    tensor_parallel: int | None = None  # None: choose the smallest that fits
    pipeline_parallel: int | None = None  # None: choose; a number: exactly that many stages (nodes) per replica
    memory_utilization: float = DEFAULT_MEMORY_UTILIZATION
    max_nodes: int = DEFAULT_MAX_NODES
    prompt_tokens: int | None = None  # for the prefill bound; default: the whole context
    mfu: float = DEFAULT_MFU
    amortization_years: float = DEFAULT_AMORTIZATION_YEARS
    prices_usd: dict[str, float] = field(default_factory=dict)  # overrides of catalog list prices
    headroom: float = DEFAULT_HEADROOM  # share of usable memory and of the throughput target kept unused
    target_tokens_per_s: float | None = None  # decode throughput the deployment must deliver, all replicas

    def __post_init__(self) -> None:
        checks = [
            (self.context >= 1, f"context must be at least 1 token, got {self.context}"),
            (self.concurrency >= 1, f"concurrency must be at least 1, got {self.concurrency}"),
            (self.replicas >= 1, f"replicas must be at least 1, got {self.replicas}"),
            (0.1 <= self.memory_utilization <= 0.99,
             f"memory utilization must be between 0.1 and 0.99, got {self.memory_utilization}"),
            (0.01 <= self.mfu <= 1.0, f"MFU must be between 0.01 and 1, got {self.mfu}"),
            (self.max_nodes >= 1, f"max nodes must be at least 1, got {self.max_nodes}"),
            (self.tensor_parallel is None or self.tensor_parallel >= 1,
             f"tensor parallel must be 'auto' or at least 1, got {self.tensor_parallel}"),
            (self.pipeline_parallel is None or self.pipeline_parallel >= 1,
             f"pipeline parallel must be 'auto' or at least 1, got {self.pipeline_parallel}"),
            (0 <= self.headroom <= 0.9, f"headroom must be between 0 and 0.9, got {self.headroom}"),
            (self.target_tokens_per_s is None or self.target_tokens_per_s > 0,
             f"target tokens/s must be positive, got {self.target_tokens_per_s}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        for name, price in self.prices_usd.items():
            if price <= 0:
                raise UsageError(f"price for {name} must be positive, got {price}")


class MemoryPerDevice(BaseModel):
    usable_bytes: int
    weights_bytes: int
    runtime_overhead_bytes: int
    activation_workspace_bytes: int
    kv_cache_budget_bytes: int
    headroom_bytes: int = 0  # kept unused (0 when the plan only fits by eating it)


class Cost(BaseModel):
    price_usd_per_accelerator: float
    capital_usd: float
    usd_per_hour: float
    usd_per_million_tokens: float | None


class ModelSummary(BaseModel):
    name: str
    model_type: str
    params: int
    active_params: int
    layers: int
    attention_heads: int
    kv_heads: int
    max_position_embeddings: int


class AcceleratorSummary(BaseModel):
    name: str
    product: str
    vendor: str
    memory_gib: float
    devices_per_node: int
    interconnect: str
    uncertain: list[str]


class Plan(BaseModel):
    model: ModelSummary
    accelerator: AcceleratorSummary
    weights_dtype: WeightsDType
    kv_cache_dtype: KVCacheDType
    context: int
    concurrency: int
    replicas: int
    weights_bytes: int
    kv_cache_bytes_per_token: int
    kv_cache_bytes: int  # what `concurrency` sequences at `context` need, per replica
    count: int  # accelerators in total, all replicas
    count_per_replica: int
    tensor_parallel: int
    pipeline_parallel: int
    nodes: int
    nodes_per_replica: int  # a replica is this many nodes: one leader (rank 0) and nodes_per_replica - 1 workers
    layout_reason: str  # why this layout: TP within a node, PP across nodes
    fits: bool
    memory_per_device: MemoryPerDevice
    max_concurrent_sequences: int  # per replica, at `context`
    decode_tokens_per_s_upper_bound: float  # all replicas, at min(concurrency, max_concurrent_sequences)
    decode_tokens_per_s_per_sequence_upper_bound: float
    prefill_seconds_lower_bound: float
    prompt_tokens: int
    mfu: float
    cost: Cost
    headroom: float  # the share asked to be kept unused
    within_headroom: bool  # False: it only fits (or meets the target) by eating the headroom
    target_tokens_per_s: float | None
    decode_tokens_per_s_within_headroom: float  # the decode bound with the headroom kept unused
    warnings: list[str]
    reason: str | None = None  # why it does not fit, when fits is false


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    tp: int
    pp: int

    @property
    def devices(self) -> int:
        return self.tp * self.pp


def _weights_bytes(arch: ModelArch, dtype: WeightsDType) -> int:
    return int(arch.params * WEIGHT_BYTES[dtype])


def _kv_bytes_per_token(arch: ModelArch, kv: KVCacheDType) -> int:
    return int(arch.kv_cache_elements_per_token() * KV_BYTES[kv])


def _activation_workspace(arch: ModelArch, tp: int, context: int, sequences: int) -> int:
    """Peak activations of one prefill chunk plus the fp32 logits of every running sequence."""
    tokens = min(context, PREFILL_CHUNK_TOKENS)
    mlp_width = arch.intermediate_size
    if arch.moe is not None:
        routed = arch.moe.experts_per_token * arch.moe.expert_intermediate_size
        mlp_width = max(mlp_width if arch.moe.first_dense_layers else 0, routed)
    q_kv = (arch.num_attention_heads + 2 * arch.num_kv_heads) * arch.head_dim
    per_token = 4 * arch.hidden_size + (2 * mlp_width + q_kv) / tp  # residual, norms, MLP in, QKV
    return int(tokens * per_token * ACTIVATION_BYTES + sequences * arch.vocab_size * LOGITS_BYTES / tp)


def _memory(req: PlanRequest, acc: Accelerator, layout: _Layout, kv: KVCacheDType,
            keep_headroom: bool = True) -> MemoryPerDevice:
    usable = int(acc.memory_bytes * req.memory_utilization)
    weights = math.ceil(_weights_bytes(req.arch, req.weights_dtype) / layout.devices)
    overhead = RUNTIME_OVERHEAD_BYTES + (COLLECTIVE_BUFFERS_BYTES if layout.devices > 1 else 0)
    workspace = _activation_workspace(req.arch, layout.tp, req.context, req.concurrency)
    reserve = int(usable * req.headroom) if keep_headroom else 0
    return MemoryPerDevice(
        usable_bytes=usable,
        weights_bytes=weights,
        runtime_overhead_bytes=overhead,
        activation_workspace_bytes=workspace,
        kv_cache_budget_bytes=usable - reserve - weights - overhead - workspace,
        headroom_bytes=reserve,
    )


def _kv_per_token_per_device(req: PlanRequest, layout: _Layout, kv: KVCacheDType) -> float:
    shards = req.arch.kv_cache_shards(layout.tp)
    return _kv_bytes_per_token(req.arch, kv) / shards / layout.pp


def _max_sequences(req: PlanRequest, mem: MemoryPerDevice, layout: _Layout, kv: KVCacheDType) -> int:
    if mem.kv_cache_budget_bytes <= 0:
        return 0
    return int(mem.kv_cache_budget_bytes // (_kv_per_token_per_device(req, layout, kv) * req.context))


def _layouts(req: PlanRequest, acc: Accelerator) -> list[_Layout]:
    """Candidate layouts, smallest first: TP within a node, then pipeline stages across nodes.

    Why this order: a tensor-parallel all-reduce runs twice per layer per token, so TP stays on the node's
    NVLink/HCCS; a pipeline stage hands one activation per micro-batch to the next node, which the
    inter-node network carries well. One stage per node, each node's devices one TP group."""
    arch = req.arch
    tps = [req.tensor_parallel] if req.tensor_parallel else [t for t in TP_CANDIDATES if t <= acc.devices_per_node]
    valid_tps = [t for t in tps if arch.tensor_parallel_problem(t) is None and t <= acc.devices_per_node]
    stages = range(2, min(req.max_nodes, arch.num_layers) + 1)
    if req.pipeline_parallel is not None:
        if req.pipeline_parallel > 1:
            # Asked for: every TP degree may take it, not only the widest.
            return sorted((_Layout(t, req.pipeline_parallel) for t in valid_tps
                           if req.pipeline_parallel <= min(req.max_nodes, arch.num_layers)),
                          key=lambda lay: (lay.devices, lay.pp))
        return [_Layout(t, 1) for t in valid_tps]
    out = [_Layout(t, 1) for t in valid_tps]
    if valid_tps:
        widest = max(valid_tps)
        out += [_Layout(widest, pp) for pp in stages]
    return sorted(out, key=lambda lay: (lay.devices, lay.pp))


def _nodes_per_replica(acc: Accelerator, layout: _Layout) -> int:
    if layout.pp == 1:
        return math.ceil(layout.tp / acc.devices_per_node)
    return layout.pp  # one pipeline stage per node


def _layout_reason(req: PlanRequest, acc: Accelerator, layout: _Layout) -> str:
    tp = (f"TP {layout.tp} within one node ({acc.interconnect.value}): its all-reduces run twice per layer per "
          "token") if layout.tp > 1 else "TP 1"
    if layout.pp == 1:
        return f"{tp}; one node per replica"
    workers = "rank 1 is" if layout.pp == 2 else f"ranks 1-{layout.pp - 1} are"
    stages = "asked for (serving.pipeline_parallel)" if req.pipeline_parallel else "the weights and KV cache " \
        f"need more than one {acc.name} node"
    return (f"{tp}; PP {layout.pp} across {layout.pp} nodes, one stage of ~{math.ceil(req.arch.num_layers / layout.pp)}"
            f" layers per node ({stages}): only one activation per micro-batch crosses the network. A replica is "
            f"{layout.pp} nodes: rank 0 leads (API server), {workers} headless")


def _peak_flops(acc: Accelerator, dtype: WeightsDType) -> float:
    if dtype is WeightsDType.fp8 and acc.fp8_tflops:
        return acc.fp8_tflops * 1e12
    return acc.bf16_tflops * 1e12  # weight-only formats dequantise to bf16 for the matmul


def _decode_step_seconds(req: PlanRequest, acc: Accelerator, layout: _Layout, kv: KVCacheDType, batch: int) -> float:
    """One decode step for `batch` sequences: bounded by reading memory or by compute, whichever is slower.

    Pipeline stages run one after another for a batch; overlap of micro-batches is not credited.
    Tensor-parallel communication is not charged either: this is an upper bound on speed.
    """
    arch = req.arch
    weight_bytes = _weights_bytes(arch, req.weights_dtype)
    if arch.moe is not None:
        # Each token visits k of E experts per layer; a batch touches 1-(1-k/E)^batch of them.
        touched = 1 - (1 - arch.moe.experts_per_token / arch.moe.num_experts) ** batch
        expert_bytes = arch.routed_expert_params * WEIGHT_BYTES[req.weights_dtype]
        weight_bytes = int(weight_bytes - expert_bytes * (1 - touched))
    kv_read = batch * req.context * _kv_bytes_per_token(arch, kv) / arch.kv_cache_shards(layout.tp)
    t_memory = (weight_bytes / layout.tp + kv_read) / (acc.hbm_gbps * 1e9)
    flops = batch * (arch.flops_per_token + arch.attention_flops_per_token(req.context))
    t_compute = flops / (layout.tp * _peak_flops(acc, req.weights_dtype))
    return max(t_memory, t_compute)


def _prefill_seconds(req: PlanRequest, acc: Accelerator, layout: _Layout, prompt: int) -> float:
    arch = req.arch
    # Causal attention: token i attends to i earlier tokens, on average prompt/2.
    flops = prompt * (arch.flops_per_token + arch.attention_flops_per_token(prompt) / 2)
    return flops / (layout.tp * _peak_flops(acc, req.weights_dtype) * req.mfu)


def _nodes(acc: Accelerator, layout: _Layout, replicas: int) -> int:
    if layout.pp == 1:
        return math.ceil(replicas * layout.tp / acc.devices_per_node)
    return replicas * layout.pp


def _headroom_warnings(req: PlanRequest, acc: Accelerator, layout: _Layout, kv: KVCacheDType, keep: bool,
                       decode_total: float, per_replica: float) -> list[str]:
    out: list[str] = []
    share = f"{req.headroom:.0%}"
    if not keep:
        mem = _memory(req, acc, layout, kv, keep_headroom=True)
        need = _kv_per_token_per_device(req, layout, kv) * req.context * req.concurrency / GIB
        out.append(
            f"fits only by eating the {share} headroom: {req.concurrency} sequences of {req.context} tokens need "
            f"{need:.1f} GiB of KV cache per device, {max(mem.kv_cache_budget_bytes, 0) / GIB:.1f} GiB are left "
            f"when {mem.headroom_bytes / GIB:.1f} GiB are kept unused; allow more nodes, use a larger part, "
            "shorten the context or lower the concurrency to keep it"
        )
    target = req.target_tokens_per_s
    if target is not None and decode_total * (1 - req.headroom) < target:
        needed = math.ceil(target / (per_replica * (1 - req.headroom))) if per_replica else 0
        if decode_total >= target:
            out.append(f"meets the {target:g} tok/s target only by eating the {share} headroom (decode upper bound "
                       f"{decode_total:,.0f} tok/s): {needed} replicas keep it")
        else:
            out.append(f"the decode upper bound {decode_total:,.0f} tok/s is below the {target:g} tok/s target: "
                       f"{needed} replicas reach it with the {share} headroom kept")
    return out


def _warnings(req: PlanRequest, acc: Accelerator, layout: _Layout, kv: KVCacheDType, max_seqs: int) -> list[str]:
    arch = req.arch
    out: list[str] = []
    if req.weights_dtype is WeightsDType.fp8 and not acc.fp8:
        out.append(
            f"{acc.name} has no FP8 tensor cores: FP8 weights run weight-only (dequantised to BF16), "
            "saving memory but not compute; INT8 or BF16 are the native choices"
        )
    if kv is KVCacheDType.fp8 and not acc.fp8:
        out.append(f"{acc.name} has no FP8 units: an FP8 KV cache is converted on every read, costing decode speed")
    if acc.interconnect is Interconnect.pcie and layout.tp > 2:
        out.append(
            f"tensor parallel {layout.tp} over PCIe ({acc.name} has no NVLink, {acc.interconnect_gbps:g} GB/s): "
            "every layer's all-reduce crosses PCIe; prefer TP <= 2 with more replicas or pipeline stages"
        )
    if 0 < max_seqs < req.concurrency:
        out.append(
            f"at context {req.context} the KV cache holds only {max_seqs} sequences per replica, fewer than the "
            f"{req.concurrency} asked: lower the context, add replicas, use an FP8 KV cache or a larger part"
        )
    if req.context > arch.max_position_embeddings:
        out.append(
            f"context {req.context} exceeds the model's max_position_embeddings {arch.max_position_embeddings}"
        )
    if layout.pp > 1:
        out.append(
            f"pipeline parallel over {layout.pp} nodes: needs a fast inter-node fabric (InfiniBand/RoCE); "
            "decode speed is not credited for micro-batch overlap"
        )
    if arch.mla is not None and layout.tp > 1:
        out.append("MLA's latent KV cache is replicated on every tensor-parallel rank (it has no heads to split)")
    if note := acc.uncertainty_note():
        out.append(note)
    return out


def _build(req: PlanRequest, acc: Accelerator, layout: _Layout, fits: bool, reason: str | None,
           keep_headroom: bool = True) -> Plan:
    arch = req.arch
    kv = resolve_kv_dtype(req.kv_cache_dtype, req.weights_dtype)
    mem = _memory(req, acc, layout, kv, keep_headroom)
    max_seqs = _max_sequences(req, mem, layout, kv)
    batch = max(1, min(req.concurrency, max_seqs))
    step = _decode_step_seconds(req, acc, layout, kv, batch)
    single = _decode_step_seconds(req, acc, layout, kv, 1)
    prompt = req.prompt_tokens or req.context
    decode_total = batch / step * req.replicas if fits else 0.0
    count = layout.devices * req.replicas
    price = req.prices_usd.get(acc.name, acc.price_usd)
    per_hour = count * price / (req.amortization_years * HOURS_PER_YEAR)
    headroom_notes = _headroom_warnings(req, acc, layout, kv, keep_headroom, decode_total,
                                        batch / step) if fits else []
    return Plan(
        model=ModelSummary(
            name=req.model_name,
            model_type=arch.model_type,
            params=arch.params,
            active_params=arch.active_params,
            layers=arch.num_layers,
            attention_heads=arch.num_attention_heads,
            kv_heads=arch.num_kv_heads,
            max_position_embeddings=arch.max_position_embeddings,
        ),
        accelerator=AcceleratorSummary(
            name=acc.name,
            product=acc.product,
            memory_gib=round(acc.memory_bytes / GIB, 1),
            vendor=acc.vendor.value,
            devices_per_node=acc.devices_per_node,
            interconnect=acc.interconnect.value,
            uncertain=acc.uncertain,
        ),
        weights_dtype=req.weights_dtype,
        kv_cache_dtype=kv,
        context=req.context,
        concurrency=req.concurrency,
        replicas=req.replicas,
        weights_bytes=_weights_bytes(arch, req.weights_dtype),
        kv_cache_bytes_per_token=_kv_bytes_per_token(arch, kv),
        kv_cache_bytes=_kv_bytes_per_token(arch, kv) * req.context * req.concurrency,
        count=count,
        count_per_replica=layout.devices,
        tensor_parallel=layout.tp,
        pipeline_parallel=layout.pp,
        nodes=_nodes(acc, layout, req.replicas),
        nodes_per_replica=_nodes_per_replica(acc, layout),
        layout_reason=_layout_reason(req, acc, layout),
        fits=fits,
        memory_per_device=mem,
        max_concurrent_sequences=max_seqs,
        decode_tokens_per_s_upper_bound=round(decode_total, 1),
        decode_tokens_per_s_per_sequence_upper_bound=round(1 / single, 1) if fits else 0.0,
        prefill_seconds_lower_bound=round(_prefill_seconds(req, acc, layout, prompt), 4),
        prompt_tokens=prompt,
        mfu=req.mfu,
        cost=Cost(
            price_usd_per_accelerator=price,
            capital_usd=count * price,
            usd_per_hour=round(per_hour, 3),
            usd_per_million_tokens=round(per_hour / (decode_total * 3600) * 1e6, 4) if decode_total else None,
        ),
        headroom=req.headroom,
        within_headroom=fits and not headroom_notes,
        target_tokens_per_s=req.target_tokens_per_s,
        decode_tokens_per_s_within_headroom=round(decode_total * (1 - req.headroom), 1),
        warnings=headroom_notes + (_warnings(req, acc, layout, kv, max_seqs) if fits else []),
        reason=reason,
    )


def _no_layout_reason(req: PlanRequest, acc: Accelerator) -> str:
    tps = [req.tensor_parallel] if req.tensor_parallel else [t for t in TP_CANDIDATES if t <= acc.devices_per_node]
    problems = [p for t in tps if (p := req.arch.tensor_parallel_problem(t))]
    if req.tensor_parallel and req.tensor_parallel > acc.devices_per_node:
        problems.append(
            f"tensor parallel {req.tensor_parallel} exceeds the {acc.devices_per_node} devices of one "
            f"{acc.name} node (tensor parallelism stays within a node; pipeline stages span nodes)"
        )
    if req.pipeline_parallel and req.pipeline_parallel > min(req.max_nodes, req.arch.num_layers):
        problems.append(
            f"pipeline parallel {req.pipeline_parallel} needs {req.pipeline_parallel} nodes (one stage each) and "
            f"{req.pipeline_parallel} layers, and there are {req.max_nodes} nodes and {req.arch.num_layers} layers"
        )
    return "; ".join(problems) or "no tensor parallel degree is possible"


def plan(req: PlanRequest, acc: Accelerator) -> Plan:
    """The smallest deployment of `req` on `acc`.

    Smallest means fewest accelerators per replica that hold the weights and `concurrency`
    sequences at `context` with the headroom kept unused; failing that, the smallest that holds them
    by eating the headroom (with a warning); failing that, the smallest that holds one sequence
    (with a warning). When nothing fits, the plan has fits=false and a reason.
    """
    layouts = _layouts(req, acc)
    if not layouts:
        return _build(req, acc, _Layout(req.tensor_parallel or 1, req.pipeline_parallel or 1), False,
                      _no_layout_reason(req, acc))
    kv = resolve_kv_dtype(req.kv_cache_dtype, req.weights_dtype)
    holding: dict[bool, list[_Layout]] = {True: [], False: []}
    for keep in (True, False):
        for layout in layouts:
            seqs = _max_sequences(req, _memory(req, acc, layout, kv, keep), layout, kv)
            if seqs >= req.concurrency:
                return _build(req, acc, layout, True, None, keep)
            if seqs >= 1:
                holding[keep].append(layout)
    for keep in (True, False):
        if holding[keep]:
            return _build(req, acc, holding[keep][0], True, None, keep)
    largest = layouts[-1]
    mem = _memory(req, acc, largest, kv, keep_headroom=False)
    gib = 1 / GIB
    tried = f"the largest layout tried (TP {largest.tp} x PP {largest.pp} = {largest.devices} x {acc.name}, " \
            f"max nodes {req.max_nodes})"
    fixed = (f"{mem.weights_bytes * gib:.1f} GiB of weights + {mem.runtime_overhead_bytes * gib:.1f} GiB runtime + "
             f"{mem.activation_workspace_bytes * gib:.1f} GiB activations per device")
    seq_gib = _kv_per_token_per_device(req, largest, kv) * req.context * gib
    one_seq = f"one sequence of {req.context} tokens needs {seq_gib:.2f} GiB"
    budget_gib = mem.kv_cache_budget_bytes * gib
    if budget_gib < 0:
        left = f"{fixed} exceed the {mem.usable_bytes * gib:.1f} GiB usable by {-budget_gib:.1f} GiB"
    else:
        left = f"{fixed} leave {budget_gib:.2f} GiB for the KV cache, and {one_seq}"
    reason = f"on {tried}, {left}: use a smaller weight format, a shorter context, or allow more nodes"
    return _build(req, acc, largest, False, reason, keep_headroom=False)


def plan_or_raise(req: PlanRequest, acc: Accelerator) -> Plan:
    """As plan(), but a deployment that does not fit is an error (for tools that must act on a plan)."""
    result = plan(req, acc)
    if not result.fits:
        raise DoesNotFitError(f"{req.model_name} does not fit on {acc.name}: {result.reason}")
    return result


def compare(req: PlanRequest, accelerator_names: list[str] | None = None) -> list[Plan]:
    """Plan on every catalog accelerator, cheapest delivered token first; those that do not fit last."""
    catalog = accelerators()
    names = accelerator_names or list(catalog)
    plans = [plan(req, catalog[n]) for n in names]

    def key(p: Plan) -> tuple[int, float]:
        cost = p.cost.usd_per_million_tokens
        return (0, cost) if p.fits and cost is not None else (1, 0.0)

    return sorted(plans, key=key)
