"""The planner: the deployment guide's sizing claims as computed facts, and the planner's rules."""

import pytest

from llmrack import catalog
from llmrack.dtypes import KVCacheDType, WeightsDType
from llmrack.errors import DoesNotFitError, UsageError
from llmrack.plan import PlanRequest, compare, plan, plan_or_raise


def request(model, **kw):
    kw.setdefault("context", 2048)
    return PlanRequest(model_name=model, arch=catalog.model(model).arch, **kw)


def on(model, acc, **kw):
    return plan(request(model, **kw), catalog.accelerator(acc))


# --- the deployment guide's claims --------------------------------------------------------------
def test_13b_fp16_fits_one_a100_80g():
    p = on("llama-2-13b", "a100-80g", weights_dtype=WeightsDType.fp16)
    assert p.fits and p.count == 1 and p.tensor_parallel == 1


def test_175b_fp16_needs_8_nvlink_a100_80g():
    p = on("opt-175b", "a100-80g", weights_dtype=WeightsDType.fp16)
    assert p.fits and p.count == 8 and p.tensor_parallel == 8 and p.pipeline_parallel == 1 and p.nodes == 1
    assert on("opt-175b", "a100-80g", weights_dtype=WeightsDType.fp16, tensor_parallel=4).pipeline_parallel > 1


def test_175b_fp16_does_not_fit_one_node_of_a100_40g():
    p = on("opt-175b", "a100-40g", weights_dtype=WeightsDType.fp16, max_nodes=1)
    assert not p.fits
    assert "weights" in p.reason
    spread = on("opt-175b", "a100-40g", weights_dtype=WeightsDType.fp16)
    assert spread.fits and spread.count == 16 and spread.nodes == 2  # it takes a second node


def test_175b_int8_fits_8_a100_40g():
    p = on("opt-175b", "a100-40g", weights_dtype=WeightsDType.int8, max_nodes=1)
    assert p.fits and p.count == 8 and p.nodes == 1


def test_int8_halves_weight_memory_against_fp16():
    fp16 = on("opt-175b", "a100-80g", weights_dtype=WeightsDType.fp16)
    int8 = on("opt-175b", "a100-80g", weights_dtype=WeightsDType.int8)
    assert int8.weights_bytes * 2 == pytest.approx(fp16.weights_bytes, rel=1e-9)


# --- rules ---------------------------------------------------------------------------------------
def test_smallest_layout_that_holds_the_concurrency_is_chosen():
    one = on("deepseek-r1-distill-qwen-32b", "a100-80g", context=8192, concurrency=2, headroom=0)
    many = on("deepseek-r1-distill-qwen-32b", "a100-80g", context=8192, concurrency=128)
    assert one.count == 1 and one.max_concurrent_sequences >= 2
    assert many.count > 1 and many.max_concurrent_sequences >= 128


def test_headroom_is_kept_unused_and_moves_to_a_larger_layout():
    """61 GiB of BF16 weights fit one A100-80G (72 GiB usable) only without the guide's 20 % reserve."""
    kept = on("deepseek-r1-distill-qwen-32b", "a100-80g", context=8192, concurrency=2)
    assert kept.headroom == 0.2 and kept.within_headroom and kept.count == 2
    mem = kept.memory_per_device
    assert mem.headroom_bytes == int(mem.usable_bytes * 0.2)
    assert mem.weights_bytes + mem.runtime_overhead_bytes + mem.activation_workspace_bytes + \
        mem.kv_cache_budget_bytes + mem.headroom_bytes == mem.usable_bytes
    assert kept.decode_tokens_per_s_within_headroom == pytest.approx(kept.decode_tokens_per_s_upper_bound * 0.8,
                                                                     abs=0.1)
    assert not any("headroom" in w for w in kept.warnings)


def test_fitting_only_by_eating_the_headroom_warns():
    eaten = on("deepseek-r1-distill-qwen-32b", "a100-80g", context=8192, concurrency=2, max_nodes=1,
               tensor_parallel=1)
    assert eaten.fits and eaten.count == 1 and not eaten.within_headroom
    assert eaten.memory_per_device.headroom_bytes == 0
    assert any(w.startswith("fits only by eating the 20% headroom") for w in eaten.warnings)


