"""Checks over Pulumi resource properties (Kubernetes objects as the engine sees them, camelCase keys).

Each returns the list of problems it found, empty when the resource passes, so the policy pack and the
tests call the same functions. Under the engine, props arrive as read-only Mapping/Sequence proxies
(pulumi_policy.proxy), not dicts, so the checks test for Mapping; reading a value still unknown during a
preview raises the proxy's UnknownValueError, which the pack reports as "can't run during preview".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llmrack import catalog

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
_TEMPLATED = {DEPLOYMENT, "kubernetes:apps/v1:StatefulSet", "kubernetes:apps/v1:DaemonSet",
              "kubernetes:apps/v1:ReplicaSet", "kubernetes:batch/v1:Job"}
WORKLOADS = _TEMPLATED | {"kubernetes:core/v1:Pod", "kubernetes:batch/v1:CronJob"}
# Annotations that keep a cloud LoadBalancer on private addresses.
INTERNAL_LB_ANNOTATIONS = {
    "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
    "networking.gke.io/load-balancer-type": "Internal",
    "service.beta.kubernetes.io/azure-load-balancer-internal": "true",
}


def accelerator_resources() -> set[str]:
    return {acc.k8s_resource for acc in catalog.accelerators().values()}


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def pod_template(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """(metadata + spec) of the pods a workload runs, or None for other types."""
    if resource_type in _TEMPLATED:
        template = _get(props, "spec", "template")
    elif resource_type == "kubernetes:batch/v1:CronJob":
        template = _get(props, "spec", "jobTemplate", "spec", "template")
    elif resource_type == "kubernetes:core/v1:Pod":
        template = {"metadata": props.get("metadata"), "spec": props.get("spec")}
    else:
        return None
    return template if isinstance(template, Mapping) else None


def _containers(spec: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, Mapping):
                yield container


def _accelerator_count(container: Mapping[str, Any]) -> int:
    limits = _get(container, "resources", "limits") or {}
    total = 0
    for name in accelerator_resources():
        value = limits.get(name)
        if value is not None:
            try:
                total += int(str(value))
            except ValueError:
                return -1
    return total


def accelerator_limits(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """A serving workload must limit an accelerator resource; requests alone are ignored by the scheduler."""
    template = pod_template(resource_type, props)
    if template is None:
        return []
    labels = _get(template, "metadata", "labels") or {}
    spec = template.get("spec") or {}
    problems = []
    for container in _containers(spec):
        requests = _get(container, "resources", "requests") or {}
        for name in accelerator_resources() & set(requests):
            if name not in (_get(container, "resources", "limits") or {}):
                problems.append(f"container {container.get('name')!r} requests {name} without a limit")
    if labels.get("app.kubernetes.io/component") == "serving":
        counts = [_accelerator_count(c) for c in spec.get("containers") or []]
        if not any(n > 0 for n in counts):
            problems.append(
                "serving pods must set an accelerator limit "
                f"({' or '.join(sorted(accelerator_resources()))}) of at least 1"
            )
    return problems


def shm_for_tensor_parallel(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """A container with more than one accelerator (TP > 1) needs a memory-backed /dev/shm."""
    template = pod_template(resource_type, props)
    if template is None:
        return []
    spec = template.get("spec") or {}
    memory_volumes = {
        v.get("name") for v in spec.get("volumes") or [] if _get(v, "emptyDir", "medium") == "Memory"
    }
    problems = []
    for container in spec.get("containers") or []:
        if _accelerator_count(container) > 1:
            mounts = {m.get("name") for m in container.get("volumeMounts") or [] if m.get("mountPath") == "/dev/shm"}
            if not mounts & memory_volumes:
                problems.append(
                    f"container {container.get('name')!r} uses {_accelerator_count(container)} accelerators "
                    "but mounts no emptyDir (medium: Memory) at /dev/shm; NCCL/HCCL need it"
                )
    return problems


def images_pinned(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    template = pod_template(resource_type, props)
    if template is None:
        return []
    problems = []
    for container in _containers(template.get("spec") or {}):
        image = container.get("image")
        if isinstance(image, str) and not DIGEST.search(image):
            problems.append(f"container {container.get('name')!r} image {image!r} is not pinned by digest (@sha256:)")
    return problems


def load_balancer_allowlisted(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    if resource_type != SERVICE or _get(props, "spec", "type") != "LoadBalancer":
        return []
    annotations = _get(props, "metadata", "annotations") or {}
    if any(str(annotations.get(k, "")).lower() == v.lower() for k, v in INTERNAL_LB_ANNOTATIONS.items()):
        return []
    if _get(props, "spec", "loadBalancerSourceRanges"):
        return []
    return ["a LoadBalancer Service must set spec.loadBalancerSourceRanges (an allowlist) or be internal"]


def _matches(selector: dict[str, Any], labels: dict[str, Any]) -> bool:
    match = selector.get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def pdb_in_prod(resources: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Every prod Deployment (label llmrack.io/environment=prod) is covered by a PodDisruptionBudget."""
    budgets = [props for rtype, props in resources if rtype == PDB]
    problems = []
    for rtype, props in resources:
        if rtype != DEPLOYMENT or _get(props, "metadata", "labels", "llmrack.io/environment") != "prod":
            continue
        namespace = _get(props, "metadata", "namespace")
        labels = _get(props, "spec", "template", "metadata", "labels") or {}
        covered = any(
            _matches(_get(b, "spec", "selector") or {}, labels)
            and (namespace is None or _get(b, "metadata", "namespace") in (None, namespace))
            for b in budgets
        )
        if not covered:
            name = _get(props, "metadata", "name") or "(unnamed)"
            problems.append(f"prod Deployment {name} has no PodDisruptionBudget selecting its pods")
    return problems


RESOURCE_VALIDATORS = {
    "llmrack-accelerator-limits": accelerator_limits,
    "llmrack-shm-for-tensor-parallel": shm_for_tensor_parallel,
    "llmrack-images-pinned-by-digest": images_pinned,
    "llmrack-no-open-load-balancer": load_balancer_allowlisted,
}
