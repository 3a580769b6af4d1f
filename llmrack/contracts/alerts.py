"""Alert thresholds, and the Prometheus rules built from them for both monitoring paths.

    threshold                  value  rule
    ACCELERATOR_TEMP_CELSIUS   85     a GPU / NPU above it for 5 minutes (it throttles): dcgm-exporter and
                                      npu-exporter rules here, the accelerator textfile rule of the Ansible role
    QUEUE_RATIO                0.8    llmrack_num_requests_waiting above queue_alert_threshold(max_queue) for
                                      5 minutes: new requests are about to get 429
    TTFT_P95_SECONDS           5      p95 time to first token above it for 10 minutes
    EXPORTER_STALE_SECONDS     120    accelerator textfile metrics older than this

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

import sys
from typing import Any

import yaml

from llmrack.contracts.metrics import TIME_TO_FIRST_TOKEN

ACCELERATOR_TEMP_CELSIUS = 85
QUEUE_RATIO = 0.8
TTFT_P95_SECONDS = 5
EXPORTER_STALE_SECONDS = 120

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
    return {"groups": [{"name": "llmrack-accelerators", "rules": accelerators},
                       {"name": "llmrack-serving", "rules": serving}]}


def render_shared_rules() -> str:
    """The text of infra/monitoring/alerts.yml."""
    return RULES_FILE_HEADER + yaml.safe_dump(shared_rules(), sort_keys=False, width=120, allow_unicode=True)


if __name__ == "__main__":
    sys.stdout.write(render_shared_rules())
