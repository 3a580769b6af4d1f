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
from llmrack.contracts import alerts, inventory
from llmrack.contracts.inventory import NODE_ADDRESS_VAR, NODE_INTERFACE_VAR, REPLICA_RANK_VAR, REPLICA_VAR
from llmrack.contracts.serving_command import (
    READY_PATH,
    NodeKind,
    ReplicaMember,
    ServingCommandError,
    ServingInputs,
    api_key_file_content,
    engine_for,
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


def _replica_vars(hosts: list[str], hostvars: Any) -> dict[str, dict[str, Any]]:
    """Only the replica variables of `hosts` (hostvars templates each variable it is asked for)."""
    keys = (REPLICA_VAR, REPLICA_RANK_VAR, NODE_ADDRESS_VAR, NODE_INTERFACE_VAR)
    out: dict[str, dict[str, Any]] = {}
    for h in hosts:
        hv = hostvars.get(h, {})
        out[h] = {k: hv.get(k) for k in keys if hv.get(k) is not None}
    return out


def replica_member(hosts: list[str], host: str, hostvars: Any) -> dict[str, Any]:
    """`host`'s place in its replica (llmrack.contracts.inventory.replica_member) among the serving `hosts`."""
    try:
        return inventory.replica_member(host, _replica_vars(list(hosts), hostvars))
    except inventory.InventoryError as exc:
        raise AnsibleFilterError(f"inventory: {exc}") from None


def rollout_order(needing: list[str], hosts: list[str], hostvars: Any) -> list[str]:
    """Every node of each replica that has a node in `needing`, replica after replica, leader last: a release
    moves whole replicas (never two versions inside one), and workers start before their leader."""
    try:
        groups = inventory.replicas(_replica_vars(list(hosts), hostvars))
    except inventory.InventoryError as exc:
        raise AnsibleFilterError(f"inventory: {exc}") from None
    need = set(needing)
    return [h for members in groups.values() if need & set(members) for h in [*members[1:], members[0]]]


def replica_size(hosts: list[str], hostvars: Any) -> int:
    """The most nodes any replica among `hosts` has: the rollout's batch size (whole replicas per batch)."""
    try:
        groups = inventory.replicas(_replica_vars(list(hosts), hostvars))
    except inventory.InventoryError as exc:
        raise AnsibleFilterError(f"inventory: {exc}") from None
    return max((len(m) for m in groups.values()), default=1)


def serving_device(host: str, hostvars: Any, groups: Any) -> str:
    """What `host` serves on: its serving_device, else its group's kind (the serving role's default)."""
    if not host:
        return "cpu"
    device = hostvars[host].get(inventory.SERVING_DEVICE_VAR)
    if device:
        return str(device)
    return ("cuda" if host in groups.get(inventory.NVIDIA_GROUP, []) else
            "npu" if host in groups.get(inventory.ASCEND_GROUP, []) else "cpu")


def serving_command(data: Any, device: str, model_mount: str, api_keys: bool = True, cpu_cores: int | None = None,
                    drain_timeout: int = 30, replica: dict[str, Any] | None = None) -> dict[str, Any]:
    """The serving command of one node (llmrack.contracts.serving_command), as plain data for the unit template;
    `replica` is the node's replica_member."""
    if device not in NodeKind.__members__:
        raise AnsibleFilterError(f"serving device {device!r} is not one of {', '.join(NodeKind.__members__)}")
    spec = _spec(data)
    try:
        plan = plan_or_raise(spec.plan_request(), catalog.accelerator(spec.accelerator))
        member = ReplicaMember()
        if replica:
            member = ReplicaMember(nodes=int(replica["nodes"]), rank=int(replica["rank"]),
                                   leader_address=replica.get("leader_address"), address=replica.get("address"),
                                   interface=replica.get("interface"))
        which = f"replica {replica['replica']}" if replica else "the node's replica"
        if member.nodes != plan.nodes_per_replica:
            raise ServingCommandError(
                f"inventory: {which} has {member.nodes} node(s) and the plan's "
                f"replica is {plan.nodes_per_replica} ({plan.layout_reason}): give llmrack_replica and "
                "llmrack_replica_rank to exactly that many nodes per replica"
            )
        inputs = ServingInputs.from_spec(spec, plan, device, model_path=model_mount, api_keys=bool(api_keys),
                                         drain_timeout_s=int(drain_timeout),
                                         cpu_cores=int(cpu_cores) if cpu_cores else None, replica=member)
        return render(inputs).to_dict()
    except (LlmrackError, ServingCommandError) as exc:
        raise AnsibleFilterError(f"group_vars llmrack_deployment: {exc}") from None


def ready_path(data: Any, device: str | None = None) -> str:
    """Where the spec's engine on a node serving on `device` answers once it can take requests: /ready
    (llmrack), /health (vLLM)."""
    spec = _spec(data)
    try:
        plan = plan_or_raise(spec.plan_request(), catalog.accelerator(spec.accelerator))
        return READY_PATH[engine_for(spec, plan, device).engine]
    except (LlmrackError, ServingCommandError) as exc:
        raise AnsibleFilterError(f"group_vars llmrack_deployment: {exc}") from None


def api_keys_file(keys: list[str], engine: str) -> str:
    """The API keys file the engine reads (its format differs per engine)."""
    return api_key_file_content(engine, list(keys))


def served_name(data: Any) -> str:
    return _spec(data).model.label


def serving_port(data: Any) -> int:
    return _spec(data).serving.port


def serving_scheme(data: Any) -> str:
    """How the gateways, Prometheus and checks reach the serving port: https with the spec's serving.tls."""
    return "https" if _spec(data).serving.tls else "http"


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
            "llmrack_serving_scheme": serving_scheme,
            "llmrack_devices_per_node": devices_per_node,
            "llmrack_unscanned_allowed": unscanned_allowed,
            "llmrack_queue_alert_threshold": queue_alert_threshold,
            "llmrack_replica_member": replica_member,
            "llmrack_rollout_order": rollout_order,
            "llmrack_replica_size": replica_size,
            "llmrack_serving_device": serving_device,
        }
