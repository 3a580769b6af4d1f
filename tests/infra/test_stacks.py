"""Each stack's program under the Pulumi mocks, with its own stack file: the resource graph per environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from infra.policy import validators
from llmrack import catalog
from llmrack.plan import plan
from llmrack.spec import parse_spec
from tests.infra.conftest import STACKS
from tests.infra.harness import Run, kubernetes_objects, run_stack, stack_config

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
RELEASE = "kubernetes:helm.sh/v3:Release"


def _run(stack: str, scan_results: Path, **kwargs: Any) -> Run:
    plain = {"llmrack:scanResultsDir": str(scan_results), **kwargs.pop("plain", {})}
    run, error, _ = run_stack(stack, plain=plain, **kwargs)
    assert error is None, f"{stack}: {error}"
    assert run is not None
    return run


def _expected_plan(stack: str) -> Any:
    spec = parse_spec(stack_config(stack)["llmrack:deployment"], stack)
    return plan(spec.plan_request(), catalog.accelerator(spec.accelerator)), catalog.accelerator(spec.accelerator)


def _pod(dep: Any) -> dict[str, Any]:
    spec: dict[str, Any] = dep.state["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_object_validates_against_the_target_schema(stack: str, scan_results: Path) -> None:
    run = _run(stack, scan_results)
    version = stack_config(stack)["llmrack:kubernetes"]["version"]
    objects = kubernetes_objects(run)
    assert len(objects) >= 6
    for res, obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{stack}: {res.type} {res.name} is not a valid Kubernetes {version} object: {exc}")


@pytest.mark.parametrize("stack", STACKS)
def test_serving_deployments_follow_the_plan_and_the_rules(stack: str, scan_results: Path) -> None:
    run = _run(stack, scan_results)
    expected, acc = _expected_plan(stack)
    deployments = run.of_type(DEPLOYMENT)
    assert deployments
    for dep in deployments:
        spec = dep.state["spec"]
        pod = _pod(dep)
        (container,) = pod["containers"]
        assert container["resources"]["limits"] == {acc.k8s_resource: str(expected.tensor_parallel)}
        # Kubernetes nodes are accelerator nodes: serving.engine auto is vLLM there, whatever the layout, and vLLM
        # always gets a large /dev/shm (its engine core reaches its workers through it even with one rank).
        shm = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
        engine = "vllm"
        assert bool(shm)
        assert container["command"] == (["vllm", "serve"] if engine == "vllm" else ["python", "-m", "serving"])
        assert container["startupProbe"]["httpGet"]["path"] == "/health"
        assert container["readinessProbe"]["httpGet"]["path"] == ("/health" if engine == "vllm" else "/ready")
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert spec["revisionHistoryLimit"] >= 3
        assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
        assert "@sha256:" in container["image"]
        assert container["args"][container["args"].index("--max-num-seqs") + 1] == str(expected.concurrency)
    replicas = sum(d.state["spec"]["replicas"] for d in deployments)
    assert replicas == expected.replicas
    assert run.outputs["plan"]["tensorParallel"] == expected.tensor_parallel


@pytest.mark.parametrize("stack", STACKS)
def test_policy_pack_passes_every_resource_of_the_stack(stack: str, scan_results: Path) -> None:
    run = _run(stack, scan_results)
    problems = [
        f"{res.name}: {p}"
        for res in run.resources
        for check in validators.RESOURCE_VALIDATORS.values()
        for p in check(res.type, res.state)
    ]
    problems += validators.pdb_in_prod([(r.type, r.state) for r in run.resources])
    assert problems == []
    assert run.of_type("kubernetes:policy/v1:PodDisruptionBudget")


def test_dev_static_fleet_hostpath_and_gpu_operator_with_driver(scan_results: Path) -> None:
    run = _run("dev", scan_results)
    release = run.one(RELEASE, "accelerators-gpu-operator")
    assert release.state["values"]["driver"]["enabled"] is True
    (dep,) = run.of_type(DEPLOYMENT)
    volume = next(v for v in _pod(dep)["volumes"] if v["name"] == "models")
    assert volume["hostPath"]["path"] == "/models/DeepSeek-R1-Distill-Qwen-1.5B"
    ns = run.one("kubernetes:core/v1:Namespace", "serving-namespace")
    assert ns.state["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    assert not run.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    hosts = run.outputs["inventory"]["hosts"]["all"]["children"]["serving_nodes"]["children"]["nvidia_nodes"]["hosts"]
    assert hosts["gpu-dev-1"]["ansible_host"] == "10.20.0.11"
    assert hosts["gpu-dev-1"]["llmrack_accelerator_count"] == catalog.accelerator("a100-80g").devices_per_node


def test_static_fleet_ssh_user_is_the_default_of_hosts_without_one(scan_results: Path) -> None:
    fleet = {"kind": "static", "sshUser": "ops", "hosts": [
        {"name": "gpu-a", "address": "10.20.0.21"}, {"name": "gpu-b", "address": "10.20.0.22", "sshUser": "debian"}]}
    run = _run("dev", scan_results, overrides={"llmrack:fleet": fleet})
    hosts = run.outputs["inventory"]["hosts"]["all"]["children"]["serving_nodes"]["children"]["nvidia_nodes"]["hosts"]
    assert {name: h["ansible_user"] for name, h in hosts.items()} == {"gpu-a": "ops", "gpu-b": "debian"}


def test_staging_ascend_fleet_device_plugin_and_canary(scan_results: Path) -> None:
    run = _run("staging", scan_results)
    cfg = stack_config("staging")
    expected, acc = _expected_plan("staging")
    instances = run.of_type("huaweicloud:Ecs/instance:Instance")
    assert len(instances) == expected.nodes
    assert instances[0].state["flavorId"] == cfg["llmrack:fleet"]["flavor"]
    plugin = run.one("kubernetes:apps/v1:DaemonSet", "accelerators-ascend-device-plugin")
    assert _pod(plugin)["containers"][0]["image"] == cfg["llmrack:acceleratorStack"]["ascendDevicePluginImage"]
    patch = run.one("kubernetes:core/v1:NodePatch")
    assert patch.state["metadata"]["labels"]["accelerator"] == "huawei-Ascend910"
    assert not run.of_type(RELEASE) or all(r.name != "accelerators-gpu-operator" for r in run.of_type(RELEASE))
    assert run.one("pulumi:pulumi:StackReference").state["name"] == cfg["llmrack:kubernetes"]["stack"]
    stable = run.one(DEPLOYMENT, "serving-stable")
    canary = run.one(DEPLOYMENT, "serving-canary")
    assert stable.state["spec"]["replicas"] == canary.state["spec"]["replicas"] == 1
    assert _pod(canary)["containers"][0]["image"] == cfg["llmrack:canary"]["image"]
    assert _pod(canary)["containers"][0]["resources"]["limits"] == {acc.k8s_resource: "2"}
    # One Service over both tracks: the canary's replica share is its traffic share.
    service = run.one("kubernetes:core/v1:Service", "serving-service")
    assert "llmrack.io/track" not in service.state["spec"]["selector"]
    # npu-exporter behind the Service the monitoring scrape job selects (label app=npu-exporter).
    exporter = run.one("kubernetes:core/v1:Service", "accelerators-npu-exporter-svc")
    assert exporter.state["metadata"]["labels"]["app"] == "npu-exporter"
    assert _pod(run.one("kubernetes:apps/v1:DaemonSet", "accelerators-npu-exporter"))["containers"][0]["image"] == (
        cfg["llmrack:acceleratorStack"]["npuExporterImage"])
    assert run.outputs["canary"]["sharePercent"] == 50.0


def test_prod_aws_fleet_with_efa_load_balancer_autoscaler(scan_results: Path) -> None:
    run = _run("prod", scan_results)
    expected, _ = _expected_plan("prod")
    group = run.one("aws:ec2/placementGroup:PlacementGroup")
    assert group.state["strategy"] == "cluster"
    template = run.one("aws:ec2/launchTemplate:LaunchTemplate")
    interfaces = template.state["networkInterfaces"]
    assert len(interfaces) == 32 and {i["interfaceType"] for i in interfaces} == {"efa"}
    assert [i["networkCardIndex"] for i in interfaces] == list(range(32))
    assert template.state["instanceType"] == "p5.48xlarge"
    # Nodes for the autoscaler's ceiling: 3 nodes x 8 H100 at TP 8 hold 3 replicas.
    instances = run.of_type("aws:ec2/instance:Instance")
    assert len(instances) == 3 >= expected.nodes
    hosts = run.outputs["inventory"]["hosts"]["all"]["children"]["serving_nodes"]["children"]["nvidia_nodes"]["hosts"]
    assert len(hosts) == 3
    assert run.one(RELEASE, "accelerators-gpu-operator").state["values"]["driver"]["enabled"] is False
    service = run.one("kubernetes:core/v1:Service")
    assert service.state["spec"]["type"] == "LoadBalancer"
    assert service.state["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8", "172.16.0.0/12"]
    hpa = run.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    assert hpa.state["spec"]["metrics"][0]["pods"]["metric"]["name"] == "llmrack_num_requests_waiting"
    assert (hpa.state["spec"]["minReplicas"], hpa.state["spec"]["maxReplicas"]) == (2, 3)
    adapter = run.one(RELEASE, "monitoring-prometheus-adapter")
    assert adapter.state["values"]["rules"]["custom"][0]["name"]["as"] == "llmrack_num_requests_waiting"
    stack_values = run.one(RELEASE, "monitoring-kube-prometheus-stack").state["values"]
    jobs = [c["job_name"] for c in stack_values["prometheus"]["prometheusSpec"]["additionalScrapeConfigs"]]
    assert jobs == ["llmrack-serving", "dcgm-exporter"]
    rule_files = stack_values["additionalPrometheusRulesMap"]
    alerts = {r.get("alert") for name in ("llmrack-shared", "llmrack-deployment") for g in rule_files[name]["groups"]
              for r in g["rules"]}
    assert {"LlmrackGpuXidError", "LlmrackGpuEccUncorrectable", "LlmrackGpuTemperatureHigh",
            "LlmrackQueueNearLimit", "LlmrackTimeToFirstTokenHigh"} <= alerts
    assert len(run.of_type("kubernetes:core/v1:ConfigMap")) == 2  # the two Grafana dashboards


def test_canary_promotion_and_rollback_are_config_changes(scan_results: Path) -> None:
    cfg = stack_config("staging")
    old, new = cfg["llmrack:image"], cfg["llmrack:canary"]["image"]
    # Rollback: drop the canary key; the stable track keeps the old image and all replicas.
    run = _run("staging", scan_results, remove=("llmrack:canary",))
    (dep,) = run.of_type(DEPLOYMENT)
    assert dep.name == "serving-stable" and dep.state["spec"]["replicas"] == 2
    assert _pod(dep)["containers"][0]["image"] == old
    # Promotion: the stable image becomes the canary's; the same resource name rolls in place.
    run = _run("staging", scan_results, remove=("llmrack:canary",), overrides={"llmrack:image": new})
    (dep,) = run.of_type(DEPLOYMENT)
    assert dep.name == "serving-stable" and _pod(dep)["containers"][0]["image"] == new


def test_stacks_run_fast_enough_to_keep_in_every_test_run(scan_results: Path) -> None:
    import time

    start = time.perf_counter()
    _run("prod", scan_results)
    assert time.perf_counter() - start < 20
