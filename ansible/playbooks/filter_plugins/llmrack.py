"""Filters that read the deployment spec (group var `llmrack_deployment`) through llmrack itself.

The spec is parsed only by llmrack.spec, so a mistake in group_vars is reported exactly as
`llmrack spec check` reports it, and serving flags are derived in one place. Runs on the controller,
in the Python that runs ansible-playbook (the project's venv).
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from llmrack import catalog
from llmrack.contracts import alerts
from llmrack.contracts.serving_defaults import DEFAULT_MAX_QUEUE
from llmrack.errors import LlmrackError
from llmrack.spec import DeploymentSpec, parse_spec

DEVICE_DTYPE = {
    # (device, weights dtype) -> --dtype; CPUs compute in float32 whatever the checkpoint holds.
    "cpu": {"bf16": "float32", "fp16": "float32", "fp8": "float32", "int8": "float32", "int4": "float32"},
    "cuda": {"bf16": "bfloat16", "fp16": "float16", "fp8": "bfloat16", "int8": "bfloat16", "int4": "bfloat16"},
    "npu": {"bf16": "bfloat16", "fp16": "float16", "fp8": "bfloat16", "int8": "bfloat16", "int4": "bfloat16"},
}


def _spec(data: Any) -> DeploymentSpec:
    try:
        return parse_spec(dict(data) if data is not None else None, "group_vars llmrack_deployment")
    except LlmrackError as exc:
        raise AnsibleFilterError(str(exc)) from None


def serving_args(data: Any, device: str, model_mount: str) -> list[str]:
    """`python -m serving` flags for one node, from the deployment spec and the node's device."""
    if device not in DEVICE_DTYPE:
        raise AnsibleFilterError(f"serving device {device!r} is not one of {', '.join(DEVICE_DTYPE)}")
    spec = _spec(data)
    s = spec.serving
    args = [
        "--model", model_mount,
        "--served-model-name", spec.model.label,
        "--host", "0.0.0.0",
        "--port", str(s.port),
        "--device", device,
        "--dtype", DEVICE_DTYPE[device][spec.model.weights_dtype.value],
        "--max-num-seqs", str(s.max_num_seqs),
        "--max-model-len", str(s.max_model_len),
        "--max-queue", str(s.max_queue),
    ]
    if spec.model.weights_dtype.value == "int8":
        args += ["--quantize", "int8"]
    return args


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
            "llmrack_serving_args": serving_args,
            "llmrack_served_name": served_name,
            "llmrack_serving_port": serving_port,
            "llmrack_devices_per_node": devices_per_node,
            "llmrack_unscanned_allowed": unscanned_allowed,
            "llmrack_queue_alert_threshold": queue_alert_threshold,
        }
