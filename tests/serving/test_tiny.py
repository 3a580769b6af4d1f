"""`llmrack model make-tiny` writes a loadable Hugging Face directory with a real tokenizer and chat template."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from llmrack.cli.main import app


def test_layout_and_config(tiny_models: dict[str, Path]) -> None:
    for arch, path in tiny_models.items():
        names = {p.name for p in path.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "generation_config.json"} <= names
        config = json.loads((path / "config.json").read_text())
        assert config["model_type"] == arch
        assert config["vocab_size"] == 512
        assert config["num_hidden_layers"] == 4 and config["hidden_size"] == 256


def test_tokenizer_is_trained_byte_level_bpe(load_model) -> None:
    tok = load_model("qwen2").tokenizer
    text = "Deploy the rack, then drain 42 nodes: héllo 世界!"
    ids = tok.encode(text)
    assert tok.decode(ids) == text  # byte-level: any UTF-8 round-trips
    assert len(ids) < len(text.encode())  # merges were learned: fewer tokens than bytes
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                       tokenize=False)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>"


def test_cli_is_deterministic(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    result = CliRunner().invoke(app, ["model", "make-tiny", "--arch", "qwen2", "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "m") in result.stdout
    weights = (tmp_path / "m" / "model.safetensors").read_bytes()
    assert weights == (tiny_models["qwen2"] / "model.safetensors").read_bytes(), "same arch + seed, same weights"
    assert (tmp_path / "m" / "tokenizer.json").read_text() == (tiny_models["qwen2"] / "tokenizer.json").read_text()


def test_cli_rejects_unknown_arch(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["model", "make-tiny", "--arch", "gpt5", "--out", str(tmp_path)])
    assert result.exit_code == 2


def test_tiny_deepseek_v3_has_the_real_models_router_keys_and_mla_head(tiny_models: dict[str, Path]) -> None:
    # vLLM loads a DeepSeek-V3 only with these router keys, and its CPU MLA kernels take a 512 + 64 latent head.
    config = json.loads((tiny_models["deepseek_v3"] / "config.json").read_text())
    assert config["topk_method"] == "noaux_tc" and config["scoring_func"] == "sigmoid"
    assert config["kv_lora_rank"] + config["qk_rope_head_dim"] == 576
    assert config["n_routed_experts"] == 8 and config["first_k_dense_replace"] == 1
