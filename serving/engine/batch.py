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
from functools import lru_cache
from typing import Any

HEADROOM = 32  # spare columns per layer buffer: a decode step appends in place; a copy only every HEADROOM steps


@lru_cache(maxsize=1)  # one class, defined on first use so importing this module does not import transformers
def _growable_layer_class() -> Any:
    from transformers.cache_utils import DynamicLayer

    class GrowableLayer(DynamicLayer):
        """A DynamicLayer whose keys/values are views of a buffer with spare columns.

        DynamicLayer appends each step's token with torch.cat, copying the whole cache every step (12% of a decode
        step on the tiny models); here appending is an in-place copy of one column.
        """

        def __init__(self) -> None:
            super().__init__()
            self._kbuf: Any = None
            self._vbuf: Any = None
            self._used = 0

        def assign(self, keys: Any, values: Any) -> None:
            n = keys.shape[-2]
            kshape, vshape = list(keys.shape), list(values.shape)
            kshape[-2] = vshape[-2] = n + HEADROOM
            self._kbuf, self._vbuf = keys.new_empty(kshape), values.new_empty(vshape)
            self._kbuf[..., :n, :].copy_(keys)
            self._vbuf[..., :n, :].copy_(values)
            self._used = n
            self.keys, self.values = self._kbuf[..., :n, :], self._vbuf[..., :n, :]
            self.device, self.is_initialized = keys.device, True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if self._kbuf is None:
                self.assign(key_states, value_states)
                return self.keys, self.values
            n = self._used + key_states.shape[-2]
            if n > self._kbuf.shape[-2]:
                self.assign(self.keys, self.values)
            self._kbuf[..., self._used : n, :].copy_(key_states)
            self._vbuf[..., self._used : n, :].copy_(value_states)
            self._used = n
            self.keys, self.values = self._kbuf[..., :n, :], self._vbuf[..., :n, :]
            return self.keys, self.values

        def nbytes(self) -> int:
            if self._kbuf is None:
                return 0
            return int(self._kbuf.numel() * self._kbuf.element_size() + self._vbuf.numel() * self._vbuf.element_size())

    return GrowableLayer


def _layer() -> Any:
    return _growable_layer_class()()


def new_cache(model_config: Any) -> Any:
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model_config)
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        # Sliding-window layers keep only a window and cannot be left-padded/merged this way.
        raise ValueError("models with sliding-window or hybrid attention layers are not supported by this engine")
    cache.layers = [_layer() for _ in cache.layers]
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
            layer.assign(k.clone(), v.clone())  # clone: k/v may be views of the buffer assign() replaces

    def nbytes(self) -> int:
        """Bytes the cache holds, spare columns included."""
        return sum(layer.nbytes() for layer in self.cache.layers)

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
            # A fresh buffer: the dropped rows' memory is freed now, not when a view of the old one dies.
            keys = src.keys.index_select(0, index)[..., start:, :]
            dst.assign(keys, src.values.index_select(0, index)[..., start:, :])
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
            dst.assign(torch.cat(ks, dim=0), torch.cat(vs, dim=0))
        valid = torch.cat(
            [torch.cat([p.valid.new_zeros((p.rows, length - p.columns)), p.valid], dim=1) for p in parts], dim=0
        )
        return KVBatch(cache, valid, torch.cat([p.positions for p in parts]))


def new_cache_like(cache: Any) -> Any:
    from transformers import DynamicCache

    fresh = DynamicCache()
    fresh.layers = [_layer() for _ in cache.layers]
    return fresh
