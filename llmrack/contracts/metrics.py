"""Prometheus metric names llmrack exposes; dashboards, alert rules and the autoscaler query these.

The serving layer (serving/metrics.py) exposes on GET /metrics, every series labelled `model_name`:

    llmrack_time_to_first_token_seconds    histogram  arrival -> first generated token
    llmrack_inter_token_latency_seconds    histogram  between two tokens of one request
    llmrack_e2e_request_latency_seconds    histogram  arrival -> last token
    llmrack_request_queue_time_seconds     histogram  time waiting before prefill
    llmrack_num_requests_running           gauge      sequences in the running batch
    llmrack_num_requests_waiting           gauge      requests queued, not yet admitted (the queue alert and
                                                      the Kubernetes autoscaler's pods metric)
    llmrack_kv_cache_usage_ratio           gauge      KV tokens held over max_num_seqs x max_model_len
    llmrack_prompt_tokens_total            counter    prefilled prompt tokens
    llmrack_generation_tokens_total        counter    generated tokens
    llmrack_request_success_total          counter    finished requests, label finished_reason
    llmrack_request_failure_total          counter    refused or failed requests, label status
    llmrack_request_prompt_tokens          histogram  prompt tokens per request (vLLM: vllm:request_prompt_tokens)
    llmrack_request_generation_tokens      histogram  generated tokens per request
                                                      (vLLM: vllm:request_generation_tokens)

Per tenant, for chargeback (`llmrack usage`), labelled `model_name` and `tenant` (the key store's tenant of the
request's key; never the key, never anything of the prompt):

    llmrack_tenant_requests_total          counter    finished requests
    llmrack_tenant_prompt_tokens_total     counter    prefilled prompt tokens
    llmrack_tenant_generation_tokens_total counter    generated tokens

The batch service (llmrack/batch/metrics.py) exposes on its own GET /metrics, labelled `tenant` and `batch_id`
(per job while it runs and for an hour after it ends), and unlabelled for the service as a whole:

    llmrack_batch_lines                    gauge      a job's lines, label state (pending, completed, failed)
    llmrack_batch_tokens_total             counter    tokens of a job's answered lines, label kind (prompt, completion)
    llmrack_batch_jobs                     gauge      jobs per tenant and status (those counted above)
    llmrack_batch_inflight_requests        gauge      batch requests the service has at the rack now
    llmrack_batch_concurrency_limit        gauge      how many it allows itself now (429/503 and queue back-off)
    llmrack_batch_upstream_retries_total   counter    requests sent again because the rack was busy or away

Counters are declared without the `_total` suffix (prometheus_client appends it); the constants below
are the declared names, the exposed series names add `_total`.

The gateway role writes a node exporter textfile gauge, labelled `path` (the certificate file):

    llmrack_tls_certificate_not_after_timestamp_seconds   end of validity of the gateway's TLS certificate

The Ansible monitoring role's accelerator exporter (ansible/roles/monitoring/files/llmrack-accelerator-exporter)
writes node exporter textfile gauges, labelled `vendor` (and `index`, `name` per device):

    llmrack_accelerator_up                 1 if nvidia-smi / npu-smi answered
    llmrack_accelerator_count              devices the tool lists
    llmrack_accelerator_expected           devices the inventory expects (llmrack_accelerator_count)
    llmrack_accelerator_memory_used_bytes, llmrack_accelerator_memory_total_bytes,
    llmrack_accelerator_utilization_ratio, llmrack_accelerator_temperature_celsius,
    llmrack_accelerator_power_watts          per device
    llmrack_accelerator_last_sample_timestamp_seconds
"""

from __future__ import annotations

PREFIX = "llmrack_"

TIME_TO_FIRST_TOKEN = "llmrack_time_to_first_token_seconds"
INTER_TOKEN_LATENCY = "llmrack_inter_token_latency_seconds"
E2E_REQUEST_LATENCY = "llmrack_e2e_request_latency_seconds"
REQUEST_QUEUE_TIME = "llmrack_request_queue_time_seconds"
NUM_REQUESTS_RUNNING = "llmrack_num_requests_running"
NUM_REQUESTS_WAITING = "llmrack_num_requests_waiting"
KV_CACHE_USAGE = "llmrack_kv_cache_usage_ratio"
PROMPT_TOKENS = "llmrack_prompt_tokens"
GENERATION_TOKENS = "llmrack_generation_tokens"
REQUEST_SUCCESS = "llmrack_request_success"
REQUEST_FAILURE = "llmrack_request_failure"

MODEL_LABEL = "model_name"

# Per tenant (chargeback): the key store's tenant of the request's key.
TENANT_LABEL = "tenant"
TENANT_REQUESTS = "llmrack_tenant_requests"
TENANT_PROMPT_TOKENS = "llmrack_tenant_prompt_tokens"
TENANT_GENERATION_TOKENS = "llmrack_tenant_generation_tokens"
TENANT_COUNTERS = (TENANT_REQUESTS, TENANT_PROMPT_TOKENS, TENANT_GENERATION_TOKENS)

# Per-request token counts (histograms): the drift report's traffic shape and the canary's output lengths.
REQUEST_PROMPT_TOKENS = "llmrack_request_prompt_tokens"
REQUEST_GENERATION_TOKENS = "llmrack_request_generation_tokens"
FINISHED_REASON_LABEL = "finished_reason"
# stable | canary: attached to every serving series by Prometheus, per target (the monitoring role labels the
# hosts of group serving_canary; the Kubernetes canary's pods carry it as a pod label).
VARIANT_LABEL = "variant"

