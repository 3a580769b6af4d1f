"""Architecture arithmetic for every catalog model: parameter counts, KV bytes, TP divisibility."""

import json

import pytest

from llmrack import catalog
from llmrack.arch import ConfigError, arch_from_config, load_config_file

ALL_MODELS = sorted(catalog.models())

# KV-cache bytes per token in bf16, worked out by hand from each published config:
# GQA: 2 (K and V) x layers x kv_heads x head_dim x 2 bytes; MLA: layers x (kv_lora_rank + rope dim) x 2 bytes.
KV_BF16_BYTES = {
    "deepseek-v3": 61 * (512 + 64) * 2,
    "deepseek-r1": 61 * (512 + 64) * 2,
    "deepseek-r1-distill-qwen-1.5b": 2 * 28 * 2 * 128 * 2,
    "deepseek-r1-distill-qwen-7b": 2 * 28 * 4 * 128 * 2,
    "deepseek-r1-distill-qwen-14b": 2 * 48 * 8 * 128 * 2,
    "deepseek-r1-distill-qwen-32b": 2 * 64 * 8 * 128 * 2,
    "deepseek-r1-distill-llama-8b": 2 * 32 * 8 * 128 * 2,
    "deepseek-r1-distill-llama-70b": 2 * 80 * 8 * 128 * 2,
    "mixtral-8x7b": 2 * 32 * 8 * 128 * 2,
    "llama-2-13b": 2 * 40 * 40 * 128 * 2,
    "opt-175b": 2 * 96 * 96 * 128 * 2,
}

# Tensor-parallel degrees (of 1, 2, 4, 8, 16) that divide both attention and KV heads (MLA: heads only).
VALID_TP = {
    "deepseek-v3": {1, 2, 4, 8, 16},
    "deepseek-r1": {1, 2, 4, 8, 16},
    "deepseek-r1-distill-qwen-1.5b": {1, 2},  # 12 heads, 2 KV heads
    "deepseek-r1-distill-qwen-7b": {1, 2, 4},  # 28 heads, 4 KV heads
    "deepseek-r1-distill-qwen-14b": {1, 2, 4, 8},  # 40 heads, 8 KV heads
    "deepseek-r1-distill-qwen-32b": {1, 2, 4, 8},
    "deepseek-r1-distill-llama-8b": {1, 2, 4, 8},
    "deepseek-r1-distill-llama-70b": {1, 2, 4, 8},
    "mixtral-8x7b": {1, 2, 4, 8},
    "llama-2-13b": {1, 2, 4, 8},  # 40 heads, no GQA
    "opt-175b": {1, 2, 4, 8, 16},
}


def test_catalog_has_the_required_models():
    required = {"deepseek-v3", "deepseek-r1"} | {f"deepseek-r1-distill-qwen-{s}" for s in ("1.5b", "7b", "14b", "32b")}
    required |= {"deepseek-r1-distill-llama-8b", "deepseek-r1-distill-llama-70b"}
    assert required <= set(ALL_MODELS)
    assert set(KV_BF16_BYTES) == set(ALL_MODELS) == set(VALID_TP), "every catalog model needs expectations here"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_parameter_count_matches_published_within_2_percent(name):
    entry = catalog.model(name)
    assert entry.arch.params == pytest.approx(entry.published_params, rel=0.02)
    if entry.published_active_params:
        assert entry.arch.active_params == pytest.approx(entry.published_active_params, rel=0.02)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_kv_cache_bytes_per_token(name):
    assert catalog.model(name).arch.kv_cache_elements_per_token() * 2 == KV_BF16_BYTES[name]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_tensor_parallel_divisibility(name):
    arch = catalog.model(name).arch
    valid = {tp for tp in (1, 2, 4, 8, 16) if arch.tensor_parallel_problem(tp) is None}
    assert valid == VALID_TP[name]
    for tp in {1, 2, 4, 8, 16} - valid:
        assert "does not divide" in arch.tensor_parallel_problem(tp)


def test_dense_models_activate_all_parameters():
    arch = catalog.model("deepseek-r1-distill-llama-70b").arch
    assert arch.active_params == arch.params
    assert arch.routed_expert_params == 0


def test_mla_cache_is_not_split_by_tensor_parallel():
    assert catalog.model("deepseek-v3").arch.kv_cache_shards(8) == 1
    assert catalog.model("deepseek-r1-distill-llama-8b").arch.kv_cache_shards(8) == 8


def test_config_json_from_disk_plans_like_the_catalog(tmp_path):
    entry = catalog.model("deepseek-r1-distill-qwen-7b")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**entry.config, "architectures": ["Qwen2ForCausalLM"], "torch_dtype": "bfloat16"}))
    assert load_config_file(path) == entry.arch


def test_missing_field_is_named(tmp_path):
    cfg = dict(catalog.model("deepseek-v3").config)
    del cfg["kv_lora_rank"]
    with pytest.raises(ConfigError, match="'kv_lora_rank' is missing"):
        arch_from_config(cfg)


def test_unsupported_model_type_lists_supported():
    with pytest.raises(ConfigError, match="supported: qwen2, llama"):
        arch_from_config({"model_type": "bert"})


def test_malformed_json_says_where(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama",')
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config_file(path)


def test_wrong_type_is_named():
    cfg = {**catalog.model("deepseek-r1-distill-llama-8b").config, "num_hidden_layers": "32"}
    with pytest.raises(ConfigError, match="'num_hidden_layers' must be a non-negative integer"):
        arch_from_config(cfg)
