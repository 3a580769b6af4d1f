"""The alert rules and dashboards shipped in infra/monitoring for the Pulumi monitoring component."""

from __future__ import annotations

import json

from infra.components import monitoring
from llmrack.contracts import metrics


def test_alert_rules_cover_the_required_conditions() -> None:
    # The queue alert depends on the deployment's max_queue: the component adds it per namespace.
    groups = monitoring.load_rules()["groups"] + monitoring.deployment_rules("ns", 256)["groups"]
    rules = [r for g in groups for r in g["rules"]]
    exprs = " ".join(r["expr"] for r in rules)
    for metric in ("DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_GPU_TEMP",
                   "npu_chip_info_temperature", "llmrack_num_requests_waiting", "llmrack_time_to_first_token_seconds"):
        assert metric in exprs
    for rule in (r for r in rules if "alert" in r):
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]


def test_one_rule_set_covers_both_engines_metric_names() -> None:
    """vLLM's series are recorded under the llmrack names every alert, dashboard and the autoscaler read."""
    recorded = {r["record"]: r["expr"] for g in monitoring.load_rules()["groups"] for r in g["rules"] if "record" in r}
    for name in (metrics.NUM_REQUESTS_WAITING, metrics.KV_CACHE_USAGE):
        assert recorded[name] == metrics.VLLM_EQUIVALENTS[name]
    assert recorded[f"{metrics.TIME_TO_FIRST_TOKEN}_bucket"] == "vllm:time_to_first_token_seconds_bucket"
    assert recorded[metrics.counter_series(metrics.GENERATION_TOKENS)] == "vllm:generation_tokens_total"


def test_dashboards_are_grafana_json_with_panels() -> None:
    dashboards = monitoring.load_dashboards()
    assert set(dashboards) == {"llmrack-serving.json", "llmrack-accelerators.json"}
    for text in dashboards.values():
        data = json.loads(text)
        assert data["uid"].startswith("llmrack-") and all(p["targets"] for p in data["panels"])


def test_serving_pods_carry_the_variant_label_the_canary_judge_reads() -> None:
    from llmrack.contracts.metrics import VARIANT_LABEL
    from llmrack.observe.canary import CANARY, STABLE

    serving = next(c for c in monitoring.scrape_configs("ns", "nvidia") if c["job_name"] == "llmrack-serving")
    relabel = {r["target_label"]: r["source_labels"] for r in serving["relabel_configs"] if "target_label" in r}
    # The Deployments' track label (stable | canary) becomes `variant`, as on racks: the judge's defaults match.
    assert relabel[VARIANT_LABEL] == ["__meta_kubernetes_pod_label_llmrack_io_track"]
    assert f'{VARIANT_LABEL}="stable"' == STABLE and f'{VARIANT_LABEL}="canary"' == CANARY
