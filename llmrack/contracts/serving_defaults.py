"""The serving limits: their defaults and bounds, shared by the deployment spec and the server.

`serving:` in the spec (llmrack.spec.ServingSpec) is checked against these bounds by `llmrack spec check`, and
the server (serving.settings.ServingSettings, `python -m serving` / `llmrack serve` flags) enforces the same
ones, so a spec that passes `spec check` never gives a server that refuses to start.

    field          default   bounds               meaning
    max_model_len  (model)   16 .. 1048576        longest prompt + completion per sequence, in tokens
    max_num_seqs   32        1 .. 4096            sequences decoded together per replica
    max_queue      256       1 ..                 requests waiting beyond max_num_seqs before 429
    port           8000      1 .. 65535           the server's TCP port

The spec requires max_model_len and max_num_seqs (they size the plan); the server defaults max_model_len to the
model's max_position_embeddings. Server-only knobs: max_prefill_tokens (8192) bounds one prefill's padded
tokens; drain_timeout (30 s) is how long in-flight requests get after SIGTERM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field


@dataclass(frozen=True)
class Limit:
    """One serving limit: its default (None: no default) and inclusive bounds (le None: no upper bound)."""

    name: str
    default: int | None
    ge: int
    le: int | None
    description: str

    def field(self, *, required: bool = False, default: Any = ..., **kwargs: Any) -> Any:
        """A pydantic Field with these bounds; `required` drops the default, `default` replaces it."""
        value = ... if required else (self.default if default is ... else default)
        return Field(value, ge=self.ge, le=self.le, description=self.description, **kwargs)


DEFAULT_MAX_NUM_SEQS = 32
DEFAULT_MAX_QUEUE = 256
DEFAULT_PORT = 8000

MAX_MODEL_LEN = Limit("max_model_len", None, 16, 1_048_576, "longest prompt + completion, in tokens")
MAX_NUM_SEQS = Limit("max_num_seqs", DEFAULT_MAX_NUM_SEQS, 1, 4096, "sequences decoded together per replica")
MAX_QUEUE = Limit("max_queue", DEFAULT_MAX_QUEUE, 1, None, "requests waiting beyond max_num_seqs before 429")
PORT = Limit("port", DEFAULT_PORT, 1, 65535, "the server's TCP port")

# The spec's `serving:` fields the server also takes, by name.
LIMITS = {limit.name: limit for limit in (MAX_MODEL_LEN, MAX_NUM_SEQS, MAX_QUEUE, PORT)}

MAX_PREFILL_TOKENS = 8192
DRAIN_TIMEOUT_S = 30
