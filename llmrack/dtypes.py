"""Numeric formats a deployment can store weights and KV cache in, and their size."""

from __future__ import annotations

from enum import StrEnum


class WeightsDType(StrEnum):
    bf16 = "bf16"
    fp16 = "fp16"
    fp8 = "fp8"
    int8 = "int8"
    int4 = "int4"


class KVCacheDType(StrEnum):
    auto = "auto"  # same as the activations: bf16/fp16 weights keep it, quantised weights get bf16
    bf16 = "bf16"
    fp16 = "fp16"
    fp8 = "fp8"


# INT4 checkpoints (GPTQ/AWQ) carry one 16-bit scale per group of 128 weights: 0.5 + 2/128 bytes.
# FP8 and INT8 carry one scale per output channel, which is negligible (< 0.01 % of the weights).
INT4_GROUP_SIZE = 128
WEIGHT_BYTES: dict[WeightsDType, float] = {
    WeightsDType.bf16: 2.0,
    WeightsDType.fp16: 2.0,
    WeightsDType.fp8: 1.0,
    WeightsDType.int8: 1.0,
    WeightsDType.int4: 0.5 + 2.0 / INT4_GROUP_SIZE,
}

KV_BYTES: dict[KVCacheDType, float] = {
    KVCacheDType.bf16: 2.0,
    KVCacheDType.fp16: 2.0,
    KVCacheDType.fp8: 1.0,
}


def resolve_kv_dtype(kv: KVCacheDType, weights: WeightsDType) -> KVCacheDType:
    """What `auto` means: the activation dtype, which is fp16 for fp16 weights and bf16 otherwise."""
    if kv is not KVCacheDType.auto:
        return kv
    return KVCacheDType.fp16 if weights is WeightsDType.fp16 else KVCacheDType.bf16
