"""The front door's security on Kubernetes, equal to what the gateway and firewall roles do on a rack.

- TLS: a cert-manager `Certificate` (where the cluster has cert-manager: an issuer name is given) or a
  `kubernetes.io/tls` Secret from the stack's secret certificate and key (and, optionally, the certificate of the
  CA that signed them, as `ca.crt`); the ingress in front of the serving Service terminates TLS with that Secret.
  With serving.tls the serving pods serve with it too, and the certificate carries the serving Service's in-cluster
  names (`serving_dns_names`): a client in the cluster (the batch service) verifies it against the Secret's
  `ca.crt`, which cert-manager writes for a CA-backed issuer and the stack gives as llmrack:tlsCaCertificate.
- NetworkPolicies: the serving pods accept nothing by default; the serving port is open to the gateway's namespaces
  (the ingress controller) and to Prometheus' namespace, to the load balancer's allowlist when there is one, to the
  batch service's pods when the stack runs it, and every port between the pods of the deployment itself (a
  multi-node replica's collectives). The batch service's port is open to the gateway's namespaces and Prometheus'.
- Keys: the key store `llmrack keys` writes (hashes only, stack secret llmrack:keysStore) is the serving pods' own
  keys Secret (infra/components/serving.py, `ServingArgs.keys_store`): the Secret they mount, in place of the flat
  apiKeys list, and that llmrack's engine re-reads when the kubelet updates it (no restart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components._args import ComponentArgsError
from infra.components.batch import APP as BATCH_APP
from infra.components.serving import APP

TLS_TYPE = "kubernetes.io/tls"
# The key of the TLS Secret that holds the signing CA's certificate: where cert-manager writes it, and where the
# stack's llmrack:tlsCaCertificate goes.
CA_KEY = "ca.crt"


@dataclass
class SecurityArgs:
    namespace: pulumi.Input[str]
    deployment_name: str
    serving_port: int
    # Namespaces whose pods may call the serving port: the ingress controller / gateway in front of the Service.
    gateway_namespaces: list[str]
    monitoring_namespace: str = "monitoring"
    # CIDRs a LoadBalancer Service admits (its loadBalancerSourceRanges); empty for a ClusterIP Service.
    allowlist: list[str] = field(default_factory=list)
    tls_secret_name: str = "llmrack-api-tls"
    cert_manager_issuer: str | None = None  # a ClusterIssuer's name; None: the certificate comes from the stack
    cert_manager_issuer_kind: str = "ClusterIssuer"
    tls_dns_names: list[str] = field(default_factory=list)
    tls_certificate: pulumi.Input[str] | None = None  # PEM, secret
    tls_private_key: pulumi.Input[str] | None = None  # PEM, secret
    # The certificate of the CA that signed tls_certificate (PEM): the Secret's ca.crt, for clients in the cluster.
    tls_ca_certificate: pulumi.Input[str] | None = None
    # serving.tls: the serving Service's in-cluster names (serving.service_dns_names), added to cert-manager's.
    serving_dns_names: list[str] = field(default_factory=list)
    # The batch service's port when the stack runs it: its pods call the serving port, the gateways call it.
    batch_port: int | None = None

    @property
    def secret_has_ca(self) -> bool:
        """Whether the TLS Secret carries the signing CA's certificate (CA_KEY): cert-manager writes it for a
        CA-backed issuer (CA, Vault, self-signed; an ACME issuer cannot issue in-cluster names at all); a Secret
        from the stack's certificate has it only with tls_ca_certificate."""
        return bool(self.cert_manager_issuer) or self.tls_ca_certificate is not None

    def validate(self) -> None:
        if not self.gateway_namespaces:
            raise ComponentArgsError("security: gateway_namespaces is empty: name the namespace(s) of the ingress "
                                     "controller or gateway that calls the serving pods, e.g. ['ingress-nginx']")
        if self.cert_manager_issuer:
            if not self.tls_dns_names:
                raise ComponentArgsError("security: tls_dns_names is empty: cert-manager needs the names the API "
                                         "is reached at, e.g. ['llm.example.internal']")
            if self.tls_ca_certificate is not None:
                raise ComponentArgsError("security: tls_ca_certificate (llmrack:tlsCaCertificate) is for a "
                                         "certificate from the stack; with cert_manager_issuer, cert-manager writes "
                                         "the CA into the Secret itself: unset it")
        elif self.tls_certificate is None or self.tls_private_key is None:
            raise ComponentArgsError("security: TLS needs either cert_manager_issuer (cert-manager issues the "
                                     "certificate) or both tls_certificate and tls_private_key (secret stack config)")


