"""Load a Hugging Face model directory from local disk only: never the hub.

The directory holds config.json, *.safetensors, tokenizer.json, tokenizer_config.json (with the chat template)
and optionally generation_config.json, exactly as `save_pretrained` writes them.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.model.devices import Device, DType, empty_cache, resolve

log = logging.getLogger("serving.model")

SUPPORTED_MODEL_TYPES = ("qwen2", "llama", "deepseek_v3")
REQUIRED_FILES = ("config.json", "tokenizer.json")


class ModelLoadError(ValueError):
    """The model directory is missing, incomplete, or of an unsupported architecture."""


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: Any
    dtype: Any
    model_type: str
    max_position_embeddings: int
    eos_token_ids: frozenset[int]
    quantized: bool = False
    weights_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def release(self) -> None:
        """Drop the weights and give accelerator memory back (called from the app lifespan's finally)."""
        device = self.device
        self.model = None
        gc.collect()
        empty_cache(device)


def check_dir(path: Path) -> dict[str, Any]:
    import json

    if not path.is_dir():
        raise ModelLoadError(f"model directory {path} does not exist")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if not any(path.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise ModelLoadError(f"model directory {path} lacks {', '.join(missing)}")
    config: dict[str, Any] = json.loads((path / "config.json").read_text())
    if config.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"model_type {config.get('model_type')!r} is not supported (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    return config


def weights_bytes(model: Any) -> int:
    """Bytes held by parameters and buffers, including the packed weights of dynamically quantised Linear layers."""
    import torch

    total = sum(t.numel() * t.element_size() for t in model.parameters())
    total += sum(t.numel() * t.element_size() for t in model.buffers())
    for module in model.modules():
        # Dynamically quantised Linear layers keep their int8 weight in a packed C++ object, not a Parameter.
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):
            weight, bias = module._weight_bias()
            total += weight.numel() * weight.element_size()
            if bias is not None:
                total += bias.numel() * bias.element_size()
    return int(total)


def quantize_int8(model: Any) -> Any:
    """INT8 dynamic quantisation of every nn.Linear (weights int8, activations quantised per batch at run time)."""
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch 2.13 flags quantized tensor creation as deprecated (pytorch/pytorch#184982, moving to torchao);
        # it still works and is the only INT8 path here that needs no extra package.
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=False)


def load(
    path: Path | str,
    device: Device | str = Device.cpu,
    dtype: DType | str | None = None,
    quantize: str | None = None,
) -> LoadedModel:
    # Belt and braces: local_files_only below already forbids the hub; these make any library code path that
    # forgets it fail instead of reaching out.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    path = Path(path)
    config = check_dir(path)
    torch_device, torch_dtype = resolve(device, dtype)
    if quantize not in (None, "int8"):
        raise ModelLoadError(f"--quantize {quantize!r}: only 'int8' is supported")
    if quantize and (torch_device.type != "cpu" or torch_dtype != torch.float32):
        raise ModelLoadError(
            "--quantize int8 is dynamic quantisation for CPU: use it with --device cpu --dtype float32"
        )

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch_dtype)
    model.eval()
    model.requires_grad_(False)
    fp_bytes = weights_bytes(model)
    extra: dict[str, Any] = {}
    if quantize:
        model = quantize_int8(model)
        extra["unquantized_weights_bytes"] = fp_bytes
    model.to(torch_device)

    eos: set[int] = set()
    for source in (config.get("eos_token_id"), tokenizer.eos_token_id):
        if isinstance(source, int):
            eos.add(source)
        elif isinstance(source, list):
            eos.update(int(x) for x in source)
    if (path / "generation_config.json").is_file():
        gen = GenerationConfig.from_pretrained(path, local_files_only=True)
        ids = gen.eos_token_id
        eos.update([ids] if isinstance(ids, int) else list(ids or []))
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=torch_device,
        dtype=torch_dtype,
        model_type=str(config["model_type"]),
        max_position_embeddings=int(config.get("max_position_embeddings", 2048)),
        eos_token_ids=frozenset(eos),
        quantized=bool(quantize),
        weights_bytes=weights_bytes(model),
        extra=extra,
    )
    log.info(
        "loaded %s (%s) on %s as %s%s: %.1f MiB of weights",
        path, loaded.model_type, torch_device, str(torch_dtype).removeprefix("torch."),
        " int8-dynamic" if quantize else "", loaded.weights_bytes / 2**20,
    )
    return loaded
