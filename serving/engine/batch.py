"""The running batch's KV cache: one left-padded tensor per layer, shared by sequences of different lengths.

Every running sequence is a row; rows are right-aligned (left-padded), so each decode step writes the new token of
every row into the same new column, which is what lets the unmodified Hugging Face attention run the whole batch
in one forward with a 4D padding mask and per-row position ids. Rows join (after a batched prefill) by padding
the shorter cache on the left and concatenating; rows leave by index_select, and columns that became padding in
every row are trimmed, so a finished or cancelled sequence's memory is released at once.

The cache tensors are whatever the model stores per layer with shape [batch, heads, seq, dim]: full keys/values
for Qwen2/Llama, the compressed MLA latents for DeepseekV3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def new_cache(model_config: Any) -> Any:
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model_config)
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        # Sliding-window layers keep only a window and cannot be left-padded/merged this way.
        raise ValueError("models with sliding-window or hybrid attention layers are not supported by this engine")
    return cache


def _left_pad(t: Any, columns: int) -> Any:
    import torch

    if columns == 0:
        return t
    shape = list(t.shape)
    shape[-2] = columns
    return torch.cat([t.new_zeros(shape), t], dim=-2)


class KVBatch:
    """The cache plus, per row, which columns hold real tokens (`valid`) and the next position id."""

    def __init__(self, cache: Any, valid: Any, positions: Any) -> None:
        self.cache = cache
        self.valid = valid  # bool [B, L]
        self.positions = positions  # long [B]

    @property
    def rows(self) -> int:
        return int(self.valid.shape[0])

    @property
    def columns(self) -> int:
        return int(self.valid.shape[1])

    def layer_tensors(self) -> list[tuple[Any, Any]]:
        return [(layer.keys, layer.values) for layer in self.cache.layers]

    def set_layer_tensors(self, tensors: Sequence[tuple[Any, Any]]) -> None:
        for layer, (k, v) in zip(self.cache.layers, tensors, strict=True):
            layer.keys, layer.values = k, v

    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layer_tensors())

    def decode_mask(self) -> tuple[Any, Any]:
        """Valid columns after appending one token per row, and the 4D boolean mask [B, 1, 1, L+1] for SDPA."""
        import torch

        valid = torch.cat([self.valid, self.valid.new_ones((self.rows, 1))], dim=1)
        return valid, valid[:, None, None, :]

    def advance(self, valid: Any) -> None:
        self.valid = valid
        self.positions = self.positions + 1

    def select(self, keep: Sequence[int]) -> KVBatch:
        """A new batch with only rows `keep` (in that order); trims columns no remaining row uses."""
        import torch

        index = torch.tensor(list(keep), device=self.valid.device, dtype=torch.long)
        valid = self.valid.index_select(0, index)
        used = valid.any(dim=0).nonzero()
        start = int(used[0]) if used.numel() else valid.shape[1]
        valid = valid[:, start:]
        cache = new_cache_like(self.cache)
        for src, dst in zip(self.cache.layers, cache.layers, strict=True):
            # contiguous(): a fresh tensor, so the dropped rows' memory is freed now, not when a view dies.
            dst.lazy_initialization(src.keys, src.values)
            dst.keys = src.keys.index_select(0, index)[..., start:, :].contiguous()
            dst.values = src.values.index_select(0, index)[..., start:, :].contiguous()
        return KVBatch(cache, valid, self.positions.index_select(0, index))

    @staticmethod
    def concat(parts: Sequence[KVBatch]) -> KVBatch:
        """Stack batches row-wise, left-padding the shorter ones to a common length."""
        import torch

        if len(parts) == 1:
            return parts[0]
        length = max(p.columns for p in parts)
        cache = new_cache_like(parts[0].cache)
        for i, dst in enumerate(cache.layers):
            ks = [_left_pad(p.cache.layers[i].keys, length - p.columns) for p in parts]
            vs = [_left_pad(p.cache.layers[i].values, length - p.columns) for p in parts]
            dst.lazy_initialization(ks[0], vs[0])
            dst.keys = torch.cat(ks, dim=0)
            dst.values = torch.cat(vs, dim=0)
        valid = torch.cat(
            [torch.cat([p.valid.new_zeros((p.rows, length - p.columns)), p.valid], dim=1) for p in parts], dim=0
        )
        return KVBatch(cache, valid, torch.cat([p.positions for p in parts]))


def new_cache_like(cache: Any) -> Any:
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    fresh = DynamicCache()
    fresh.layers = [DynamicLayer() for _ in cache.layers]
    return fresh
