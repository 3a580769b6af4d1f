"""Filters that read the deployment spec (group var `llmrack_deployment`) through llmrack itself.

The spec is parsed only by llmrack.spec, so a mistake in group_vars is reported exactly as
`llmrack spec check` reports it, and the serving command comes from the one renderer the Pulumi program
uses too (llmrack.contracts.serving_command). Runs on the controller, in the Python that runs ansible-playbook
(the project's venv).
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from llmrack import catalog
from llmrack.contracts import alerts
from llmrack.contracts.serving_command import (
    READY_PATH,
    NodeKind,
    ServingCommandError,
    ServingInputs,
    api_key_file_content,
    render,
)
from llmrack.contracts.serving_defaults import DEFAULT_MAX_QUEUE
from llmrack.errors import LlmrackError
from llmrack.plan import plan_or_raise
from llmrack.spec import DeploymentSpec, parse_spec


def _spec(data: Any) -> DeploymentSpec:
    try:
        return parse_spec(dict(data) if data is not None else None, "group_vars llmrack_deployment")
    except LlmrackError as exc:
        raise AnsibleFilterError(str(exc)) from None


def serving_command(data: Any, device: str, model_mount: str, api_keys: bool = True, cpu_cores: int | None = None,
                    drain_timeout: int = 30) -> dict[str, Any]:
    """The serving command of one node (llmrack.contracts.serving_command), as plain data for the unit template."""
    if device not in NodeKind.__members__:
        raise AnsibleFilterError(f"serving device {device!r} is not one of {', '.join(NodeKind.__members__)}")
    spec = _spec(data)
    try:
        plan = plan_or_raise(spec.plan_request(), catalog.accelerator(spec.accelerator))
        inputs = ServingInputs.from_spec(spec, plan, device, model_path=model_mount, api_keys=bool(api_keys),
                                         drain_timeout_s=int(drain_timeout),
                                         cpu_cores=int(cpu_cores) if cpu_cores else None)
        return render(inputs).to_dict()
    except (LlmrackError, ServingCommandError) as exc:
        raise AnsibleFilterError(f"group_vars llmrack_deployment: {exc}") from None


def ready_path(data: Any) -> str:
    """Where the spec's engine answers once it can take requests: /ready (llmrack), /health (vLLM)."""
    spec = _spec(data)
    try:
        plan = plan_or_raise(spec.plan_request(), catalog.accelerator(spec.accelerator))
        return READY_PATH[spec.engine_choice(plan).engine]
    except LlmrackError as exc:
        raise AnsibleFilterError(f"group_vars llmrack_deployment: {exc}") from None


def api_keys_file(keys: list[str], engine: str) -> str:
    """The API keys file the engine reads (its format differs per engine)."""
    return api_key_file_content(engine, list(keys))


def served_name(data: Any) -> str:
    return _spec(data).model.label


def serving_port(data: Any) -> int:
    return _spec(data).serving.port


def devices_per_node(data: Any) -> int:
    """Accelerators a node of the spec's accelerator has (catalog fact), the default llmrack_accelerator_count."""
    return catalog.accelerator(_spec(data).accelerator).devices_per_node


def unscanned_allowed(data: Any) -> bool:
    return _spec(data).unscanned_images_allowed


def queue_alert_threshold(data: Any, ratio: float) -> int:
    """The queue alert's threshold for the spec's serving.max_queue (llmrack.contracts.alerts); no spec: the
    default max_queue."""
    max_queue = _spec(data).serving.max_queue if data else DEFAULT_MAX_QUEUE
    return alerts.queue_alert_threshold(max_queue, float(ratio))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "llmrack_serving_command": serving_command,
            "llmrack_api_keys_file": api_keys_file,
            "llmrack_ready_path": ready_path,
            "llmrack_served_name": served_name,
            "llmrack_serving_port": serving_port,
            "llmrack_devices_per_node": devices_per_node,
            "llmrack_unscanned_allowed": unscanned_allowed,
            "llmrack_queue_alert_threshold": queue_alert_threshold,
        }
