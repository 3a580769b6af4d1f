"""A replica of several nodes on Kubernetes: the prod stack's program with DeepSeek-R1 (FP8 on H100: TP 8 x PP 2, a
replica of 2 nodes) declares a LeaderWorkerSet whose pods run the renderer's leader and worker commands, and a
Service that sends traffic to leaders only.

The LeaderWorkerSet CRD's schema is not obtainable here (no registry serves it, and its text stays out of this
repository), so the object is checked structurally against the fields of leaderworkerset.x-k8s.io/v1 that
llmrack sets (docs/multinode.md lists them), and each pod template as what it is, a core PodTemplateSpec,
against the Kubernetes schema of the stack's version."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from infra.components.serving import LWS_API_VERSION, LWS_WORKER_INDEX_LABEL
from tests.infra.harness import Run, run_stack, stack_config

LWS = "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet"
R1 = {"name": "deepseek-r1", "source": "https://mirror.internal.example/models/DeepSeek-R1/", "weights_dtype": "fp8"}
# leaderworkerset.x-k8s.io/v1 spec fields llmrack sets, with their types and allowed values (the CRD's).
SPEC_FIELDS: dict[str, Any] = {"replicas": int, "startupPolicy": ("LeaderCreated", "LeaderReady"),
               "rolloutStrategy": dict, "leaderWorkerTemplate": dict}
TEMPLATE_FIELDS: dict[str, Any] = {"size": int, "restartPolicy": ("RecreateGroupOnPodRestart", "None", "Default"),
                   "leaderTemplate": dict, "workerTemplate": dict}


def _run(scan_results: Path) -> Run:
    deployment = copy.deepcopy(stack_config("prod")["llmrack:deployment"])
    deployment.update(model=R1, nodes=4)
    deployment["serving"].update(max_model_len=8192, max_num_seqs=16, replicas=2)
    run, error, _ = run_stack("prod", overrides={"llmrack:deployment": deployment},
                              plain={"llmrack:scanResultsDir": str(scan_results)})
    assert error is None, error
    assert run is not None
    return run


def _container(template: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = template["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _is(value: Any, kind: Any) -> bool:
    """A CRD field's value: one of the enum's values, a whole number (the engine's wire form may be a float), or
    an object."""
    if isinstance(kind, tuple):
        return value in kind
    if kind is int:
        return isinstance(value, int | float) and float(value).is_integer()
    return isinstance(value, kind)


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.fixture
def run(scan_results: Path) -> Run:
    return _run(scan_results)


def test_a_multi_node_replica_is_a_leader_worker_set_of_the_plans_size(run: Run) -> None:
    assert not run.of_type("kubernetes:apps/v1:Deployment"), "a multi-node replica is never a Deployment"
    lws = run.one(LWS)
    state = lws.state
    assert state["apiVersion"] == LWS_API_VERSION and state["kind"] == "LeaderWorkerSet"
    spec = state["spec"]
    for key, kind in SPEC_FIELDS.items():
        assert _is(spec[key], kind), key
    assert set(spec) <= set(SPEC_FIELDS), f"fields llmrack does not check: {set(spec) - set(SPEC_FIELDS)}"
    lwt = spec["leaderWorkerTemplate"]
    for key, kind in TEMPLATE_FIELDS.items():
        assert _is(lwt[key], kind), key
    assert spec["replicas"] == 2 and lwt["size"] == 2  # replicas x nodes per replica = the plan's 4 nodes
    assert spec["rolloutStrategy"] == {"type": "RollingUpdate",
                                       "rollingUpdateConfiguration": {"maxUnavailable": 1, "maxSurge": 0}}
    version = stack_config("prod")["llmrack:kubernetes"]["version"]
    for name in ("leaderTemplate", "workerTemplate"):
        pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t", "namespace": "n"},
               "template": lwt[name]}
        try:
            kubernetes_validate.validate(pod, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} is not a valid PodTemplateSpec of Kubernetes {version}: {exc}")


def test_leader_and_workers_run_the_renderers_commands_per_rank(run: Run) -> None:
    lwt = run.one(LWS).state["spec"]["leaderWorkerTemplate"]
    leader, worker = _container(lwt["leaderTemplate"]), _container(lwt["workerTemplate"])
    for c in (leader, worker):
        assert c["command"] == ["vllm", "serve"]
        args = c["args"]
        assert _flag(args, "--distributed-executor-backend") == "mp" and _flag(args, "--nnodes") == "2"
        assert _flag(args, "--master-addr") == "$(LWS_LEADER_ADDRESS)"
        assert _flag(args, "--tensor-parallel-size") == "8" and _flag(args, "--pipeline-parallel-size") == "2"
        assert c["resources"]["limits"] == {"nvidia.com/gpu": "8"}
        assert {"name": "VLLM_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in c["env"]
        assert "ray" not in " ".join(args)
    assert _flag(leader["args"], "--node-rank") == "0" and "--headless" not in leader["args"]
    assert leader["readinessProbe"]["httpGet"]["path"] == "/health" and leader["ports"][0]["name"] == "http"
    assert _flag(worker["args"], "--node-rank") == "$(LWS_WORKER_INDEX)" and "--headless" in worker["args"]
    assert "readinessProbe" not in worker and "ports" not in worker  # a headless worker serves no HTTP


def test_traffic_and_scaling_reach_leaders_and_whole_groups(run: Run) -> None:
    service = run.one("kubernetes:core/v1:Service")
    assert service.state["spec"]["selector"][LWS_WORKER_INDEX_LABEL] == "0"
    hpa = run.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    assert hpa.state["spec"]["scaleTargetRef"]["kind"] == "LeaderWorkerSet"
