"""Both monitoring paths install rules built from llmrack.contracts.alerts: the shared rule file is generated from
it, and the queue and temperature thresholds of the Pulumi component and the Ansible role agree with it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from infra.components import monitoring
from llmrack.contracts import alerts

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "ansible" / "roles" / "monitoring"


def _ansible_rules(deployment: dict[str, Any] | None) -> dict[str, str]:
    """The Ansible role's llmrack.rules.yml rendered with its defaults and the playbooks' filters: alert -> expr."""
    spec = importlib.util.spec_from_file_location("llmrack_filters",
                                                  ROOT / "ansible" / "playbooks" / "filter_plugins" / "llmrack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters.update(module.FilterModule().filters())
    variables = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    variables["ansible_managed"] = "test"
    if deployment is not None:
        variables["llmrack_deployment"] = deployment
    text = env.from_string((ROLE / "templates" / "llmrack.rules.yml.j2").read_text()).render(variables)
    return {r["alert"]: r["expr"] for g in yaml.safe_load(text)["groups"] for r in g["rules"] if "alert" in r}


def _threshold(expr: str) -> float:
    match = re.search(r">\s*([0-9.]+)\s*$", expr)
    assert match, f"no `> N` threshold in {expr!r}"
    return float(match.group(1))


def test_shared_rule_file_is_generated_from_the_alert_contract() -> None:
    text = (ROOT / "infra" / "monitoring" / "alerts.yml").read_text()
    assert text == alerts.render_shared_rules(), (
        "infra/monitoring/alerts.yml differs from llmrack.contracts.alerts: run "
        "`python -m llmrack.contracts.alerts > infra/monitoring/alerts.yml`"
    )
    assert monitoring.load_rules() == yaml.safe_load(text)


@pytest.mark.parametrize("max_queue", [1, 2, 5, 32, 128, 256, 1001])
def test_queue_alert_threshold_is_the_same_in_both_paths(max_queue: int) -> None:
    deployment = {"name": "d", "environment": "dev", "model": {"name": "deepseek-r1-distill-qwen-7b", "source": "/m"},
                  "accelerator": "a100-80g",
                  "serving": {"max_model_len": 4096, "max_num_seqs": 8, "max_queue": max_queue}}
    expected = alerts.queue_alert_threshold(max_queue)
    assert expected == max(1, int(max_queue * alerts.QUEUE_RATIO))
    pulumi_rule = monitoring.deployment_rules("ns", max_queue)["groups"][0]["rules"][0]
    assert _threshold(pulumi_rule["expr"]) == expected
    assert _threshold(_ansible_rules(deployment)["ServingQueueFilling"]) == expected


def test_ansible_queue_alert_without_a_spec_uses_the_default_max_queue() -> None:
    from llmrack.contracts.serving_defaults import DEFAULT_MAX_QUEUE

    rules = _ansible_rules(None)
    assert _threshold(rules["ServingQueueFilling"]) == alerts.queue_alert_threshold(DEFAULT_MAX_QUEUE)


def test_temperature_threshold_is_the_contract_s_in_every_rule() -> None:
    shared = {r["alert"]: r["expr"] for g in alerts.shared_rules()["groups"] for r in g["rules"] if "alert" in r}
    for name in ("LlmrackGpuTemperatureHigh", "LlmrackNpuTemperatureHigh"):
        assert _threshold(shared[name]) == alerts.ACCELERATOR_TEMP_CELSIUS
    assert _threshold(_ansible_rules(None)["AcceleratorHot"]) == alerts.ACCELERATOR_TEMP_CELSIUS


def test_role_threshold_knobs_default_to_the_contract() -> None:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert defaults["monitoring_alert_accelerator_temp_celsius"] == alerts.ACCELERATOR_TEMP_CELSIUS
    assert defaults["monitoring_alert_queue_ratio"] == alerts.QUEUE_RATIO
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert specs["monitoring_alert_accelerator_temp_celsius"]["default"] == alerts.ACCELERATOR_TEMP_CELSIUS
    assert specs["monitoring_alert_queue_ratio"]["default"] == alerts.QUEUE_RATIO
