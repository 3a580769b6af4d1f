"""Server settings: one pydantic-settings model, read from LLMRACK_SERVE_* variables or set by the CLI."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmrack.contracts.serving_defaults import (
    DRAIN_TIMEOUT_S,
    MAX_MODEL_LEN,
    MAX_NUM_SEQS,
    MAX_PREFILL_TOKENS,
    MAX_QUEUE,
    PORT,
)
from serving.model.devices import Device, DType


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMRACK_SERVE_", extra="forbid", protected_namespaces=())

    model: Path = Field(description="Hugging Face model directory (local disk only)")
    served_model_name: str | None = Field(None, description="name clients use; default: the directory's name")
    host: str = "0.0.0.0"
    port: int = PORT.field()
    device: Device = Device.cpu
    dtype: DType | None = None
    max_num_seqs: int = MAX_NUM_SEQS.field()
    max_model_len: int | None = MAX_MODEL_LEN.field(default=None)
    max_queue: int = MAX_QUEUE.field()
    max_prefill_tokens: int = Field(MAX_PREFILL_TOKENS, ge=1)
    api_key_file: Path | None = None
    drain_timeout: float = Field(float(DRAIN_TIMEOUT_S), ge=0)
    quantize: str | None = Field(None, pattern="^int8$")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: torch's choice)")
    log_level: str = "info"
    # TLS on the serving port (serving.tls): both files or neither.
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> ServingSettings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("give both --ssl-certfile and --ssl-keyfile, or neither")
        for path in (self.ssl_certfile, self.ssl_keyfile):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a file")
        return self

    @property
    def name(self) -> str:
        return self.served_model_name or self.model.resolve().name


@lru_cache
def get_settings() -> ServingSettings:
    """Settings from the environment, built on first use (never at import time)."""
    return ServingSettings()  # `model` comes from LLMRACK_SERVE_MODEL
