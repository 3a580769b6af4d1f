"""Model architecture read from a Hugging Face config.json, and what follows from it.

Parameter counts, active parameters (MoE) and KV-cache bytes per token are computed from the
architecture itself, never copied from a model card, so a config.json the catalog has never seen
is planned exactly like a catalog entry.

Supported `model_type`s: qwen2, llama, mistral, mixtral (MoE), deepseek_v3 (MLA + MoE) and opt
(dense GPT-3-style, used for the classic 175B sizing examples).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmrack.errors import UsageError

SUPPORTED_MODEL_TYPES = ("qwen2", "llama", "mistral", "mixtral", "deepseek_v3", "opt")


@dataclass(frozen=True)
class MoE:
    """Routed experts of a mixture-of-experts model."""

    num_experts: int
    experts_per_token: int
    expert_intermediate_size: int
    num_shared_experts: int = 0
    shared_intermediate_size: int = 0
    first_dense_layers: int = 0  # DeepSeek: the first k layers keep a dense MLP


@dataclass(frozen=True)
class MLA:
    """DeepSeek multi-head latent attention: the KV cache holds one compressed latent per token."""

    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class ModelArch:
    model_type: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense MLP width
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool = False
    gated_mlp: bool = True  # SwiGLU: gate, up, down; False: fc1, fc2 (OPT/GPT-3)
    attention_bias: bool = False  # q/k/v biases (Qwen2); OPT has biases everywhere
    learned_positions: int = 0  # OPT: learned position embeddings (rows)
    moe: MoE | None = None
    mla: MLA | None = None

    # --- parameter counts -------------------------------------------------------------------
    def _attention_params(self) -> int:
        h = self.hidden_size
        if self.mla is not None:
            m = self.mla
            qk_head = m.qk_nope_head_dim + m.qk_rope_head_dim
            if m.q_lora_rank:
                q = h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * self.num_attention_heads * qk_head
            else:
                q = h * self.num_attention_heads * qk_head
            kv_a = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank  # + its RMSNorm
            kv_b = m.kv_lora_rank * self.num_attention_heads * (m.qk_nope_head_dim + m.v_head_dim)
            o = self.num_attention_heads * m.v_head_dim * h
            return q + kv_a + kv_b + o
        q_dim = self.num_attention_heads * self.head_dim
        kv_dim = self.num_kv_heads * self.head_dim
        params = h * q_dim + 2 * h * kv_dim + q_dim * h
        if self.attention_bias:
            params += q_dim + 2 * kv_dim
        if self.model_type == "opt":
            params += h  # OPT's output projection has a bias too
        return params

    def _mlp_params(self, width: int) -> int:
        h = self.hidden_size
        if self.gated_mlp:
            return 3 * h * width
        return 2 * h * width + width + h  # fc1, fc2 and their biases

    def _norm_params(self) -> int:
        per_norm = 2 * self.hidden_size if self.model_type == "opt" else self.hidden_size  # LayerNorm has a bias
        return 2 * per_norm

    @property
    def num_moe_layers(self) -> int:
        return 0 if self.moe is None else self.num_layers - self.moe.first_dense_layers

    def _moe_layer_params(self, experts: int) -> int:
        assert self.moe is not None
        m = self.moe
        router = self.hidden_size * m.num_experts
        if self.model_type == "deepseek_v3":
            router += m.num_experts  # e_score_correction_bias
        shared = m.num_shared_experts * self._mlp_params(m.shared_intermediate_size or m.expert_intermediate_size)
        return router + shared + experts * self._mlp_params(m.expert_intermediate_size)

    def _embedding_params(self) -> int:
        emb = self.vocab_size * self.hidden_size + self.learned_positions * self.hidden_size
        head = 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size
        final_norm = 2 * self.hidden_size if self.model_type == "opt" else self.hidden_size
        return emb + head + final_norm

    def _params(self, experts_counted: int | None) -> int:
        dense_layers = self.num_layers - self.num_moe_layers
        per_layer_common = self._attention_params() + self._norm_params()
        total = self.num_layers * per_layer_common + dense_layers * self._mlp_params(self.intermediate_size)
        if self.moe is not None:
            experts = self.moe.num_experts if experts_counted is None else experts_counted
            total += self.num_moe_layers * self._moe_layer_params(experts)
        return total + self._embedding_params()

    @property
    def params(self) -> int:
        """All parameters of the served model (DeepSeek's multi-token-prediction layer is not served)."""
        return self._params(None)

    @property
    def active_params(self) -> int:
        """Parameters used for one token: only the routed experts it is sent to."""
        return self._params(self.moe.experts_per_token if self.moe else None)

    @property
    def routed_expert_params(self) -> int:
        """Parameters of all routed experts together (what a decode step may touch only partly)."""
        if self.moe is None:
            return 0
        return self.num_moe_layers * self.moe.num_experts * self._mlp_params(self.moe.expert_intermediate_size)

    # --- KV cache ---------------------------------------------------------------------------
    def kv_cache_elements_per_token(self) -> int:
        """Cached values per token over all layers (multiply by the KV dtype's bytes).

        GQA caches K and V for each KV head; MLA caches the compressed latent plus the shared
        RoPE key: layers x (kv_lora_rank + qk_rope_head_dim).
        """
        if self.mla is not None:
            return self.num_layers * (self.mla.kv_lora_rank + self.mla.qk_rope_head_dim)
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim

    def kv_cache_shards(self, tensor_parallel: int) -> int:
        """Into how many parts tensor parallelism splits the KV cache.

        GQA: the KV heads are split across ranks. MLA: the latent has no heads, so each rank
        keeps a full copy (as vLLM does), and TP does not shrink it.
        """
        return 1 if self.mla is not None else tensor_parallel

    # --- parallelism --------------------------------------------------------------------------
    def tensor_parallel_problem(self, tp: int) -> str | None:
        """Why `tp` cannot shard this model, or None when it can."""
        if self.num_attention_heads % tp:
            return f"tensor parallel {tp} does not divide the {self.num_attention_heads} attention heads"
        if self.mla is None and self.num_kv_heads % tp:
            return f"tensor parallel {tp} does not divide the {self.num_kv_heads} KV heads"
        return None

    @property
    def flops_per_token(self) -> float:
        """Forward FLOPs per token from the weights alone: 2 x active parameters (embedding lookup excluded)."""
        return 2.0 * (self.active_params - self.vocab_size * self.hidden_size)

    def attention_flops_per_token(self, context: int) -> float:
        """FLOPs of attention scores and weighted sum against `context` cached tokens."""
        if self.mla is not None:
            qk = self.mla.qk_nope_head_dim + self.mla.qk_rope_head_dim
            v = self.mla.v_head_dim
        else:
            qk = v = self.head_dim
        return 2.0 * self.num_layers * self.num_attention_heads * (qk + v) * context


# ---------------------------------------------------------------------------------------------
# Reading config.json
# ---------------------------------------------------------------------------------------------
class ConfigError(UsageError):
    pass


def _need(cfg: dict[str, Any], key: str, where: str, *alternatives: str) -> Any:
    for k in (key, *alternatives):
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    raise ConfigError(f"{where}: required field {key!r} is missing (model_type {cfg.get('model_type')!r})")


def _int(cfg: dict[str, Any], key: str, where: str, *alternatives: str) -> int:
    value = _need(cfg, key, where, *alternatives)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: field {key!r} must be a non-negative integer, got {value!r}")
    return value


def arch_from_config(cfg: dict[str, Any], where: str = "config.json") -> ModelArch:
    """Build a ModelArch from a Hugging Face config dict; errors name the missing field."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(cfg).__name__}")
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"{where}: model_type {model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    if model_type == "opt":
        return _opt_from_config(cfg, where)

    hidden = _int(cfg, "hidden_size", where)
    heads = _int(cfg, "num_attention_heads", where)
    if heads == 0:
        raise ConfigError(f"{where}: field 'num_attention_heads' must be at least 1")
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    common: dict[str, Any] = {
        "model_type": model_type,
        "num_layers": _int(cfg, "num_hidden_layers", where),
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": int(cfg.get("head_dim") or hidden // heads),
        "intermediate_size": _int(cfg, "intermediate_size", where),
        "vocab_size": _int(cfg, "vocab_size", where),
        "max_position_embeddings": _int(cfg, "max_position_embeddings", where),
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        # Qwen2 always has q/k/v biases; Llama-family configs say so with attention_bias.
        "attention_bias": model_type == "qwen2" or bool(cfg.get("attention_bias", False)),
    }
    if model_type == "mixtral":
        common["moe"] = MoE(
            num_experts=_int(cfg, "num_local_experts", where),
            experts_per_token=_int(cfg, "num_experts_per_tok", where),
            expert_intermediate_size=common["intermediate_size"],
        )
    if model_type == "deepseek_v3":
        common["mla"] = MLA(
            q_lora_rank=cfg.get("q_lora_rank"),
            kv_lora_rank=_int(cfg, "kv_lora_rank", where),
            qk_nope_head_dim=_int(cfg, "qk_nope_head_dim", where),
            qk_rope_head_dim=_int(cfg, "qk_rope_head_dim", where),
            v_head_dim=_int(cfg, "v_head_dim", where),
        )
        moe_width = _int(cfg, "moe_intermediate_size", where)
        common["moe"] = MoE(
            num_experts=_int(cfg, "n_routed_experts", where),
            experts_per_token=_int(cfg, "num_experts_per_tok", where),
            expert_intermediate_size=moe_width,
            num_shared_experts=int(cfg.get("n_shared_experts") or 0),
            shared_intermediate_size=moe_width,
            first_dense_layers=int(cfg.get("first_k_dense_replace") or 0),
        )
    return ModelArch(**common)


def _opt_from_config(cfg: dict[str, Any], where: str) -> ModelArch:
    hidden = _int(cfg, "hidden_size", where)
    heads = _int(cfg, "num_attention_heads", where)
    max_pos = _int(cfg, "max_position_embeddings", where)
    return ModelArch(
        model_type="opt",
        num_layers=_int(cfg, "num_hidden_layers", where),
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=heads,
        head_dim=hidden // heads,
        intermediate_size=_int(cfg, "ffn_dim", where),
        vocab_size=_int(cfg, "vocab_size", where),
        max_position_embeddings=max_pos,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        gated_mlp=False,
        attention_bias=True,
        learned_positions=max_pos + 2,  # OPT offsets learned positions by 2
    )


def load_config_file(path: Path) -> ModelArch:
    """Read a config.json from disk; unreadable or malformed files are user errors."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read model config {path}: {exc.strerror}") from None
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}") from None
    return arch_from_config(cfg, str(path))
