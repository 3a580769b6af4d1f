"""Alert thresholds, shared by the rule files the Pulumi monitoring stack and the Ansible monitoring role install.

    threshold                      value   rule
    ACCELERATOR_TEMP_CELSIUS       85      GPU / NPU / textfile accelerator above it for 5 minutes (throttling)
    QUEUE_RATIO                    0.8     llmrack_num_requests_waiting above 0.8 x the spec's max_queue for 5
                                           minutes: new requests are about to get 429
    TTFT_P95_SECONDS               5       p95 time to first token above it for 10 minutes
    EXPORTER_STALE_SECONDS         120     accelerator textfile metrics older than this

`queue_alert_threshold(max_queue)` is the one formula both paths use for the queue alert.
"""

from __future__ import annotations

ACCELERATOR_TEMP_CELSIUS = 85
QUEUE_RATIO = 0.8
TTFT_P95_SECONDS = 5
EXPORTER_STALE_SECONDS = 120


def queue_alert_threshold(max_queue: int) -> int:
    """Waiting requests above which the queue alert fires: QUEUE_RATIO of max_queue, rounded down, at least 1."""
    return max(1, int(max_queue * QUEUE_RATIO))