class FrontDoorSecurity(pulumi.ComponentResource):
    tls_secret_name: str

    def __init__(self, name: str, args: SecurityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args.validate()
        super().__init__("llmrack:security:FrontDoorSecurity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {"app.kubernetes.io/part-of": "llmrack", "app.kubernetes.io/component": "security",
                  "app.kubernetes.io/instance": args.deployment_name}
        pods = {"app.kubernetes.io/name": APP, "app.kubernetes.io/instance": args.deployment_name}
        outputs: dict[str, Any] = {}

        if args.cert_manager_issuer:
            cert = k8s.apiextensions.CustomResource(
                f"{name}-certificate",
                api_version="cert-manager.io/v1",
                kind="Certificate",
                metadata={"namespace": args.namespace, "labels": labels},
                spec={
                    "secretName": args.tls_secret_name,
                    "dnsNames": list(dict.fromkeys([*args.tls_dns_names, *args.serving_dns_names])),
                    "issuerRef": {"name": args.cert_manager_issuer, "kind": args.cert_manager_issuer_kind,
                                  "group": "cert-manager.io"},
                    "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                    # The rack's validity and renewal: 397 days, renewed 30 days before the end (the expiry
                    # alert's threshold on the rack).
                    "duration": "9528h",
                    "renewBefore": "720h",
                    "usages": ["server auth", "digital signature", "key encipherment"],
                },
                opts=child,
            )
            outputs["certificate"] = cert.metadata["name"]
        else:
            data: dict[str, Any] = {"tls.crt": pulumi.Output.secret(args.tls_certificate),
                                    "tls.key": pulumi.Output.secret(args.tls_private_key)}
            if args.tls_ca_certificate is not None:
                data[CA_KEY] = args.tls_ca_certificate
            secret = k8s.core.v1.Secret(
                f"{name}-tls",
                metadata={"name": args.tls_secret_name, "namespace": args.namespace, "labels": labels},
                type=TLS_TYPE,
                string_data=data,
                opts=child,
            )
            outputs["tlsSecret"] = secret.metadata["name"]
        self.tls_secret_name = args.tls_secret_name

        def ingress_policy(suffix: str, selected: dict[str, Any], ingress: list[dict[str, Any]] | None) -> None:
            """A NetworkPolicy of the namespace admitting `ingress` to the pods `selected` (None: admits nothing)."""
            spec: dict[str, Any] = {"podSelector": selected, "policyTypes": ["Ingress"]}
            if ingress is not None:
                spec["ingress"] = ingress
            k8s.networking.v1.NetworkPolicy(f"{name}-{suffix}", metadata={"namespace": args.namespace,
                                                                          "labels": labels},
                                            spec=spec, opts=child)

        # Default deny: a pod of the namespace that no policy below admits gets nothing.
        ingress_policy("default-deny", {}, None)
        # The gateways' and Prometheus' namespaces: they reach the serving port, and the batch port where there is one.
        gateways_and_prometheus: list[dict[str, Any]] = [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
            for ns in [*args.gateway_namespaces, args.monitoring_namespace]
        ]
        callers = [*gateways_and_prometheus, *({"ipBlock": {"cidr": cidr}} for cidr in args.allowlist)]
        batch_pods = {"app.kubernetes.io/name": BATCH_APP}
        if args.batch_port is not None:
            # The batch service sends its lines to the serving Service from the same namespace.
            callers.append({"podSelector": {"matchLabels": batch_pods}})
        ingress_policy("serving-port", {"matchLabels": pods},
                       [{"from": callers, "ports": [{"protocol": "TCP", "port": args.serving_port}]}])
        # The pods of one replica talk among themselves (collectives, the leader's launcher) on any port.
        ingress_policy("replica-peers", {"matchLabels": pods}, [{"from": [{"podSelector": {"matchLabels": pods}}]}])
        if args.batch_port is not None:
            # Clients reach the batch API through the gateway; Prometheus scrapes it (job batch).
            ingress_policy("batch-port", {"matchLabels": batch_pods},
                           [{"from": gateways_and_prometheus, "ports": [{"protocol": "TCP", "port": args.batch_port}]}])
        self.register_outputs(outputs)


# The stack's `llmrack:security` object: key -> (type, what it sets).
CONFIG_KEYS: dict[str, type] = {"gatewayNamespaces": list, "monitoringNamespace": str, "certManagerIssuer": str,
                                "certManagerIssuerKind": str, "tlsDnsNames": list, "tlsSecretName": str}


def security_args(raw: Any, namespace: pulumi.Input[str], deployment_name: str, serving_port: int,
                  allowlist: list[str], tls_certificate: pulumi.Input[str] | None,
                  tls_private_key: pulumi.Input[str] | None, tls_ca_certificate: pulumi.Input[str] | None = None,
                  serving_dns_names: list[str] | None = None, batch_port: int | None = None) -> SecurityArgs:
    """SecurityArgs from the stack's `llmrack:security` object and the secret config (llmrack:tlsCertificate,
    llmrack:tlsPrivateKey, llmrack:tlsCaCertificate); raises naming a wrong key before any resource exists."""
    key = "llmrack:security"
    if not isinstance(raw, dict):
        raise ComponentArgsError(f"{key}: {raw!r} is not valid: must be an object with keys {', '.join(CONFIG_KEYS)}")
    for name, value in raw.items():
        if name not in CONFIG_KEYS:
            raise ComponentArgsError(f"{key}.{name}: unknown key; known: {', '.join(CONFIG_KEYS)}")
        if not isinstance(value, CONFIG_KEYS[name]):
            raise ComponentArgsError(f"{key}.{name}: {value!r} is not valid: must be a {CONFIG_KEYS[name].__name__}")
    args = SecurityArgs(
        namespace=namespace, deployment_name=deployment_name, serving_port=serving_port,
        gateway_namespaces=[str(n) for n in raw.get("gatewayNamespaces", [])],
        monitoring_namespace=raw.get("monitoringNamespace", "monitoring"), allowlist=list(allowlist),
        tls_secret_name=raw.get("tlsSecretName", "llmrack-api-tls"),
        cert_manager_issuer=raw.get("certManagerIssuer"),
        cert_manager_issuer_kind=raw.get("certManagerIssuerKind", "ClusterIssuer"),
        tls_dns_names=[str(n) for n in raw.get("tlsDnsNames", [])],
        tls_certificate=tls_certificate, tls_private_key=tls_private_key, tls_ca_certificate=tls_ca_certificate,
        serving_dns_names=list(serving_dns_names or []), batch_port=batch_port)
    args.validate()
    return args