# vLLM's own names for the same quantities (vLLM exports them itself; nothing of ours renames them).
VLLM_TIME_TO_FIRST_TOKEN = "vllm:time_to_first_token_seconds"
VLLM_INTER_TOKEN_LATENCY = "vllm:inter_token_latency_seconds"
VLLM_REQUEST_PROMPT_TOKENS = "vllm:request_prompt_tokens"
VLLM_REQUEST_GENERATION_TOKENS = "vllm:request_generation_tokens"
VLLM_REQUEST_SUCCESS = "vllm:request_success"
VLLM_E2E_REQUEST_LATENCY = "vllm:e2e_request_latency_seconds"
VLLM_REQUEST_QUEUE_TIME = "vllm:request_queue_time_seconds"
VLLM_NUM_REQUESTS_RUNNING = "vllm:num_requests_running"
VLLM_NUM_REQUESTS_WAITING = "vllm:num_requests_waiting"
VLLM_KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"  # a 0-1 ratio despite the name
VLLM_PROMPT_TOKENS = "vllm:prompt_tokens"
VLLM_GENERATION_TOKENS = "vllm:generation_tokens"
# llmrack name -> vLLM name of the same quantity, same labels (model_name, finished_reason). The one rule set
# (llmrack.contracts.alerts) records each vLLM series under its llmrack name, so alerts, dashboards and the
# autoscaler's queue metric read one set of names whichever engine serves. The per-request token histograms are
# left out: the drift and prompt-length queries read both engines' names themselves.
VLLM_EQUIVALENTS = {
    TIME_TO_FIRST_TOKEN: VLLM_TIME_TO_FIRST_TOKEN,
    INTER_TOKEN_LATENCY: VLLM_INTER_TOKEN_LATENCY,
    E2E_REQUEST_LATENCY: VLLM_E2E_REQUEST_LATENCY,
    REQUEST_QUEUE_TIME: VLLM_REQUEST_QUEUE_TIME,
    NUM_REQUESTS_RUNNING: VLLM_NUM_REQUESTS_RUNNING,
    NUM_REQUESTS_WAITING: VLLM_NUM_REQUESTS_WAITING,
    KV_CACHE_USAGE: VLLM_KV_CACHE_USAGE,
    PROMPT_TOKENS: VLLM_PROMPT_TOKENS,
    GENERATION_TOKENS: VLLM_GENERATION_TOKENS,
    REQUEST_SUCCESS: VLLM_REQUEST_SUCCESS,
}

# The batch service's series (llmrack.batch.metrics); counters declared without `_total`.
BATCH_LINES = "llmrack_batch_lines"
BATCH_TOKENS = "llmrack_batch_tokens"
BATCH_JOBS = "llmrack_batch_jobs"
BATCH_INFLIGHT = "llmrack_batch_inflight_requests"
BATCH_CONCURRENCY_LIMIT = "llmrack_batch_concurrency_limit"
BATCH_UPSTREAM_RETRIES = "llmrack_batch_upstream_retries"
BATCH_RUNNER_ACTIVE = "llmrack_batch_runner_active"  # 1 on the service holding the store's runner lease
BATCH_ID_LABEL = "batch_id"

# The gateway's certificate expiry (node exporter textfile, written by the gateway role).
TLS_CERTIFICATE_NOT_AFTER = "llmrack_tls_certificate_not_after_timestamp_seconds"

ACCELERATOR_UP = "llmrack_accelerator_up"
ACCELERATOR_COUNT = "llmrack_accelerator_count"
ACCELERATOR_EXPECTED = "llmrack_accelerator_expected"
ACCELERATOR_TEMPERATURE = "llmrack_accelerator_temperature_celsius"
ACCELERATOR_LAST_SAMPLE = "llmrack_accelerator_last_sample_timestamp_seconds"
# Per device (labels vendor, index, name, bus_id).
ACCELERATOR_MEMORY_USED = "llmrack_accelerator_memory_used_bytes"
ACCELERATOR_MEMORY_TOTAL = "llmrack_accelerator_memory_total_bytes"
ACCELERATOR_UTILIZATION = "llmrack_accelerator_utilization_ratio"
ACCELERATOR_POWER = "llmrack_accelerator_power_watts"
ACCELERATOR_GAUGES = (ACCELERATOR_UP, ACCELERATOR_COUNT, ACCELERATOR_EXPECTED, ACCELERATOR_LAST_SAMPLE,
                      ACCELERATOR_MEMORY_USED, ACCELERATOR_MEMORY_TOTAL, ACCELERATOR_UTILIZATION,
                      ACCELERATOR_TEMPERATURE, ACCELERATOR_POWER)

SERVING_HISTOGRAMS = (TIME_TO_FIRST_TOKEN, INTER_TOKEN_LATENCY, E2E_REQUEST_LATENCY, REQUEST_QUEUE_TIME,
                      REQUEST_PROMPT_TOKENS, REQUEST_GENERATION_TOKENS)
SERVING_GAUGES = (NUM_REQUESTS_RUNNING, NUM_REQUESTS_WAITING, KV_CACHE_USAGE)
SERVING_COUNTERS = (PROMPT_TOKENS, GENERATION_TOKENS, REQUEST_SUCCESS, REQUEST_FAILURE)


def vllm_series(name: str) -> list[tuple[str, str]]:
    """(llmrack series, vLLM series) pairs of one quantity as Prometheus stores them: a histogram's _bucket,
    _sum and _count, a counter's _total, a gauge itself."""
    vllm = VLLM_EQUIVALENTS[name]
    if name in SERVING_HISTOGRAMS:
        return [(f"{name}_{s}", f"{vllm}_{s}") for s in ("bucket", "sum", "count")]
    if name in SERVING_COUNTERS:
        return [(counter_series(name), counter_series(vllm))]
    return [(name, vllm)]


def counter_series(name: str) -> str:
    """The exposed sample name of a counter declared as `name`."""
    return f"{name}_total"
