"""Prometheus metrics (names: llmrack.contracts.metrics), fed by the engine's observer hooks and by the API layer.

Each app gets its own CollectorRegistry, so several servers in one process (tests) never collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from llmrack.contracts import metrics as names
from serving.engine.core import EngineObserver
from serving.engine.sequence import FinishReason, Sequence

# The *_created series double the exposition size and no dashboard here uses them.
disable_created_metrics()

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
_E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0)
# Tokens per request: vLLM's 1-2-5 series, so the two engines' histograms compare bucket for bucket.
_TOKEN_BUCKETS = (*(float(m * 10**e) for e in range(6) for m in (1, 2, 5)), 1_000_000.0)


class ServingMetrics(EngineObserver):
    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        labels = [names.MODEL_LABEL]
        r = self.registry
        self.ttft = Histogram(names.TIME_TO_FIRST_TOKEN, "Time from arrival to the first generated token",
                              labels, buckets=_LATENCY_BUCKETS, registry=r).labels(model_name)
        self.itl = Histogram(names.INTER_TOKEN_LATENCY, "Time between two tokens of one request",
                             labels, buckets=_ITL_BUCKETS, registry=r).labels(model_name)
        self.e2e = Histogram(names.E2E_REQUEST_LATENCY, "Time from arrival to the last token",
                             labels, buckets=_E2E_BUCKETS, registry=r).labels(model_name)
        self.queue_time = Histogram(names.REQUEST_QUEUE_TIME, "Time a request waited before prefill",
                                    labels, buckets=_LATENCY_BUCKETS, registry=r).labels(model_name)
        self.running = Gauge(names.NUM_REQUESTS_RUNNING, "Sequences in the running batch",
                             labels, registry=r).labels(model_name)
        self.waiting = Gauge(names.NUM_REQUESTS_WAITING, "Requests queued, not yet admitted",
                             labels, registry=r).labels(model_name)
        self.kv_usage = Gauge(names.KV_CACHE_USAGE,
                              "Tokens held in the KV cache over max_num_seqs x max_model_len", labels,
                              registry=r).labels(model_name)
        self.prompt_tokens = Counter(names.PROMPT_TOKENS, "Prefilled prompt tokens", labels,
                                     registry=r).labels(model_name)
        self.generation_tokens = Counter(names.GENERATION_TOKENS, "Generated tokens", labels,
                                         registry=r).labels(model_name)
        self.request_prompt_tokens = Histogram(names.REQUEST_PROMPT_TOKENS, "Prompt tokens per finished request",
                                               labels, buckets=_TOKEN_BUCKETS, registry=r).labels(model_name)
        self.request_generation_tokens = Histogram(names.REQUEST_GENERATION_TOKENS,
                                                   "Generated tokens per finished request", labels,
                                                   buckets=_TOKEN_BUCKETS, registry=r).labels(model_name)
        self._success = Counter(names.REQUEST_SUCCESS, "Requests finished, by finish reason",
                                [names.MODEL_LABEL, "finished_reason"], registry=r)
        self._success_by_reason = {
            reason: self._success.labels(model_name, reason)
            for reason in (FinishReason.stop, FinishReason.length, FinishReason.abort)
        }
        self._failed = Counter(names.REQUEST_FAILURE, "Requests refused or failed, by HTTP status",
                               [names.MODEL_LABEL, "status"], registry=r)
        self._model_name = model_name
        tenant_labels = [names.MODEL_LABEL, names.TENANT_LABEL]
        self._tenant_requests = Counter(names.TENANT_REQUESTS, "Finished requests per tenant", tenant_labels,
                                        registry=r)
        self._tenant_prompt = Counter(names.TENANT_PROMPT_TOKENS, "Prefilled prompt tokens per tenant",
                                      tenant_labels, registry=r)
        self._tenant_generation = Counter(names.TENANT_GENERATION_TOKENS, "Generated tokens per tenant",
                                          tenant_labels, registry=r)
        # request id -> tenant, set by the API layer before the engine sees the request; written by the event loop
        # and read by the engine thread, which a dict's single get/pop under the GIL allows.
        self._tenants: dict[str, str] = {}

    # engine hooks (engine thread)
    def on_admitted(self, seq: Sequence, queue_seconds: float) -> None:
        self.queue_time.observe(queue_seconds)
        self.prompt_tokens.inc(len(seq.prompt_ids))
        tenant = self._tenants.get(seq.request_id)
        if tenant is not None:
            self._tenant_prompt.labels(self._model_name, tenant).inc(len(seq.prompt_ids))

    def on_token(self, seq: Sequence, now: float) -> None:
        self.generation_tokens.inc()
        if seq.first_token is None:
            self.ttft.observe(now - seq.arrival)
        elif seq.last_token is not None:
            self.itl.observe(now - seq.last_token)

    def on_finished(self, seq: Sequence, now: float) -> None:
        tenant = self._tenants.pop(seq.request_id, None)
        if tenant is not None:
            # Aborted requests count too: their tokens were computed, and chargeback pays for compute.
            self._tenant_requests.labels(self._model_name, tenant).inc()
            self._tenant_generation.labels(self._model_name, tenant).inc(len(seq.output_ids))
        if seq.finish_reason in self._success_by_reason:
            self._success_by_reason[seq.finish_reason].inc()
            self.e2e.observe(now - seq.arrival)
            self.request_prompt_tokens.observe(len(seq.prompt_ids))
            self.request_generation_tokens.observe(len(seq.output_ids))
        else:
            self.failed(500)

    def on_step(self, running: int, waiting: int, kv_usage: float) -> None:
        self.running.set(running)
        self.waiting.set(waiting)
        self.kv_usage.set(kv_usage)

    # API layer
    def add_tenants(self, tenants: set[str]) -> None:
        """Series at 0 for every tenant with a key, so the first request's tokens show as an increase."""
        for tenant in tenants:
            for counter in (self._tenant_requests, self._tenant_prompt, self._tenant_generation):
                counter.labels(self._model_name, tenant)

    def tag(self, request_id: str, tenant: str) -> None:
        """Count the request's tokens for `tenant` (before it is submitted, so no engine hook misses it)."""
        self._tenants[request_id] = tenant

    def untag(self, request_id: str) -> None:
        """The request never reached the engine (refused at submit)."""
        self._tenants.pop(request_id, None)

    def failed(self, status: int) -> None:
        self._failed.labels(self._model_name, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
