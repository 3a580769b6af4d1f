"""Per-request sampling parameters and the batched sampler.

Every row of the batch can carry different parameters; the common cases (all greedy, or no per-row seed) run as
one tensor operation, and only rows with their own seed draw from their own torch.Generator, which is what makes
a seeded request reproducible whatever else shares its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 (or -1) disables top-k
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < -1:
            raise ValueError("top_k must be -1, 0 (disabled) or positive")
        if self.min_tokens < 0 or self.min_tokens > self.max_tokens:
            raise ValueError("min_tokens must be between 0 and max_tokens")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


@dataclass
class RowState:
    """What the sampler needs from one running sequence."""

    params: SamplingParams
    generator: Any | None
    banned: list[int] = field(default_factory=list)  # token ids forbidden this step (min_tokens)


def sample(logits: Any, rows: Sequence[RowState]) -> list[int]:
    """Pick one token per row of `logits` [B, V] (any float dtype); returns Python ints."""
    import torch

    logits = logits.float()
    for i, row in enumerate(rows):
        if row.banned:
            logits[i, row.banned] = float("-inf")
    tokens = logits.argmax(dim=-1)
    sampled = [i for i, row in enumerate(rows) if not row.params.greedy]
    if not sampled:
        return [int(t) for t in tokens.tolist()]

    index = torch.tensor(sampled, device=logits.device)
    sub = logits.index_select(0, index)
    temps = torch.tensor([rows[i].params.temperature for i in sampled], device=logits.device)
    sub = sub / temps.unsqueeze(1)
    top_ks = [rows[i].params.top_k for i in sampled]
    top_ps = [rows[i].params.top_p for i in sampled]
    sorted_logits, sorted_idx = sub.sort(dim=-1, descending=True)
    if any(k > 0 for k in top_ks):
        vocab = sub.shape[-1]
        ks = torch.tensor([k if k > 0 else vocab for k in top_ks], device=logits.device)
        ranks = torch.arange(vocab, device=logits.device).unsqueeze(0)
        sorted_logits = sorted_logits.masked_fill(ranks >= ks.unsqueeze(1), float("-inf"))
    if any(p < 1.0 for p in top_ps):
        probs_sorted = sorted_logits.softmax(dim=-1)
        cum = probs_sorted.cumsum(dim=-1)
        ps = torch.tensor(top_ps, device=logits.device).unsqueeze(1)
        # Drop a token when the mass BEFORE it already reaches top_p; the most likely token always stays.
        drop = (cum - probs_sorted) >= ps
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    probs = sorted_logits.softmax(dim=-1)
    # Exponential-race sampling: argmax(p / E) with E ~ Exp(1) draws from p; one draw per row lets each seeded
    # row use its own generator without a Python loop over the vocabulary.
    noise = torch.empty_like(probs).exponential_()
    for j, i in enumerate(sampled):
        gen = rows[i].generator
        if gen is not None:
            noise[j].exponential_(generator=gen)
    choice = (probs / noise).argmax(dim=-1, keepdim=True)
    picked = sorted_idx.gather(1, choice).squeeze(1)
    tokens[index] = picked
    return [int(t) for t in tokens.tolist()]
