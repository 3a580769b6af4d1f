"""The engine: continuous (iteration-level) batching over a Hugging Face causal LM.

`Engine` runs one scheduler loop: each iteration admits waiting requests (one batched prefill), runs ONE decode
step for every running sequence, and retires finished sequences at once. `AsyncEngine` bridges it to asyncio.
"""

from serving.engine.core import Engine, EngineConfig, EngineError, PromptTooLongError, QueueFullError
from serving.engine.sampling import SamplingParams
from serving.engine.sequence import RequestOutput

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineError",
    "PromptTooLongError",
    "QueueFullError",
    "RequestOutput",
    "SamplingParams",
]
