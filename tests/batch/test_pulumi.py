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
from infra.components.serving import TLS_SERVICE_NAME, service_dns_names
from infra.policy import validators
from llmrack.cli.batch_cmd import app as batch_app
from tests.infra.conftest import scan_results  # noqa: F401  # the fixture, shared with the stack tests
from tests.infra.harness import SECRETS, Run, kubernetes_objects, run_stack, stack_config

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


# serving.tls with the batch service: the batch pods reach the serving Service over https, verified against the CA
# that signed the pods' certificate (the front door's TLS Secret's ca.crt), at a name that certificate carries.
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n"
CA = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"


def _tls_run(scan: Path, security: dict[str, Any], secrets: dict[str, Any] | None = None,
             batch: Any = None) -> tuple[Run | None, BaseException | None, Any]:
    deployment = dict(stack_config("dev")["llmrack:deployment"])
    deployment["serving"] = {**deployment["serving"], "tls": True}
    plain: dict[str, Any] = {"llmrack:scanResultsDir": str(scan), "llmrack:deployment": deployment,
                             "llmrack:security": {"gatewayNamespaces": ["ingress-nginx"], **security}}
    if batch is not None:
        plain["llmrack:batch"] = batch
    return run_stack("dev", plain=plain, secrets={**SECRETS, **(secrets or {})})


def _valid(run: Run) -> None:
    """Every core object against the official schema (cert-manager's Certificate is a CRD: checked by field)."""
    version = stack_config("dev")["llmrack:kubernetes"]["version"]
    for res, obj in kubernetes_objects(run):
        if res.type.startswith("kubernetes:cert-manager.io/"):
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{res.type} {res.name} is not a valid Kubernetes {version} object: {exc}")


def _upstream_ca(run: Run) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """The batch container's argv, its upstream-ca mount and volume."""
    pod = _batch_deployment(run)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "upstream-ca"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "upstream-ca"]
    return container["command"], mount, volume


def test_serving_tls_the_batch_service_verifies_the_serving_pods_with_cert_managers_ca(
        scan_results: Path) -> None:  # noqa: F811
    run, error, _ = _tls_run(scan_results, {"certManagerIssuer": "rack-ca", "tlsDnsNames": ["llm.example.internal"],
                                            "tlsSecretName": "api-tls"}, batch={})
    assert error is None, error
    assert run is not None
    _valid(run)
    namespace = run.outputs["namespace"]
    serving = run.one("kubernetes:core/v1:Service", "serving-service").state
    # A fixed name under serving.tls, which the certificate carries with the other in-cluster forms.
    assert serving["metadata"]["name"] == TLS_SERVICE_NAME == run.outputs["service"]
    cert = run.one("kubernetes:cert-manager.io/v1:Certificate").state["spec"]
    assert cert["secretName"] == "api-tls"
    assert cert["dnsNames"] == ["llm.example.internal", *service_dns_names(namespace)]
    assert f"{TLS_SERVICE_NAME}.{namespace}.svc" in cert["dnsNames"]

    argv, mount, volume = _upstream_ca(run)
    port = int(serving["spec"]["ports"][0]["port"])
    assert argv[argv.index("--upstream") + 1] == f"https://{TLS_SERVICE_NAME}:{port}"
    ca_file = argv[argv.index("--upstream-ca-file") + 1]
    assert ca_file == f"{mount['mountPath']}/ca.crt" and mount["readOnly"] is True
    # cert-manager's ca.crt, alone: the same Secret holds the serving pods' private key.
    assert volume["secret"]["secretName"] == "api-tls"
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    group = typer.main.get_command(batch_app)
    assert isinstance(group, typer.core.TyperGroup)
    known = {opt for param in group.commands["serve"].params for opt in param.opts}
    assert {a for a in argv if a.startswith("--")} <= known

    # The namespace's default deny admits the batch pods to the serving port, and the gateways and Prometheus to
    # the batch port.
    policies = {r.name: r.state["spec"] for r in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")}
    batch_pods = _batch_deployment(run)["spec"]["template"]["metadata"]["labels"]
    serving_from = policies["security-serving-port"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": batch_pods["app.kubernetes.io/name"]}}} \
        in serving_from
    batch_port = policies["security-batch-port"]
    assert batch_port["podSelector"]["matchLabels"].items() <= batch_pods.items()
    batch_service = run.one("kubernetes:core/v1:Service", "batch-service").state
    assert batch_port["ingress"][0]["ports"] == [{"protocol": "TCP", "port": batch_service["spec"]["ports"][0]["port"]}]
    assert {f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for f in batch_port["ingress"][0]["from"]} == {"ingress-nginx", "monitoring"}


def test_serving_tls_the_batch_service_verifies_against_the_stacks_ca(scan_results: Path) -> None:  # noqa: F811
    secrets = {"llmrack:tlsCertificate": CERT, "llmrack:tlsPrivateKey": KEY, "llmrack:tlsCaCertificate": CA}
    run, error, _ = _tls_run(scan_results, {}, secrets, batch={})
    assert error is None, error
    assert run is not None
    _valid(run)
    tls = run.one("kubernetes:core/v1:Secret", "security-tls").state
    assert tls["type"] == "kubernetes.io/tls" and tls["stringData"] == {"tls.crt": CERT, "tls.key": KEY, "ca.crt": CA}
    argv, _, volume = _upstream_ca(run)
    assert argv[argv.index("--upstream") + 1].startswith(f"https://{TLS_SERVICE_NAME}:")
    assert volume["secret"]["secretName"] == tls["metadata"]["name"]
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]


def test_serving_tls_without_the_ca_of_the_stacks_certificate_is_refused_naming_the_key(
        scan_results: Path) -> None:  # noqa: F811
    """The one case that cannot work: a certificate from the stack without its CA leaves the batch service nothing
    to verify the serving pods against. Without the batch service the same stack is fine."""
    secrets = {"llmrack:tlsCertificate": CERT, "llmrack:tlsPrivateKey": KEY}
    run, error, monitor = _tls_run(scan_results, {}, secrets, batch={})
    assert run is None and "llmrack:tlsCaCertificate" in str(error), error
    assert not any(r.startswith("urn:pulumi:dev::llmrack::kubernetes") for r in monitor.get_registered_resources())
    run, error, _ = _tls_run(scan_results, {}, secrets)
    assert error is None and run is not None
    assert "ca.crt" not in run.one("kubernetes:core/v1:Secret", "security-tls").state["stringData"]


def test_without_serving_tls_the_batch_service_stays_on_http(scan_results: Path) -> None:  # noqa: F811
    run, error = _run(scan_results, {})
    assert error is None and run is not None
    pod = _batch_deployment(run)["spec"]["template"]["spec"]
    argv = pod["containers"][0]["command"]
    assert argv[argv.index("--upstream") + 1].startswith("http://") and "--upstream-ca-file" not in argv
    assert "upstream-ca" not in {v["name"] for v in pod["volumes"]}
    assert run.one("kubernetes:core/v1:Service", "serving-service").state["metadata"]["name"] != TLS_SERVICE_NAME
