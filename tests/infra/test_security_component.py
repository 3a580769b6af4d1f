"""FrontDoorSecurity under the Pulumi mocks: the TLS Secret or cert-manager Certificate and NetworkPolicies equal to
the firewall role's rules (with serving.tls and the batch service: the Service's in-cluster names, the CA, the batch
pods' way through; the program-level combination is tests/batch/test_pulumi.py); and the serving pods mounting the
key store (llmrack:keysStore: named keys, hashes) as their keys Secret in place of the flat apiKeys list. Each
object valid against the official schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pulumi
import pytest
from pulumi.runtime import mocks, settings, stack
from pulumi.runtime.sync_await import _sync_await

from infra.components._args import ComponentArgsError
from infra.components.batch import APP as BATCH_APP
from infra.components.security import CA_KEY, FrontDoorSecurity, SecurityArgs
from infra.components.serving import service_dns_names
from llmrack.contracts.serving_command import API_KEYS_DIR
from llmrack.keys import KeyStore
from tests.infra.harness import SECRETS, ProgramMocks, Resource, _unwrap, kubernetes_objects, run_stack, stack_config

VERSION = "1.31"


def _run(args: SecurityArgs) -> list[Resource]:
    settings.set_root_resource(None)
    pulumi.runtime.set_all_config({}, [])
    monitor = mocks.MockMonitor(ProgramMocks())
    pulumi.runtime.set_mocks(monitor.mocks, project="llmrack", stack="test", preview=False, monitor=monitor)
    _sync_await(stack.run_pulumi_func(lambda: FrontDoorSecurity("front-door", args)))
    return [Resource(urn, urn.split("::")[2].split("$")[-1], urn.split("::")[-1], _unwrap(reg.state))
            for urn, reg in monitor.get_registered_resources().items()]


def _object(res: Resource) -> dict[str, Any]:
    return {k: v for k, v in res.state.items() if k in ("apiVersion", "kind", "metadata", "spec", "stringData",
                                                         "type")}


def _args(**over: Any) -> SecurityArgs:
    base: dict[str, Any] = dict(namespace="llm", deployment_name="deepseek", serving_port=8000,
                                gateway_namespaces=["ingress-nginx"], allowlist=["10.20.0.0/16"],
                                tls_certificate="-----BEGIN CERTIFICATE-----\n",
                                tls_private_key="-----BEGIN PRIVATE KEY-----\n")
    base.update(over)
    return SecurityArgs(**base)


def test_objects_are_valid_and_mirror_the_firewall() -> None:
    resources = _run(_args())
    k8s = [r for r in resources if r.type.startswith("kubernetes:")]
    assert len(k8s) == 4  # TLS Secret, three NetworkPolicies
    for res in k8s:
        try:
            kubernetes_validate.validate(_object(res), VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{res.type} {res.name} is not a valid Kubernetes {VERSION} object: {exc}")
    policies = {r.name: r.state["spec"] for r in resources if r.type == "kubernetes:networking.k8s.io/v1:NetworkPolicy"}
    assert policies["front-door-default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    serving = policies["front-door-serving-port"]["ingress"][0]
    assert serving["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert {str(f.get("namespaceSelector", f.get("ipBlock"))) for f in serving["from"]} == {
        str({"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}),
        str({"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}),
        str({"cidr": "10.20.0.0/16"})}
    tls = next(r for r in resources if r.name == "front-door-tls")
    assert tls.state["type"] == "kubernetes.io/tls" and set(tls.state["stringData"]) == {"tls.crt", "tls.key"}


def test_cert_manager_certificate_where_the_cluster_has_it() -> None:
    resources = _run(_args(cert_manager_issuer="rack-ca", tls_dns_names=["llm.example.internal"],
                           tls_certificate=None, tls_private_key=None))
    cert = next(r for r in resources if r.type == "kubernetes:cert-manager.io/v1:Certificate")
    spec = cert.state["spec"]
    # The fields cert-manager's v1 Certificate requires, and what it issues into.
    assert spec["secretName"] == "llmrack-api-tls" and spec["dnsNames"] == ["llm.example.internal"]
    assert spec["issuerRef"] == {"name": "rack-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert not [r for r in resources if r.name == "front-door-tls"]


def test_serving_tls_names_and_the_batch_service_where_the_stack_runs_them() -> None:
    """serving.tls: cert-manager's certificate also carries the serving Service's in-cluster names; a certificate
    from the stack carries its CA as ca.crt when given one; the batch service's pods reach the serving port and the
    gateways and Prometheus reach theirs, through the namespace's default deny. Every object valid."""
    names = service_dns_names("llm")
    resources = _run(_args(cert_manager_issuer="rack-ca", tls_dns_names=["llm.example.internal", names[0]],
                           tls_certificate=None, tls_private_key=None, serving_dns_names=names, batch_port=8100))
    cert = next(r for r in resources if r.type == "kubernetes:cert-manager.io/v1:Certificate")
    assert cert.state["spec"]["dnsNames"] == ["llm.example.internal", *names]  # once each
    assert names[1:] == ["llmrack-serving.llm", "llmrack-serving.llm.svc", "llmrack-serving.llm.svc.cluster.local"]

    resources = _run(_args(tls_ca_certificate="-----BEGIN CERTIFICATE-----\n", batch_port=8100))
    for res in (r for r in resources if r.type.startswith("kubernetes:")):
        kubernetes_validate.validate(_object(res), VERSION, strict=True)
    tls = next(r for r in resources if r.name == "front-door-tls")
    assert set(tls.state["stringData"]) == {"tls.crt", "tls.key", CA_KEY}
    policies = {r.name: r.state["spec"] for r in resources if r.type == "kubernetes:networking.k8s.io/v1:NetworkPolicy"}
    batch_pods = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": BATCH_APP}}}
    assert batch_pods in policies["front-door-serving-port"]["ingress"][0]["from"]
    batch = policies["front-door-batch-port"]
    assert batch["podSelector"] == batch_pods["podSelector"]
    assert batch["ingress"] == [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
                                          for ns in ("ingress-nginx", "monitoring")],
                                 "ports": [{"protocol": "TCP", "port": 8100}]}]
    # Without the batch service, neither.
    resources = _run(_args())
    assert not [r for r in resources if r.name == "front-door-batch-port"]
    assert all("podSelector" not in f for r in resources if r.name == "front-door-serving-port"
               for f in r.state["spec"]["ingress"][0]["from"])