def test_throughput_target_with_headroom():
    base = on("deepseek-r1-distill-qwen-7b", "h100", context=4096, concurrency=16)
    bound = base.decode_tokens_per_s_upper_bound
    ok = on("deepseek-r1-distill-qwen-7b", "h100", context=4096, concurrency=16, target_tokens_per_s=bound * 0.5)
    assert ok.within_headroom and not any("target" in w for w in ok.warnings)
    tight = on("deepseek-r1-distill-qwen-7b", "h100", context=4096, concurrency=16, target_tokens_per_s=bound * 0.9)
    assert not tight.within_headroom
    assert any("only by eating the 20% headroom" in w and "2 replicas keep it" in w for w in tight.warnings)
    short = on("deepseek-r1-distill-qwen-7b", "h100", context=4096, concurrency=16, target_tokens_per_s=bound * 2)
    assert any("below the" in w and "3 replicas reach it" in w for w in short.warnings)


def test_short_of_sequences_warns_when_nothing_holds_them():
    p = on("deepseek-r1-distill-qwen-32b", "a100-80g", context=131072, concurrency=512, max_nodes=1)
    assert p.fits and p.max_concurrent_sequences < 512
    assert any("fewer than the 512 asked" in w for w in p.warnings)


def test_tensor_parallel_respects_heads():
    p = on("deepseek-r1-distill-qwen-7b", "a100-80g", tensor_parallel=8)
    assert not p.fits and "does not divide the 28 attention heads" in p.reason


def test_tensor_parallel_stays_within_a_node():
    p = on("deepseek-r1-distill-llama-70b", "a100-80g", tensor_parallel=16)
    assert not p.fits and "exceeds the 8 devices of one" in p.reason


def test_pipeline_parallel_across_nodes_for_deepseek_v3_in_bf16():
    p = on("deepseek-v3", "a100-80g", weights_dtype=WeightsDType.bf16, context=4096, concurrency=16)
    assert p.fits and p.tensor_parallel == 8 and p.pipeline_parallel >= 3 and p.nodes == p.pipeline_parallel


def test_deepseek_r1_fp8_on_one_h200_node():
    p = on("deepseek-r1", "h200", weights_dtype=WeightsDType.fp8, context=4096, concurrency=16)
    assert p.fits and p.count == 8 and p.nodes == 1
    assert not any("FP8 tensor cores" in w for w in p.warnings)


def test_fp8_on_a100_warns():
    p = on("deepseek-r1-distill-llama-8b", "a100-80g", weights_dtype=WeightsDType.fp8)
    assert any("no FP8 tensor cores" in w for w in p.warnings)


def test_pcie_parts_warn_for_tp_above_2():
    p = on("deepseek-r1-distill-llama-70b", "l40s", tensor_parallel=4, context=4096)
    assert any("over PCIe" in w for w in p.warnings)
    assert not any("over PCIe" in w for w in on("deepseek-r1-distill-llama-70b", "h100", tensor_parallel=4).warnings)


def test_ascend_output_says_figures_are_estimates():
    p = on("deepseek-r1-distill-qwen-14b", "ascend-910b")
    assert any("estimates" in w for w in p.warnings) and "hbm_gbps" in p.accelerator.uncertain


def test_memory_budget_adds_up():
    p = on("deepseek-r1-distill-llama-8b", "h100", context=8192, concurrency=32)
    m = p.memory_per_device
    assert m.weights_bytes + m.runtime_overhead_bytes + m.activation_workspace_bytes + m.kv_cache_budget_bytes + (
        m.headroom_bytes) == m.usable_bytes
    assert m.activation_workspace_bytes > 100 * 2**20  # estimated, not ignored
    assert p.kv_cache_bytes == p.kv_cache_bytes_per_token * 8192 * 32


def test_fp8_kv_cache_doubles_sequences():
    bf16 = on("deepseek-r1-distill-llama-8b", "h100", context=32768, concurrency=1)
    fp8 = on("deepseek-r1-distill-llama-8b", "h100", context=32768, concurrency=1, kv_cache_dtype=KVCacheDType.fp8)
    assert fp8.kv_cache_bytes_per_token * 2 == bf16.kv_cache_bytes_per_token
    assert fp8.max_concurrent_sequences in (2 * bf16.max_concurrent_sequences, 2 * bf16.max_concurrent_sequences + 1)


