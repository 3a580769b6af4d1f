"""`llmrack model make-tiny`: a small random-weight model in the exact Hugging Face layout.

Tests, benchmarks and the lab need a real model directory (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json with a chat template, generation_config.json) without ever downloading one. The tokenizer
is a real byte-level BPE trained here, offline, on generated text, so tokenisation and detokenisation exercise
the same code paths as a production model's.
"""

from __future__ import annotations

import json
import random
from enum import StrEnum
from pathlib import Path
from typing import Any

# ChatML, the template of the Qwen2 family (and of the DeepSeek-R1-Distill-Qwen models' ancestors).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BOS, EOS, PAD = "<|endoftext|>", "<|im_end|>", "<|endoftext|>"

_WORDS = (
    "the", "a", "rack", "node", "model", "token", "serve", "batch", "queue", "cache", "memory", "device",
    "kernel", "tensor", "layer", "head", "prompt", "answer", "question", "why", "how", "what", "when", "deploy",
    "plan", "spec", "image", "scan", "gate", "drain", "ready", "health", "metric", "latency", "throughput",
    "request", "stream", "client", "server", "python", "torch", "accelerator", "gpu", "npu", "cluster", "is",
    "are", "was", "be", "can", "will", "should", "must", "not", "and", "or", "but", "if", "then", "else", "for",
    "with", "from", "into", "over", "under", "one", "two", "three", "four", "five", "six", "seven", "eight",
    "nine", "ten", "hundred", "thousand", "million", "fast", "slow", "small", "large",
)


class Arch(StrEnum):
    qwen2 = "qwen2"
    llama = "llama"
    deepseek_v3 = "deepseek_v3"


def _corpus(seed: int, lines: int = 4000) -> list[str]:
    """Pseudo-English with digits and punctuation: enough variety for a few hundred BPE merges."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        n = rng.randint(4, 16)
        words = [rng.choice(_WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            words.insert(rng.randrange(n), str(rng.randint(0, 9999)))
        sentence = " ".join(words)
        out.append(sentence[0].upper() + sentence[1:] + rng.choice([".", "?", "!", ",", ":"]))
    return out


def train_tokenizer(vocab_size: int, seed: int) -> Any:
    """A byte-level BPE (the GPT-2 / Qwen2 scheme): any UTF-8 text round-trips, no unknown tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    return tok


def _config(arch: Arch, vocab_size: int, bos_id: int, eos_id: int, dims: dict[str, int] | None = None) -> Any:
    from transformers import DeepseekV3Config, LlamaConfig, Qwen2Config

    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": bos_id,
        "tie_word_embeddings": False,
        **(dims or {}),
    }
    if arch is Arch.qwen2:
        return Qwen2Config(**common)
    if arch is Arch.llama:
        return LlamaConfig(**common)
    # MLA + MoE with DeepSeek-V3's own layout, scaled down only in width, depth and expert count. The router keys
    # (`topk_method: noaux_tc`, `scoring_func: sigmoid`) are what a real DeepSeek-V3/R1 config.json carries: vLLM
    # builds the router's e_score_correction_bias only when they are there (without them it fails to load the
    # weights with a KeyError). The MLA dims are the real model's: vLLM's CPU MLA kernels take a latent head of
    # kv_lora_rank + qk_rope_head_dim = 512 + 64 = 576 and refuse smaller ones (96: "Head dimension 96 is not
    # supported by MLA"). 8 routed experts (2 per token, in 2 groups) + 1 shared, first layer dense.
    common.update(
        num_key_value_heads=4,
        moe_intermediate_size=128,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_shared_experts=1,
        n_group=2,
        topk_group=1,
        first_k_dense_replace=1,
        topk_method="noaux_tc",
        scoring_func="sigmoid",
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
        q_lora_rank=64,
        kv_lora_rank=512,
        qk_rope_head_dim=64,
        qk_nope_head_dim=32,
        v_head_dim=64,
    )
    return DeepseekV3Config(**common)


def make_tiny(arch: Arch | str, out: Path, seed: int = 0, vocab_size: int = 512,
              dims: dict[str, int] | None = None) -> Path:
    """Write the model directory; the same (arch, seed) always gives the same weights and tokenizer. `dims`
    overrides the config's sizes (hidden_size, num_hidden_layers, ...) for a larger model of the same kind."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    arch = Arch(arch)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(vocab_size, seed)
    tok.save(str(out / "tokenizer.json"))
    bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "add_bos_token": False,
        "model_max_length": 2048,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}, indent=2) + "\n"
    )

    config = _config(arch, tok.get_vocab_size(), bos_id, eos_id, dims)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Random init at std 0.02 gives nearly flat logits; a larger scale makes greedy decoding pick clear
    # winners (as a trained model does), so token-for-token comparisons are not decided by rounding noise.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2 and "norm" not in name:
                param.normal_(0.0, 0.08, generator=None)
    model.save_pretrained(out, safe_serialization=True)
    GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=bos_id, do_sample=False).save_pretrained(
        out
    )
    return out