@pytest.mark.parametrize(("over", "says"), [
    ({"gateway_namespaces": []}, "gateway_namespaces is empty"),
    ({"tls_certificate": None}, "either cert_manager_issuer"),
    ({"cert_manager_issuer": "ca", "tls_dns_names": []}, "tls_dns_names is empty"),
    ({"cert_manager_issuer": "ca", "tls_dns_names": ["llm"], "tls_ca_certificate": "PEM"},
     "cert-manager writes the CA"),
])
def test_bad_arguments_name_the_fix(over: dict[str, Any], says: str) -> None:
    with pytest.raises(ComponentArgsError, match=says):
        _args(**over).validate()



def _one_device_llmrack() -> dict[str, Any]:
    """prod's spec on one device with llmrack's engine (the engine that reads a key store)."""
    deployment = dict(stack_config("prod")["llmrack:deployment"])
    return {**deployment, "model": {**deployment["model"], "name": "deepseek-r1-distill-qwen-1.5b"},
            "serving": {**deployment["serving"], "engine": "llmrack"}}


def test_the_program_renders_it_and_pods_mount_the_key_store(scan_results: Path) -> None:
    store = KeyStore(tenants={}, keys=[])
    _, key = store.create("chat", "product")
    secrets = {**SECRETS, "llmrack:keysStore": store.dumps(),
               "llmrack:tlsCertificate": "-----BEGIN CERTIFICATE-----\n",
               "llmrack:tlsPrivateKey": "-----BEGIN PRIVATE KEY-----\n"}
    plain = {"llmrack:scanResultsDir": str(scan_results), "llmrack:deployment": _one_device_llmrack(),
             "llmrack:security": {"gatewayNamespaces": ["ingress-nginx"]}}
    run, error, _ = run_stack("prod", plain=plain, secrets=secrets)
    assert error is None, error
    assert run is not None
    version = stack_config("prod")["llmrack:kubernetes"]["version"]
    objects = kubernetes_objects(run)
    ours = [(r, obj) for r, obj in objects if r.name.startswith("security-")]
    assert sorted(r.name for r, _ in ours) == ["security-default-deny", "security-replica-peers",
                                               "security-serving-port", "security-tls"]
    for _, obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
    assert {obj["metadata"]["namespace"] for _, obj in ours} == {run.outputs["namespace"]}

    # The serving pods' keys Secret is the key store (named keys, hashes), not the flat apiKeys list.
    keys = run.one("kubernetes:core/v1:Secret", "serving-api-keys").state
    (stored,) = keys["stringData"].values()
    assert stored == store.dumps() and '"format": "llmrack-keys/1"' in stored and '"tenant": "product"' in stored
    assert key not in stored and not any(k in stored for k in SECRETS["llmrack:apiKeys"])
    pod = run.one("kubernetes:apps/v1:Deployment").state["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == keys["metadata"]["name"]
    (container,) = pod["containers"]
    assert {"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True} in container["volumeMounts"]
    assert container["args"][container["args"].index("--api-key-file") + 1] == f"{API_KEYS_DIR}/keys"


def test_a_key_store_for_vllm_pods_is_refused_before_any_resource(scan_results: Path) -> None:
    store = KeyStore(tenants={}, keys=[])
    store.create("chat", "product")
    run, error, monitor = run_stack("prod", plain={"llmrack:scanResultsDir": str(scan_results)},
                                    secrets={**SECRETS, "llmrack:keysStore": store.dumps()})
    assert run is None and "ServingArgs.keys_store" in str(error) and "serving.engine llmrack" in str(error), error
    assert not any(r.startswith("urn:pulumi:prod::llmrack::kubernetes") for r in monitor.get_registered_resources())


def test_a_wrong_security_key_is_named_before_any_resource(scan_results: Path) -> None:
    plain = {"llmrack:scanResultsDir": str(scan_results), "llmrack:security": {"gatewayNamespace": "x"}}
    run, error, monitor = run_stack("prod", plain=plain)
    assert run is None and error is not None
    assert "llmrack:security.gatewayNamespace: unknown key" in str(error)
    assert not monitor.get_registered_resources() or all(
        not r.startswith("urn:pulumi:prod::llmrack::kubernetes") for r in monitor.get_registered_resources())


def test_serving_tls_pods_serve_with_the_front_doors_certificate(scan_results: Path) -> None:
    from llmrack.contracts.serving_command import TLS_DIR

    deployment = _one_device_llmrack()
    deployment = {**deployment, "serving": {**deployment["serving"], "tls": True}}
    secrets = {**SECRETS, "llmrack:tlsCertificate": "-----BEGIN CERTIFICATE-----\n",
               "llmrack:tlsPrivateKey": "-----BEGIN PRIVATE KEY-----\n"}
    plain = {"llmrack:scanResultsDir": str(scan_results), "llmrack:deployment": deployment,
             "llmrack:security": {"gatewayNamespaces": ["ingress-nginx"], "tlsSecretName": "api-tls"}}
    run, error, _ = run_stack("prod", plain=plain, secrets=secrets)
    assert error is None, error
    assert run is not None
    version = stack_config("prod")["llmrack:kubernetes"]["version"]
    for _, obj in kubernetes_objects(run):
        kubernetes_validate.validate(obj, version, strict=True)
    pod = run.one("kubernetes:apps/v1:Deployment").state["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"name": "tls", "mountPath": TLS_DIR, "readOnly": True} in container["volumeMounts"]
    assert next(v for v in pod["volumes"] if v["name"] == "tls")["secret"]["secretName"] == "api-tls"
    args = container["args"]
    assert args[args.index("--ssl-certfile") + 1] == f"{TLS_DIR}/tls.crt"
    assert args[args.index("--ssl-keyfile") + 1] == f"{TLS_DIR}/tls.key"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS", probe
    stack_values = run.one("kubernetes:helm.sh/v3:Release", "monitoring-kube-prometheus-stack").state["values"]
    (job,) = [c for c in stack_values["prometheus"]["prometheusSpec"]["additionalScrapeConfigs"]
              if c["job_name"] == "llmrack-serving"]
    assert job["scheme"] == "https"

    # Without llmrack:security there is no certificate to serve with: refused before any resource.
    del plain["llmrack:security"]
    run, error, monitor = run_stack("prod", plain=plain, secrets=secrets)
    assert run is None and "serving.tls needs llmrack:security" in str(error), error
    assert not any(r.startswith("urn:pulumi:prod::llmrack::kubernetes") for r in monitor.get_registered_resources())