def test_decode_bound_is_memory_bandwidth_bound_for_one_sequence():
    p = on("deepseek-r1-distill-llama-8b", "h100", context=1024)
    ceiling = 3350e9 / p.weights_bytes  # every weight byte read once per token
    assert p.decode_tokens_per_s_per_sequence_upper_bound == pytest.approx(ceiling, rel=0.05)
    assert p.decode_tokens_per_s_per_sequence_upper_bound < ceiling


def test_batching_raises_throughput_bound_and_moe_touches_fewer_experts():
    single = on("mixtral-8x7b", "h100", context=2048, concurrency=1)
    batch = on("mixtral-8x7b", "h100", context=2048, concurrency=64)
    assert batch.decode_tokens_per_s_upper_bound > 10 * single.decode_tokens_per_s_upper_bound


def test_replicas_multiply_count_and_throughput():
    one = on("deepseek-r1-distill-qwen-7b", "a100-80g", concurrency=16)
    three = on("deepseek-r1-distill-qwen-7b", "a100-80g", concurrency=16, replicas=3)
    assert three.count == 3 * one.count
    assert three.decode_tokens_per_s_upper_bound == pytest.approx(3 * one.decode_tokens_per_s_upper_bound, rel=1e-3)
    assert three.nodes == 1  # three single-GPU replicas share one 8-GPU node


def test_price_override_changes_cost():
    base = on("deepseek-r1-distill-qwen-7b", "a100-80g")
    cheap = on("deepseek-r1-distill-qwen-7b", "a100-80g", prices_usd={"a100-80g": 7500})
    assert cheap.cost.usd_per_million_tokens == pytest.approx(base.cost.usd_per_million_tokens / 2, rel=1e-3)


def test_comparison_sorted_by_cost_per_token_with_misfits_last():
    plans = compare(request("opt-175b", weights_dtype=WeightsDType.fp16, max_nodes=1))
    assert {p.accelerator.name for p in plans} == set(catalog.accelerators())
    fitting = [p for p in plans if p.fits]
    costs = [p.cost.usd_per_million_tokens for p in fitting]
    assert costs == sorted(costs)
    assert all(not p.fits for p in plans[len(fitting):])
    assert "a100-40g" in {p.accelerator.name for p in plans if not p.fits}


def test_plan_or_raise():
    req = request("opt-175b", weights_dtype=WeightsDType.fp16, max_nodes=1)
    with pytest.raises(DoesNotFitError, match="does not fit on a100-40g"):
        plan_or_raise(req, catalog.accelerator("a100-40g"))


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"context": 0}, "context"), ({"concurrency": 0}, "concurrency"), ({"memory_utilization": 1.5}, "memory"),
     ({"prices_usd": {"h100": -1}}, "positive"), ({"headroom": 0.95}, "headroom"),
     ({"target_tokens_per_s": 0}, "target")],
)
def test_bad_requests(kw, message):
    with pytest.raises(UsageError, match=message):
        request("deepseek-r1-distill-qwen-7b", **kw)


# --- replicas across nodes --------------------------------------------------------------------
def test_deepseek_r1_replica_is_nodes_of_tp_inside_pp_across():
    # bf16 R1 (1.3 TB of weights): TP 8 on each node's NVLink, one pipeline stage per node.
    for acc, nodes in (("a100-80g", 4), ("h200", 2)):
        p = on("deepseek-r1", acc, context=8192, concurrency=16, max_nodes=8)
        assert p.fits and (p.tensor_parallel, p.pipeline_parallel) == (8, nodes)
        assert p.nodes_per_replica == nodes == p.nodes
        assert f"PP {nodes} across {nodes} nodes" in p.layout_reason and "TP 8 within one node" in p.layout_reason
    small = on("deepseek-r1-distill-qwen-7b", "a100-80g")
    assert small.nodes_per_replica == 1 and "one node per replica" in small.layout_reason


def test_pipeline_parallel_asked_for_is_kept_even_when_one_device_would_do():
    p = on("deepseek-r1-distill-qwen-1.5b", "a100-80g", pipeline_parallel=2, max_nodes=2)
    assert p.fits and (p.tensor_parallel, p.pipeline_parallel, p.nodes_per_replica) == (1, 2, 2)
    assert "asked for (serving.pipeline_parallel)" in p.layout_reason
    too_many = on("deepseek-r1-distill-qwen-1.5b", "a100-80g", pipeline_parallel=4, max_nodes=2)
    assert not too_many.fits and "pipeline parallel 4 needs 4 nodes" in (too_many.reason or "")
