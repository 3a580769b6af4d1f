"""One request inside the engine: its tokens, incremental detokenisation, stop conditions and timings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from serving.engine.sampling import RowState, SamplingParams


class FinishReason(StrEnum):
    stop = "stop"  # EOS, a stop token id or a stop string
    length = "length"  # max_tokens or max_model_len reached
    abort = "abort"  # cancelled: client went away, or the server drained past its timeout
    error = "error"  # this request failed inside the engine; the others carry on


@dataclass
class RequestOutput:
    """What the engine reports for a request after a step: the new text and tokens since the last report."""

    request_id: str
    delta_text: str
    new_token_ids: list[int]
    prompt_tokens: int
    completion_tokens: int
    finished: bool = False
    finish_reason: FinishReason | None = None
    error: str | None = None


class IncrementalDetokenizer:
    """Decode tokens as they come without re-decoding the whole output each step.

    Byte-level BPE splits multi-byte characters across tokens, so text is only released once the window from
    `prefix` decodes to something that does not end in a replacement character (the approach vLLM and TGI use).
    """

    def __init__(self, backend: Any, skip_special_tokens: bool) -> None:
        self._decode = backend.decode
        self._skip = skip_special_tokens
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self._prefix : self._read], skip_special_tokens=self._skip)
        new_text = self._decode(self.ids[self._prefix :], skip_special_tokens=self._skip)
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            delta = new_text[len(prefix_text) :]
            self._prefix = self._read
            self._read = len(self.ids)
            return str(delta)
        return ""


@dataclass
class Sequence:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    detok: IncrementalDetokenizer
    eos_token_ids: frozenset[int]
    max_model_len: int
    generator: Any | None = None
    priority: int = 0  # lower is admitted sooner (vLLM's convention); online requests carry 0
    output_ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0  # characters of `text` already reported
    tokens_emitted: int = 0
    finish_reason: FinishReason | None = None
    error: str | None = None
    arrival: float = field(default_factory=time.monotonic)
    admitted: float | None = None
    first_token: float | None = None
    last_token: float | None = None

    def __post_init__(self) -> None:
        self._stop_ids = frozenset(self.params.stop_token_ids)
        self._max_stop = max((len(s) for s in self.params.stop), default=0)
        self.row = RowState(self.params, self.generator)

    @property
    def total_len(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def prepare_row(self) -> RowState:
        """Sampler inputs for this step: ban end-of-sequence tokens until min_tokens are out."""
        if len(self.output_ids) < self.params.min_tokens:
            banned = set(self._stop_ids)
            if not self.params.ignore_eos:
                banned |= self.eos_token_ids
            self.row.banned = sorted(banned)
        elif self.row.banned:
            self.row.banned = []
        return self.row

    def append(self, token_id: int) -> None:
        """Take one sampled token and decide whether the sequence is finished."""
        self.output_ids.append(token_id)
        n = len(self.output_ids)
        if token_id in self._stop_ids or (not self.params.ignore_eos and token_id in self.eos_token_ids):
            self.finish_reason = FinishReason.stop
        else:
            delta = self.detok.add(token_id)
            if delta:
                before = len(self.text)
                self.text += delta
                if self._max_stop:
                    start = max(0, before - self._max_stop + 1)
                    hits = [i for s in self.params.stop if (i := self.text.find(s, start)) >= 0]
                    if hits:
                        self.text = self.text[: min(hits)]
                        self.finish_reason = FinishReason.stop
        if self.finish_reason is None and (n >= self.params.max_tokens or self.total_len >= self.max_model_len):
            self.finish_reason = FinishReason.length

    def take_output(self) -> RequestOutput | None:
        """The text and tokens not yet reported; None when there is nothing new to say."""
        end = len(self.text)
        if not self.finished and self._max_stop:
            # Hold back a possible stop-string prefix: it must never reach a client if the stop completes.
            end = max(self.emitted, end - self._max_stop + 1)
        new_ids = self.output_ids[self.tokens_emitted :]
        if not self.finished and end == self.emitted and not new_ids:
            return None
        delta = self.text[self.emitted : end]
        self.emitted = end
        self.tokens_emitted = len(self.output_ids)
        return RequestOutput(
            request_id=self.request_id,
            delta_text=delta,
            new_token_ids=new_ids,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=len(self.output_ids),
            finished=self.finished,
            finish_reason=self.finish_reason,
            error=self.error,
        )
