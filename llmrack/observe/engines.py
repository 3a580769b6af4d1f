"""Which series to read for each serving engine: llmrack's own names (llmrack.contracts.metrics) or vLLM's.

Both engines export the same quantities under their own names, so the canary judge and the drift report work
on either, and on the Kubernetes canary's metrics too (same names, same `variant` label).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from llmrack.contracts import metrics as names


class EngineName(StrEnum):
    llmrack = "llmrack"
    vllm = "vllm"


@dataclass(frozen=True)
class EngineMetrics:
    ttft: str  # histogram, seconds
    itl: str  # histogram, seconds
    prompt_tokens: str  # histogram, tokens per request
    generation_tokens: str  # histogram, tokens per request
    finished: str  # counter series (with _total), label finished_reason
    failed: str | None  # counter series of failed requests (label status), where the engine has one
    abort_is_failure: bool  # vLLM has no failure counter: an aborted request is the closest it reports


ENGINES = {
    EngineName.llmrack: EngineMetrics(
        ttft=names.TIME_TO_FIRST_TOKEN,
        itl=names.INTER_TOKEN_LATENCY,
        prompt_tokens=names.REQUEST_PROMPT_TOKENS,
        generation_tokens=names.REQUEST_GENERATION_TOKENS,
        finished=names.counter_series(names.REQUEST_SUCCESS),
        failed=names.counter_series(names.REQUEST_FAILURE),
        abort_is_failure=False,
    ),
    EngineName.vllm: EngineMetrics(
        ttft=names.VLLM_TIME_TO_FIRST_TOKEN,
        itl=names.VLLM_INTER_TOKEN_LATENCY,
        prompt_tokens=names.VLLM_REQUEST_PROMPT_TOKENS,
        generation_tokens=names.VLLM_REQUEST_GENERATION_TOKENS,
        finished=names.counter_series(names.VLLM_REQUEST_SUCCESS),
        failed=None,
        abort_is_failure=True,
    ),
}
