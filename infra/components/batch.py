"""The batch service on Kubernetes: one Deployment running `llmrack batch serve`, its SQLite store on a
PersistentVolumeClaim, and a Service for the Files and Batches API.

With `databaseUrl` the store is PostgreSQL instead (`--state postgresql://...`, no claim): the password comes from
an existing Secret (`databasePasswordSecret`, key `password`) as libpq's PGPASSWORD, never from the stack file.

On SQLite, one replica with the Recreate strategy: the claim is one pod's, and a job in flight resumes from the
store in the new pod. On PostgreSQL, two replicas rolled one at a time: both answer the API, the one holding the
store's runner lease sends the lines and the other takes them over when it goes (llmrack.batch.runner). The
clients' keys are the stack's API keys (a Secret of its own, one key per line: the format the batch service reads
whichever engine serves), and the service presents the first of them to the serving Service.

With the spec's serving.tls the serving Service speaks https: the service reaches it at its fixed name
(infra.components.serving.TLS_SERVICE_NAME, which the pods' certificate carries) and verifies the certificate
against the CA that signed it, the `ca.crt` of the front door's TLS Secret, mounted alone (never the serving key)
and passed as `--upstream-ca-file`.

`batch_args` turns the stack's optional `llmrack:batch` object into BatchArgs; without it there is no batch service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components._args import check
from llmrack.batch.settings import DEFAULT_MAX_INFLIGHT, DEFAULT_PORT
from llmrack.batch.store import is_database_url

APP = "llmrack-batch"
STATE_DIR = "/var/lib/llmrack-batch"
KEYS_DIR = "/etc/llmrack/batch-keys"
KEYS_FILE = "api-keys"
UPSTREAM_CA_DIR = "/etc/llmrack/upstream-ca"
UPSTREAM_CA_FILE = "ca.crt"
# The keys of `llmrack:batch` and their types.
CONFIG_KEYS: dict[str, type] = {"stateSizeGib": int, "storageClass": str, "maxInflight": int, "prometheusUrl": str,
                                 "databaseUrl": str, "databasePasswordSecret": str}


@dataclass
class BatchArgs:
    namespace: pulumi.Input[str]
    image: str
    # The serving stack's Service and port: the rack's OpenAI API inside the cluster.
    upstream_service: pulumi.Input[str]
    upstream_port: int
    # The stack's API keys (secret): a job's tenant is its key's.
    api_keys: pulumi.Input[list[str]]
    state_size_gib: int = 10
    storage_class: str | None = None
    port: int = DEFAULT_PORT
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    prometheus_url: str | None = None
    run_as_user: int = 10001
    # PostgreSQL instead of SQLite on a claim: a libpq URL without password, and the Secret holding it.
    database_url: str | None = None
    database_password_secret: str | None = None
    # serving.tls: the Secret and key holding the certificate of the CA that signed the serving pods' certificate;
    # the upstream is then https and verified against it.
    upstream_ca_secret: str | None = None
    upstream_ca_key: str | None = None

    @property
    def upstream_scheme(self) -> str:
        return "https" if self.upstream_ca_secret is not None else "http"

    def validate(self) -> None:
        check(1 <= self.state_size_gib <= 10_000, "BatchArgs.state_size_gib", self.state_size_gib,
              "must be between 1 and 10000")
        check(1 <= self.port <= 65535, "BatchArgs.port", self.port, "must be a TCP port")
        check(self.max_inflight >= 1, "BatchArgs.max_inflight", self.max_inflight, "must be at least 1")
        check("@sha256:" in self.image, "BatchArgs.image", self.image, "must be pinned by digest (@sha256:)")
        if self.database_url is not None:
            check(is_database_url(self.database_url), "BatchArgs.database_url", self.database_url,
                  "must be a postgresql:// URL")
            authority = self.database_url.split("://", 1)[1].split("/", 1)[0]
            check(":" not in authority.rpartition("@")[0], "BatchArgs.database_url", "postgresql://USER:***@...",
                  "must not carry the password: put it in the Secret named by databasePasswordSecret")
        check(self.database_password_secret is None or self.database_url is not None,
              "BatchArgs.database_password_secret", self.database_password_secret, "needs databaseUrl")
        check((self.upstream_ca_secret is None) == (self.upstream_ca_key is None), "BatchArgs.upstream_ca_key",
              self.upstream_ca_key, "goes with upstream_ca_secret (both or neither)")


class BatchService(pulumi.ComponentResource):
    service_name: pulumi.Output[str]

    def __init__(self, name: str, args: BatchArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args.validate()
        super().__init__("llmrack:batch:BatchService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {"app.kubernetes.io/name": APP, "app.kubernetes.io/part-of": "llmrack",
                  "app.kubernetes.io/component": "batch"}
        selector = {"app.kubernetes.io/name": APP}
        claim = None if args.database_url else k8s.core.v1.PersistentVolumeClaim(
            f"{name}-state",
            metadata={"namespace": args.namespace, "labels": labels},
            spec={"accessModes": ["ReadWriteOnce"], "storageClassName": args.storage_class,
                  "resources": {"requests": {"storage": f"{args.state_size_gib}Gi"}}},
            # The store holds users' jobs and results: a teardown or a replace must not delete them.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(retain_on_delete=True)),
        )
        secret = k8s.core.v1.Secret(
            f"{name}-api-keys",
            metadata={"namespace": args.namespace, "labels": labels},
            type="Opaque",
            string_data={KEYS_FILE: pulumi.Output.secret(args.api_keys).apply(lambda keys: "".join(
                f"{k}\n" for k in keys))},
            opts=child,
        )
        upstream = pulumi.Output.format("{0}://{1}:{2}", args.upstream_scheme, args.upstream_service,
                                        args.upstream_port)
        command = pulumi.Output.all(upstream).apply(lambda u: self.argv(args, u[0]))
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata={"namespace": args.namespace, "labels": labels},
            spec={
                "replicas": 2 if args.database_url else 1,
                "strategy": ({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
                             if args.database_url else {"type": "Recreate"}),
                "selector": {"matchLabels": selector},
                "template": {"metadata": {"labels": labels}, "spec": self._pod_spec(args, command, claim, secret)},
            },
            opts=child,
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata={"namespace": args.namespace, "labels": labels},
            spec={"selector": selector,
                  "ports": [{"name": "http", "port": args.port, "targetPort": "http", "protocol": "TCP"}]},
            opts=child,
        )
        self.service_name = service.metadata["name"]
        self.register_outputs({"deployment": deployment.metadata["name"], "service": self.service_name,
                               "stateClaim": claim.metadata["name"] if claim else None})

    @staticmethod
    def argv(args: BatchArgs, upstream: str) -> list[str]:
        """Exactly the command the Ansible role's unit runs, with the pod's paths."""
        keys = f"{KEYS_DIR}/{KEYS_FILE}"
        argv = ["llmrack", "batch", "serve", "--upstream", upstream, "--port", str(args.port),
                "--state", args.database_url or STATE_DIR,
                "--api-key-file", keys, "--host", "0.0.0.0", "--upstream-api-key-file", keys,
                "--max-inflight", str(args.max_inflight)]
        if args.upstream_ca_secret is not None:
            argv += ["--upstream-ca-file", f"{UPSTREAM_CA_DIR}/{UPSTREAM_CA_FILE}"]
        if args.prometheus_url:
            argv += ["--prometheus", args.prometheus_url]
        return argv

    @staticmethod
    def _pod_spec(args: BatchArgs, command: Any, claim: Any, secret: Any) -> dict[str, Any]:
        http = {"port": "http", "path": "/health"}
        env: list[dict[str, Any]] = [{"name": "HOME", "value": "/tmp"}]
        if args.database_password_secret:
            env.append({"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {
                "name": args.database_password_secret, "key": "password"}}})
        mounts: list[dict[str, Any]] = [{"name": "keys", "mountPath": KEYS_DIR, "readOnly": True},
                                        {"name": "tmp", "mountPath": "/tmp"}]
        volumes: list[dict[str, Any]] = [
            {"name": "keys", "secret": {"secretName": secret.metadata["name"], "defaultMode": 0o440}},
            {"name": "tmp", "emptyDir": {}}]
        if args.upstream_ca_secret is not None:
            # Only the CA's certificate: the same Secret holds the serving pods' private key.
            mounts.append({"name": "upstream-ca", "mountPath": UPSTREAM_CA_DIR, "readOnly": True})
            volumes.append({"name": "upstream-ca", "secret": {
                "secretName": args.upstream_ca_secret, "defaultMode": 0o444,
                "items": [{"key": args.upstream_ca_key, "path": UPSTREAM_CA_FILE}]}})
        if claim is not None:
            mounts.insert(0, {"name": "state", "mountPath": STATE_DIR})
            volumes.insert(0, {"name": "state", "persistentVolumeClaim": {"claimName": claim.metadata["name"]}})
        return {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": args.run_as_user, "runAsGroup": args.run_as_user,
                                "fsGroup": args.run_as_user, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "batch",
                "image": args.image,
                "command": command,
                "ports": [{"name": "http", "containerPort": args.port, "protocol": "TCP"}],
                "env": env,
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
                "readinessProbe": {"httpGet": http, "periodSeconds": 5},
                "livenessProbe": {"httpGet": http, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        }


def batch_args(raw: Any, namespace: pulumi.Input[str], image: str, upstream_service: pulumi.Input[str],
               upstream_port: int, api_keys: pulumi.Input[list[str]]) -> BatchArgs:
    """BatchArgs from the stack's `llmrack:batch` object (every key optional); raises naming a wrong key."""
    key = "llmrack:batch"
    check(isinstance(raw, dict), key, raw, f"must be an object with keys {', '.join(CONFIG_KEYS)}")
    for name, value in raw.items():
        check(name in CONFIG_KEYS, f"{key}.{name}", value, f"unknown key; known: {', '.join(CONFIG_KEYS)}")
        check(isinstance(value, CONFIG_KEYS[name]) and not isinstance(value, bool), f"{key}.{name}", value,
              f"must be of type {CONFIG_KEYS[name].__name__}")
    args = BatchArgs(namespace=namespace, image=image, upstream_service=upstream_service, upstream_port=upstream_port,
                     api_keys=api_keys, state_size_gib=raw.get("stateSizeGib", 10),
                     storage_class=raw.get("storageClass"), max_inflight=raw.get("maxInflight", DEFAULT_MAX_INFLIGHT),
                     prometheus_url=raw.get("prometheusUrl"), database_url=raw.get("databaseUrl"),
                     database_password_secret=raw.get("databasePasswordSecret"))
    args.validate()
    return args
