"""The CrossGuard validators on passing and failing resources."""

from __future__ import annotations

import copy
from typing import Any

from infra.policy import validators as v

DIGEST = "registry.example/llmrack/serving@sha256:" + "a" * 64


def deployment(gpus: int = 2, shm: bool = True, image: str = DIGEST, env: str = "prod") -> dict[str, Any]:
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}] if shm else []
    volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}] if shm else []
    labels = {"app.kubernetes.io/name": "llmrack-serving", "app.kubernetes.io/component": "serving"}
    return {
        "metadata": {"name": "serving", "namespace": "llmrack", "labels": {"llmrack.io/environment": env}},
        "spec": {"template": {"metadata": {"labels": labels}, "spec": {
            "containers": [{"name": "serving", "image": image, "volumeMounts": mounts,
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)} if gpus else {}}}],
            "volumes": volumes}}},
    }


def test_accelerator_limits() -> None:
    assert v.accelerator_limits(v.DEPLOYMENT, deployment()) == []
    assert v.accelerator_limits(v.DEPLOYMENT, deployment(gpus=0, shm=False))
    requested = deployment()
    requested["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"huawei.com/Ascend910": "1"}}
    assert any("without a limit" in p for p in v.accelerator_limits(v.DEPLOYMENT, requested))
    assert v.accelerator_limits("kubernetes:core/v1:ConfigMap", {"data": {}}) == []


def test_shm_when_tensor_parallel() -> None:
    assert v.shm_for_tensor_parallel(v.DEPLOYMENT, deployment(gpus=2)) == []
    assert v.shm_for_tensor_parallel(v.DEPLOYMENT, deployment(gpus=1, shm=False)) == []
    assert "/dev/shm" in v.shm_for_tensor_parallel(v.DEPLOYMENT, deployment(gpus=4, shm=False))[0]
    disk = deployment(gpus=2)
    disk["spec"]["template"]["spec"]["volumes"] = [{"name": "dshm", "emptyDir": {}}]
    assert v.shm_for_tensor_parallel(v.DEPLOYMENT, disk)


def test_images_pinned_by_digest() -> None:
    assert v.images_pinned(v.DEPLOYMENT, deployment()) == []
    assert "not pinned" in v.images_pinned(v.DEPLOYMENT, deployment(image="registry.example/x:1.0"))[0]
    cron = {"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}}}
    assert v.images_pinned("kubernetes:batch/v1:CronJob", cron)
    init = deployment()
    init["spec"]["template"]["spec"]["initContainers"] = [{"name": "fetch", "image": "busybox:latest"}]
    assert v.images_pinned(v.DEPLOYMENT, init)


def test_load_balancer_needs_an_allowlist() -> None:
    open_lb = {"metadata": {}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}
    assert v.load_balancer_allowlisted(v.SERVICE, open_lb)
    allowed = copy.deepcopy(open_lb)
    allowed["spec"]["loadBalancerSourceRanges"] = ["10.0.0.0/8"]
    assert v.load_balancer_allowlisted(v.SERVICE, allowed) == []
    internal = copy.deepcopy(open_lb)
    internal["metadata"]["annotations"] = {"service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}
    assert v.load_balancer_allowlisted(v.SERVICE, internal) == []
    assert v.load_balancer_allowlisted(v.SERVICE, {"spec": {"type": "ClusterIP"}}) == []


def test_pdb_present_in_prod() -> None:
    pdb = {"metadata": {"namespace": "llmrack"},
           "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "llmrack-serving"}}}}
    assert v.pdb_in_prod([(v.DEPLOYMENT, deployment()), (v.PDB, pdb)]) == []
    assert "no PodDisruptionBudget" in v.pdb_in_prod([(v.DEPLOYMENT, deployment())])[0]
    other_ns = copy.deepcopy(pdb)
    other_ns["metadata"]["namespace"] = "elsewhere"
    assert v.pdb_in_prod([(v.DEPLOYMENT, deployment()), (v.PDB, other_ns)])
    assert v.pdb_in_prod([(v.DEPLOYMENT, deployment(env="dev"))]) == []
