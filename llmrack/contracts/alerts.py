"""Alert thresholds, and the Prometheus rules built from them for both monitoring paths.

    threshold                  value  rule
    ACCELERATOR_TEMP_CELSIUS   85     a GPU / NPU above it for 5 minutes (it throttles): dcgm-exporter and
                                      npu-exporter rules here, the accelerator textfile rule of the Ansible role
    QUEUE_RATIO                0.8    llmrack_num_requests_waiting above queue_alert_threshold(max_queue) for
                                      5 minutes: new requests are about to get 429
    TTFT_P95_SECONDS           5      p95 time to first token above it for 10 minutes
    EXPORTER_STALE_SECONDS     120    accelerator textfile metrics older than this
    PROMPT_LENGTH_SHIFT_RATIO  1.5    mean prompt tokens per request over the last hour more than 1.5 x (or less
                                      than 1/1.5 x) the day before, for 30 minutes: the traffic changed shape
                                      (`llmrack drift` gives the PSI per histogram); not a quality signal
    (gateway)                  0      no serving node left behind the gateway (HAProxy's active servers)
    TLS_EXPIRY_DAYS            30     the gateway's TLS certificate ends in fewer days than this (the rack CA's
                                      certificates are re-issued by the gateway play; a Vault one by its owner)

vLLM serves under its own metric names (vllm:*): the group llmrack-engine-vllm records them under llmrack's,
so the rules below, the dashboards and the autoscaler work for both engines (`vllm_recording_rules`).

One rule file, infra/monitoring/alerts.yml, is generated from `shared_rules()` (`python -m llmrack.contracts.alerts
> infra/monitoring/alerts.yml`; a test fails when the file and this module differ). The Pulumi monitoring
component loads it into kube-prometheus-stack and the Ansible monitoring role installs it on racks
(monitoring_shared_rules_file). The queue alert depends on the deployment's max_queue, so each path adds it
with its own labels: the Pulumi component per namespace, the Ansible role's llmrack.rules.yml.j2 per node, both
through `queue_alert_threshold` (the role through the `llmrack_queue_alert_threshold` filter). The role's
threshold knobs (monitoring_alert_accelerator_temp_celsius, monitoring_alert_queue_ratio) default to these
values; a test holds them equal.

GPU metrics are dcgm-exporter's (DCGM field names), Ascend metrics Huawei npu-exporter's, serving metrics
llmrack.contracts.metrics'.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import yaml

from llmrack.contracts.metrics import (
    REQUEST_PROMPT_TOKENS,
    TIME_TO_FIRST_TOKEN,
    TLS_CERTIFICATE_NOT_AFTER,
    VLLM_EQUIVALENTS,
    VLLM_REQUEST_PROMPT_TOKENS,
    vllm_series,
)

ACCELERATOR_TEMP_CELSIUS = 85
QUEUE_RATIO = 0.8
TTFT_P95_SECONDS = 5
EXPORTER_STALE_SECONDS = 120
PROMPT_LENGTH_SHIFT_RATIO = 1.5
TLS_EXPIRY_DAYS = 30
# The gateway role's HAProxy backend (ansible/roles/gateway/vars/main.yml).
GATEWAY_BACKEND = "llmrack_serving"

QUEUE_ALERT_FOR = "5m"
RULES_FILE_HEADER = """\
# llmrack alert rules (Prometheus rule file), shared by the Pulumi monitoring component (kube-prometheus-stack)
# and the Ansible monitoring role (monitoring_shared_rules_file). Generated from llmrack/contracts/alerts.py:
# edit that module, then `python -m llmrack.contracts.alerts > infra/monitoring/alerts.yml`.
# Check with `promtool check rules infra/monitoring/alerts.yml`.
"""


def queue_alert_threshold(max_queue: int, ratio: float = QUEUE_RATIO) -> int:
    """Waiting requests above which the queue alert fires: `ratio` of max_queue, rounded down, at least 1."""
    return max(1, int(max_queue * ratio))


def _rule(alert: str, expr: str, severity: str, summary: str, description: str, for_: str | None = None,
          ) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": alert, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "description": description}
    return rule


def shared_rules() -> dict[str, Any]:
    """The rule groups both monitoring paths install (infra/monitoring/alerts.yml)."""
    t = ACCELERATOR_TEMP_CELSIUS
    accelerators = [
        # DCGM reports the last XID code seen; any XID means the driver saw a GPU fault (79: fell off the bus,
        # 48: double-bit ECC, 63/64: row remapping, 94/95: contained/uncontained ECC).
        _rule("LlmrackGpuXidError", "max by (Hostname, gpu) (max_over_time(DCGM_FI_DEV_XID_ERRORS[5m])) > 0",
              "critical", "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported XID {{ $value }}",
              "Drain the node and check `nvidia-smi -q` / dmesg; XID 79 or 48 means the GPU must be replaced "
              "or reset."),
        _rule("LlmrackGpuEccUncorrectable",
              "increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[10m]) > 0 or DCGM_FI_DEV_ROW_REMAP_FAILURE > 0", "critical",
              "Uncorrectable ECC errors on GPU {{ $labels.gpu }} of {{ $labels.Hostname }}",
              "Double-bit ECC errors or a failed row remap: results on this GPU cannot be trusted."),
        _rule("LlmrackGpuTemperatureHigh", f"DCGM_FI_DEV_GPU_TEMP > {t}", "warning",
              "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} at {{ $value }} C",
              f"Above {t} C for 5 minutes the GPU throttles; check airflow and fans.", "5m"),
        _rule("LlmrackNpuUnhealthy", "npu_chip_info_health_status == 0", "critical",
              "NPU {{ $labels.id }} unhealthy on {{ $labels.instance }}",
              "npu-smi reports the chip unhealthy (driver fault or uncorrectable HBM ECC).", "2m"),
        _rule("LlmrackNpuTemperatureHigh", f"npu_chip_info_temperature > {t}", "warning",
              "NPU {{ $labels.id }} on {{ $labels.instance }} at {{ $value }} C",
              f"Above {t} C for 5 minutes the NPU throttles; check airflow and fans.", "5m"),
    ]
    serving = [
        _rule("LlmrackTimeToFirstTokenHigh",
              f"histogram_quantile(0.95, sum by (le, namespace) (rate({TIME_TO_FIRST_TOKEN}_bucket[5m]))) "
              f"> {TTFT_P95_SECONDS}", "warning",
              "p95 time to first token in {{ $labels.namespace }} is {{ $value }} s",
              "Long prompts or a saturated replica; compare with the queue depth and the plan's prefill bound.",
              "10m"),
        _rule("LlmrackServingDown", 'up{job="llmrack-serving"} == 0', "critical",
              "Serving pod {{ $labels.pod }} does not answer /metrics",
              "The pod is down or not ready; see `kubectl describe pod` and the serving logs.", "5m"),
    ]
    shift = math.log(PROMPT_LENGTH_SHIFT_RATIO)
    serving.append(_rule(
        "LlmrackPromptLengthShift",
        f"abs(ln({_mean_prompt_tokens('1h')} / {_mean_prompt_tokens('1d', '1h')})) > {shift:.4f}",
        "warning", f"Mean prompt length moved more than {PROMPT_LENGTH_SHIFT_RATIO:g}x against the day before",
        "The traffic changed shape (longer or shorter prompts): expect other latency, KV-cache use and capacity. "
        "`llmrack drift` shows the PSI per histogram. This says nothing about answer quality.", "30m"))
    gateway = [
        _rule("LlmrackGatewayNoBackend", f'haproxy_backend_active_servers{{proxy="{GATEWAY_BACKEND}"}} == 0',
              "critical", "The gateway on {{ $labels.node }} has no serving node to send requests to",
              "Every node fails its /ready check or is in maintenance: clients get 503. Check the nodes' serving "
              "units and a rollout that may have stopped half way.", "1m"),
        _rule("LlmrackTlsCertificateExpiring",
              f"({TLS_CERTIFICATE_NOT_AFTER} - time()) / 86400 < {TLS_EXPIRY_DAYS}", "warning",
              "The gateway's TLS certificate on {{ $labels.instance }} ends in {{ $value | humanize }} days",
              "Re-run the gateway play (a rack CA certificate is re-issued) or put a new certificate in the "
              "inventory's gateway_tls_certificate; clients refuse an expired one.", "1h"),
    ]
    return {"groups": [{"name": "llmrack-accelerators", "rules": accelerators},
                       {"name": "llmrack-engine-vllm", "rules": vllm_recording_rules()},
                       {"name": "llmrack-serving", "rules": serving},
                       {"name": "llmrack-gateway", "rules": gateway}]}


def _mean_prompt_tokens(window: str, offset: str | None = None) -> str:
    """Mean prompt tokens per request over `window`, for either engine's histogram."""
    names = f'{{__name__=~"{REQUEST_PROMPT_TOKENS}_%s|{VLLM_REQUEST_PROMPT_TOKENS}_%s"}}'
    shift = f" offset {offset}" if offset else ""
    return (f"(sum(rate({names % ('sum', 'sum')}[{window}]{shift})) / "
            f"sum(rate({names % ('count', 'count')}[{window}]{shift})))")


def vllm_recording_rules() -> list[dict[str, Any]]:
    """vLLM's serving series recorded under llmrack's names (llmrack.contracts.metrics.VLLM_EQUIVALENTS), labels
    kept: every rule, dashboard and the autoscaler's queue metric written against llmrack_* then covers both
    engines. A node runs one engine, so a recorded series never meets an llmrack one with the same labels."""
    return [{"record": ours, "expr": theirs}
            for name in VLLM_EQUIVALENTS for ours, theirs in vllm_series(name)]


def render_shared_rules() -> str:
    """The text of infra/monitoring/alerts.yml."""
    return RULES_FILE_HEADER + yaml.safe_dump(shared_rules(), sort_keys=False, width=120, allow_unicode=True)


if __name__ == "__main__":
    sys.stdout.write(render_shared_rules())
