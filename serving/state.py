"""What one server process holds: settings, the loaded model, the engine, metrics, keys, readiness and drain state."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from serving.auth import ApiKeys
from serving.engine.async_engine import AsyncEngine
from serving.engine.core import Engine, EngineConfig
from serving.engine.sampling import SamplingParams
from serving.metrics import ServingMetrics
from serving.model.loader import LoadedModel, load
from serving.settings import ServingSettings

log = logging.getLogger("serving")


class ServerState:
    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.metrics = ServingMetrics(self.name)
        self.keys = ApiKeys.from_file(settings.api_key_file) if settings.api_key_file else ApiKeys([])
        self.metrics.add_tenants(self.keys.tenants)
        self.keys.on_reload = self.metrics.add_tenants
        self.loaded: LoadedModel | None = None
        self.engine: Engine | None = None
        self.aengine: AsyncEngine | None = None
        self.max_model_len = settings.max_model_len or 0
        self.ready = False
        self.load_error: str | None = None
        self.draining = False
        self.inflight: set[str] = set()
        self.created = int(time.time())

    async def load(self) -> None:
        """Load and warm the model off the event loop, so /health answers while it loads."""
        loop = asyncio.get_running_loop()
        try:
            engine = await asyncio.to_thread(self._load_and_warm)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", self.load_error)
            return
        self.aengine = AsyncEngine(engine, loop)
        engine.start()
        self.engine = engine
        self.ready = True
        log.info("ready: serving %r (max_model_len %d, max_num_seqs %d)", self.name, self.max_model_len,
                 self.settings.max_num_seqs)

    def _load_and_warm(self) -> Engine:
        import torch

        s = self.settings
        if s.threads:
            torch.set_num_threads(s.threads)
        self.loaded = load(s.model, s.device, s.dtype, s.quantize)
        model_len = self.loaded.max_position_embeddings
        if s.max_model_len and s.max_model_len > model_len:
            raise ValueError(f"--max-model-len {s.max_model_len} exceeds the model's max_position_embeddings "
                             f"({model_len})")
        self.max_model_len = s.max_model_len or model_len
        engine = Engine(
            self.loaded.model, self.loaded.tokenizer, self.loaded.eos_token_ids,
            EngineConfig(max_num_seqs=s.max_num_seqs, max_model_len=self.max_model_len, max_queue=s.max_queue,
                         max_prefill_tokens=s.max_prefill_tokens),
            observer=None,
        )
        # Warm-up: the first forward of each shape pays one-off costs (allocator, kernel selection); pay them
        # before /ready says yes. Two requests of different lengths exercise prefill padding, decode and merge.
        warm = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)
        engine.submit([1] * 8, warm)
        engine.step()
        engine.submit([1] * 3, warm)  # joins the running one: exercises prefill padding and the KV merge
        engine.run_until_idle()
        engine.observer = self.metrics  # warm-up traffic stays out of the metrics
        return engine

    def begin_drain(self) -> None:
        self.draining = True
        log.warning("draining: /ready now answers 503 and new requests are refused; %d in flight",
                    len(self.inflight))

    def abort_inflight(self) -> None:
        if self.engine is not None:
            for request_id in list(self.inflight):
                self.engine.abort(request_id)

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.stop()
            self.engine = None
        if self.loaded is not None:
            self.loaded.release()
            self.loaded = None
        self.ready = False

    @property
    def tokenizer(self) -> Any:
        assert self.loaded is not None
        return self.loaded.tokenizer
