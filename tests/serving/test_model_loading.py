"""Loading: local directories only, device/dtype checks, INT8 dynamic quantisation with its memory saving."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from serving.engine import Engine, EngineConfig, SamplingParams
from serving.model.devices import DeviceError, resolve
from serving.model.loader import ModelLoadError, load


def test_int8_dynamic_quantisation_saves_memory_and_still_generates(qwen2_dir: Path, load_model: Any) -> None:
    fp32 = load_model("qwen2")
    int8 = load(qwen2_dir, quantize="int8")
    assert int8.quantized and int8.extra["unquantized_weights_bytes"] == fp32.weights_bytes
    # Linear weights go from 4 bytes to 1; the embedding stays fp32, so the saving is a bit under 4x.
    assert int8.weights_bytes < fp32.weights_bytes / 3
    engine = Engine(int8.model, int8.tokenizer, int8.eos_token_ids, EngineConfig())
    rid = engine.submit(int8.tokenizer.encode("Hello there"), SamplingParams(max_tokens=8, temperature=0,
                                                                            ignore_eos=True))
    out = engine.run_until_idle()[rid]
    assert sum(len(o.new_token_ids) for o in out) == 8


def test_bfloat16_on_cpu(qwen2_dir: Path) -> None:
    bf16 = load(qwen2_dir, dtype="bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    engine = Engine(bf16.model, bf16.tokenizer, bf16.eos_token_ids, EngineConfig())
    ids = [engine.submit(bf16.tokenizer.encode(p), SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))
           for p in ("Hello there", "Why")]
    out = engine.run_until_idle()
    assert all(out[i][-1].finish_reason == "length" for i in ids)


def test_refusals(tmp_path: Path, qwen2_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="not supported"):
        load(tmp_path)
    with pytest.raises(ModelLoadError, match="CPU"):
        load(qwen2_dir, dtype="bfloat16", quantize="int8")
    with pytest.raises(DeviceError, match="not supported on cpu"):
        resolve("cpu", "float16")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve("cuda", "bfloat16")
    with pytest.raises(DeviceError, match="torch_npu"):
        resolve("npu", None)


def test_loader_forces_offline(load_model: Any) -> None:
    load_model("llama")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
