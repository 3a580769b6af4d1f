"""The batch service in the Pulumi program: absent unless the stack sets `llmrack:batch`; then one Deployment
(Recreate, one replica) running `llmrack batch serve` against the serving Service, its store on a retained
claim, the stack's keys in a Secret of their own, every object valid for the stack's Kubernetes version and
passing the policy pack; a wrong key is refused naming it. Run under the official Pulumi mocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import typer.core
import typer.main

from infra.components._args import ComponentArgsError
from infra.components.batch import BatchArgs, BatchService
from infra.policy import validators
from llmrack.cli.batch_cmd import app as batch_app
from tests.infra.conftest import scan_results  # noqa: F401  # the fixture, shared with the stack tests
from tests.infra.harness import Run, kubernetes_objects, run_stack, stack_config

DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def _run(scan: Path, batch: Any = None) -> tuple[Run | None, BaseException | None]:
    plain: dict[str, Any] = {"llmrack:scanResultsDir": str(scan)}
    if batch is not None:
        plain["llmrack:batch"] = batch
    run, error, _ = run_stack("dev", plain=plain)
    return run, error


def _batch_deployment(run: Run) -> dict[str, Any]:
    found = [d for d in run.of_type(DEPLOYMENT) if d.name == "batch-deployment"]
    assert len(found) == 1
    state: dict[str, Any] = found[0].state
    return state


def test_no_batch_service_unless_the_stack_asks(scan_results: Path) -> None:  # noqa: F811
    run, error = _run(scan_results)
    assert error is None and run is not None
    assert not [r for r in run.resources if r.type == "llmrack:batch:BatchService"]


def test_the_deployment_runs_the_service_against_the_serving_service(scan_results: Path) -> None:  # noqa: F811
    run, error = _run(scan_results, {"stateSizeGib": 20, "maxInflight": 32})
    assert error is None and run is not None
    dep = _batch_deployment(run)
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    container = dep["spec"]["template"]["spec"]["containers"][0]
    argv = container["command"]
    assert argv[:3] == ["llmrack", "batch", "serve"]
    serving = run.one("kubernetes:core/v1:Service", "serving-service").state
    port = int(serving["spec"]["ports"][0]["port"])
    assert argv[argv.index("--upstream") + 1] == f"http://{serving['metadata']['name']}:{port}"
    assert argv[argv.index("--max-inflight") + 1] == "32"
    # Every flag the pod passes is one `llmrack batch serve` has.
    group = typer.main.get_command(batch_app)
    assert isinstance(group, typer.core.TyperGroup)
    known = {opt for param in group.commands["serve"].params for opt in param.opts}
    assert {a for a in argv if a.startswith("--")} <= known
    claim = run.one("kubernetes:core/v1:PersistentVolumeClaim", "batch-state").state
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    secret = run.one("kubernetes:core/v1:Secret", "batch-api-keys").state
    assert secret["stringData"]["api-keys"] == "test-key-1\ntest-key-2\n"

    version = stack_config("dev")["llmrack:kubernetes"]["version"]
    for res, obj in kubernetes_objects(run):
        if res.name.startswith("batch-"):
            kubernetes_validate.validate(obj, version, strict=True)
    assert validators.images_pinned(DEPLOYMENT, dep) == []


def test_a_postgresql_store_replaces_the_claim(scan_results: Path) -> None:  # noqa: F811
    url = "postgresql://llmrack_batch@db.example:5432/llmrack_batch?sslmode=verify-full"
    run, error = _run(scan_results, {"databaseUrl": url, "databasePasswordSecret": "batch-db"})
    assert error is None and run is not None
    dep = _batch_deployment(run)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    argv = container["command"]
    assert argv[argv.index("--state") + 1] == url
    # One store for both pods: the runner lease lets one send the lines and the other stand by.
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "batch-db", "key": "password"}}} \
        in container["env"]
    assert not [r for r in run.resources if r.name == "batch-state"]
    assert "state" not in {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}
    version = stack_config("dev")["llmrack:kubernetes"]["version"]
    for res, obj in kubernetes_objects(run):
        if res.name.startswith("batch-"):
            kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize(("batch", "says"), [
    ({"stateSize": 5}, "llmrack:batch.stateSize"),
    ({"maxInflight": 0}, "BatchArgs.max_inflight"),
    ({"stateSizeGib": "big"}, "must be of type int"),
    ([1, 2], "must be an object"),
    ("yes", "'llmrack:batch' value 'yes' is not a valid 'JSON object'"),
    ({"databaseUrl": "postgresql://batch:hunter2@db/batch"}, "must not carry the password"),
    ({"databaseUrl": "mysql://db/batch"}, "must be a postgresql:// URL"),
    ({"databasePasswordSecret": "batch-db"}, "needs databaseUrl"),
])
def test_a_wrong_batch_key_is_refused_by_name(scan_results: Path, batch: Any, says: str) -> None:  # noqa: F811
    run, error = _run(scan_results, batch)
    assert run is None and error is not None and says in str(error)


def test_the_image_must_be_pinned() -> None:
    args = BatchArgs(namespace="ns", image="registry/llmrack:latest", upstream_service="s", upstream_port=8000,
                     api_keys=["k"])
    with pytest.raises(ComponentArgsError, match="pinned by digest"):
        BatchService("batch", args)


def test_prometheus_scrapes_the_batch_service_as_on_racks(scan_results: Path) -> None:  # noqa: F811
    """The stack's Prometheus has the monitoring role's `batch` job, and its keeps select the batch Service's
    endpoints (the Service's own label and port name); a stack without the service has no such job."""
    def jobs(run: Run) -> dict[str, Any]:
        values = run.one("kubernetes:helm.sh/v3:Release", "monitoring-kube-prometheus-stack").state["values"]
        return {c["job_name"]: c for c in values["prometheus"]["prometheusSpec"]["additionalScrapeConfigs"]}

    plain, error = _run(scan_results)
    assert error is None and plain is not None and "batch" not in jobs(plain)
    run, error = _run(scan_results, {})
    assert error is None and run is not None
    job = jobs(run)["batch"]
    service = run.one("kubernetes:core/v1:Service", "batch-service").state
    sd = job["kubernetes_sd_configs"][0]
    assert sd["role"] == "endpoints" and sd["namespaces"]["names"] == [service["metadata"]["namespace"]]
    keeps = {r["source_labels"][0]: r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert keeps == {"__meta_kubernetes_service_label_app_kubernetes_io_name":
                     service["metadata"]["labels"]["app.kubernetes.io/name"],
                     "__meta_kubernetes_endpoint_port_name": service["spec"]["ports"][0]["name"]}
