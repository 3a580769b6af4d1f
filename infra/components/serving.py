"""Serving on Kubernetes: namespace, API-key Secret, model volume, stable and canary Deployments (LeaderWorkerSets
for replicas of several nodes), Service, PodDisruptionBudget and a queue-driven autoscaler.

A replica of several nodes (the plan's nodes_per_replica > 1: pipeline stages across nodes) is a LeaderWorkerSet
(leaderworkerset.x-k8s.io/v1, the Kubernetes SIG API that vLLM's, KServe's and llm-d's multi-node recipes use):
one group of `size` pods per replica, created, restarted (RecreateGroupOnPodRestart: a lost rank takes the
whole group down and back, as the mp launcher cannot re-admit one) and rolled out together. The leader pod runs
the leader's command and the worker pods the headless workers', both from the one renderer; the leader's
address and each worker's rank come from what LWS puts in every pod's environment (LWS_LEADER_ADDRESS,
LWS_WORKER_INDEX), which Kubernetes expands in `args` as $(VAR). The Service selects leaders only (worker index
0): workers serve no HTTP. One-node replicas stay Deployments.

Canary: a second Deployment on the new image behind the same Service. The Service balances over pods,
so the canary's traffic share is its share of replicas (stable + canary = the plan's replicas). That
needs nothing beyond core Kubernetes, and whole replicas are the real unit anyway: each holds TP
accelerators, and there is rarely a spare one. Gateway API weights could split finer, but would add a
gateway controller to every cluster for a precision the hardware cannot use. Promotion: set the stable
image to the canary's and drop the canary key; rollback: drop the canary key (docs/pulumi.md).

Autoscaler: an autoscaling/v2 HPA on the pods metric `llmrack_num_requests_waiting`, served to the
HPA by prometheus-adapter (installed by the monitoring component) from the Prometheus that already
scrapes the pods. KEDA would do the same with one more operator and its CRDs; the adapter reuses the
monitoring stack, and the HPA stays a core object every cluster and `kubernetes-validate` knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components._args import check
from infra.rules import canary_replicas
from llmrack.contracts.metrics import NUM_REQUESTS_WAITING as QUEUE_METRIC
from llmrack.contracts.serving_command import API_KEYS_DIR, NODE_KIND_OF_VENDOR, Engine, ServingCommand
from llmrack.contracts.serving_defaults import DRAIN_TIMEOUT_S

APP = "llmrack-serving"
LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
# Labels and environment the LWS controller sets on every pod of a group (the leader's index is 0).
LWS_WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
LWS_LEADER_ADDRESS = "$(LWS_LEADER_ADDRESS)"
LWS_WORKER_INDEX = "$(LWS_WORKER_INDEX)"
MODELS_ROOT = "/models"  # the image contract: the model is mounted at /models/<name>, read-only
# serving.tls: the serving Service's fixed name, so that its in-cluster names (service_dns_names) are known before
# the certificate that must carry them is issued; without TLS the Service keeps its auto-name.
TLS_SERVICE_NAME = APP


def service_dns_names(namespace: str) -> list[str]:
    """The names a client in the cluster reaches the serving Service at under serving.tls, which the pods'
    certificate must carry for the client to verify it (the batch service uses the first: same namespace)."""
    return [TLS_SERVICE_NAME, f"{TLS_SERVICE_NAME}.{namespace}", f"{TLS_SERVICE_NAME}.{namespace}.svc",
            f"{TLS_SERVICE_NAME}.{namespace}.svc.cluster.local"]


@dataclass
class ModelVolume:
    kind: str  # pvc | hostPath
    path: str | None = None
    claim_name: str | None = None
    storage_class: str | None = None
    size_gib: int = 200


@dataclass
class ServingArgs:
    deployment_name: str
    environment: str
    namespace: str
    image: str
    api_keys: pulumi.Input[list[str]]
    # The container's command, args, env and probe paths (llmrack.contracts.serving_command, as the Ansible role).
    command: ServingCommand
    model_dir: str
    model_volume: ModelVolume
    vendor: str
    k8s_resource: str
    tensor_parallel: int
    replicas: int
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, str]] = field(default_factory=list)
    canary_image: str | None = None
    canary_weight: int | None = None
    service_type: str = "ClusterIP"
    allowlist: list[str] = field(default_factory=list)
    autoscaling: bool = False
    max_replicas: int | None = None
    target_waiting_per_pod: float = 4
    startup_timeout_s: int = 1800
    run_as_user: int = 10001
    # A replica of several nodes: the workers' command (rendered for rank 1; each pod's rank is LWS's index).
    nodes_per_replica: int = 1
    worker_command: ServingCommand | None = None
    # The key store `llmrack keys` writes (JSON: named keys of tenants, SHA-256 hashes only), secret: when given,
    # the pods' keys Secret holds it instead of the flat api_keys list; llmrack's engine re-reads it when the
    # kubelet updates the mounted Secret, so keys change without a restart.
    keys_store: pulumi.Input[str] | None = None
    # The spec's serving.tls (the command has tls_dir): the kubernetes.io/tls Secret the pods serve with, mounted
    # at the command's tls_dir (tls.crt, tls.key); the front door's (llmrack:security) certificate, which carries the
    # Service's in-cluster names (service_dns_names).
    tls_secret_name: str | None = None

    def validate(self) -> None:
        check(self.vendor in NODE_KIND_OF_VENDOR, "ServingArgs.vendor", self.vendor,
              f"must be one of {', '.join(NODE_KIND_OF_VENDOR)}")
        check(self.command.api_key_file is not None, "ServingArgs.command", self.command.argv,
              "must read API keys from a file (rendered with api_keys=True)")
        # vLLM reads plain keys, once, at start: hashes and tenants are llmrack's engine's (docs/security.md).
        check(self.keys_store is None or self.command.engine is Engine.llmrack, "ServingArgs.keys_store",
              self.command.engine.value, "a key store (llmrack:keysStore) needs serving.engine llmrack; vLLM pods "
              "read the flat llmrack:apiKeys list (tenants' keys are then checked in front of them)")
        check(self.tensor_parallel >= 1, "ServingArgs.tensor_parallel", self.tensor_parallel, "must be >= 1")
        check(self.model_volume.kind in ("pvc", "hostPath"), "ServingArgs.model_volume.kind", self.model_volume.kind,
              "must be pvc or hostPath")
        check(self.service_type in ("ClusterIP", "LoadBalancer"), "ServingArgs.service_type", self.service_type,
              "must be ClusterIP or LoadBalancer")
        check(not self.autoscaling or (self.max_replicas or 0) >= self.stable_replicas, "ServingArgs.max_replicas",
              self.max_replicas, f"must be at least the stable replicas ({self.stable_replicas})")
        # The images' digest pins and scan gate, and the LoadBalancer allowlist, are stack keys: infra.config
        # checked them before the program registered anything.
        if self.canary_image is not None:
            check(self.canary_weight is not None, "ServingArgs.canary_weight", None, "required with a canary image")
        check(self.nodes_per_replica >= 1, "ServingArgs.nodes_per_replica", self.nodes_per_replica, "must be >= 1")
        if self.nodes_per_replica > 1:
            check(self.worker_command is not None and not self.worker_command.serves_http,
                  "ServingArgs.worker_command", None, "a replica of several nodes needs the headless workers' command")
            check(self.command.nodes == self.nodes_per_replica and self.command.serves_http, "ServingArgs.command",
                  self.command.argv, f"must be the leader's command of a {self.nodes_per_replica}-node replica")

    @property
    def port(self) -> int:
        return self.command.port

    @property
    def split(self) -> tuple[int, int]:
        if self.canary_image is None or self.canary_weight is None:
            return self.replicas, 0
        return canary_replicas(self.replicas, self.canary_weight)

    @property
    def stable_replicas(self) -> int:
        return self.split[0]


class ServingStack(pulumi.ComponentResource):
    service_name: pulumi.Output[str]
    canary_share: float

    def __init__(self, name: str, args: ServingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args.validate()
        # Set by the program from llmrack:security once it is read (infra/__main__.py).
        check(args.command.tls_dir is None or args.tls_secret_name is not None, "ServingArgs.tls_secret_name",
              None, "serving.tls needs the TLS Secret the pods serve with: add llmrack:security (its certificate)")
        super().__init__("llmrack:serving:ServingStack", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.args = args
        base_labels = {
            "app.kubernetes.io/name": APP,
            "app.kubernetes.io/instance": args.deployment_name,
            "app.kubernetes.io/part-of": "llmrack",
            "app.kubernetes.io/component": "serving",
            "llmrack.io/environment": args.environment,
        }
        selector = {k: base_labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}

        hostpath = args.model_volume.kind == "hostPath"
        ns = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={"name": args.namespace, "labels": {
                **base_labels,
                # `restricted` forbids hostPath volumes; a hostPath model volume needs `baseline`.
                "pod-security.kubernetes.io/enforce": "baseline" if hostpath else "restricted",
            }},
            opts=child,
        )
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[ns])
        namespace = ns.metadata["name"]

        secret = k8s.core.v1.Secret(
            f"{name}-api-keys",
            metadata={"namespace": namespace, "labels": base_labels},
            type="Opaque",
            # The keys file in the format the engine reads: the key store (hashes) where there is one, else one
            # key per line, or vLLM's config YAML.
            string_data={args.command.api_key_file_name: pulumi.Output.secret(args.keys_store)
                         if args.keys_store is not None else pulumi.Output.secret(args.api_keys).apply(
                             args.command.api_key_file_content)},
            opts=in_ns,
        )
        model_source = self._model_volume(name, args, namespace, base_labels, in_ns)

        stable, canary = args.split
        total = stable + canary
        self.canary_share = round(100 * canary / total, 1)
        stable_dep = self._deployment(f"{name}-stable", args, "stable", args.image, stable, base_labels, namespace,
                                      secret, model_source, in_ns)
        outputs: dict[str, Any] = {
            "namespace": namespace,
            "stableDeployment": stable_dep.metadata["name"],
            "stableReplicas": stable,
            "canaryReplicas": canary,
            "canarySharePercent": self.canary_share,
        }
        if canary:
            assert args.canary_image is not None
            canary_dep = self._deployment(f"{name}-canary", args, "canary", args.canary_image, canary, base_labels,
                                          namespace, secret, model_source, in_ns)
            outputs["canaryDeployment"] = canary_dep.metadata["name"]

        service_spec: dict[str, Any] = {
            "type": args.service_type,
            # Both tracks: the canary's share of pods is its share of traffic. Of a multi-node replica only the
            # leader serves HTTP.
            "selector": {**selector, LWS_WORKER_INDEX_LABEL: "0"} if args.nodes_per_replica > 1 else selector,
            "ports": [{"name": "http", "port": args.port, "targetPort": "http", "protocol": "TCP"}],
        }
        if args.service_type == "LoadBalancer":
            service_spec["loadBalancerSourceRanges"] = args.allowlist
        service_meta: dict[str, Any] = {"namespace": namespace, "labels": base_labels}
        if args.command.tls_dir:
            # The certificate names it (service_dns_names); the provider deletes a named object before replacing it.
            service_meta["name"] = TLS_SERVICE_NAME
        service = k8s.core.v1.Service(f"{name}-service", metadata=service_meta, spec=service_spec, opts=in_ns)
        # One replica down at a time, whether a node drains or a rollout replaces a pod: the same budget
        # the rollout strategy uses, so a drain never stalls a rollout or the other way round.
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata={"namespace": namespace, "labels": base_labels},
            spec={"maxUnavailable": 1, "selector": {"matchLabels": selector}},
            opts=in_ns,
        )
        if args.autoscaling:
            self._autoscaler(name, args, stable, stable_dep, namespace, base_labels, in_ns)
        self.service_name = service.metadata["name"]
        outputs["service"] = self.service_name
        self.register_outputs(outputs)

    def _model_volume(self, name: str, args: ServingArgs, namespace: Any, labels: dict[str, str],
                      opts: pulumi.ResourceOptions) -> dict[str, Any]:
        vol = args.model_volume
        if vol.kind == "hostPath":
            return {"hostPath": {"path": vol.path, "type": "Directory"}}
        if vol.claim_name:
            return {"persistentVolumeClaim": {"claimName": vol.claim_name, "readOnly": True}}
        claim = k8s.core.v1.PersistentVolumeClaim(
            f"{name}-models",
            metadata={"namespace": namespace, "labels": labels},
            spec={
                # Every replica, on any node, mounts the same weights; the pods mount them read-only.
                "accessModes": ["ReadWriteMany"],
                "storageClassName": vol.storage_class,
                "resources": {"requests": {"storage": f"{vol.size_gib}Gi"}},
            },
            # Weights take hours to copy in; a stack teardown or a replace must not throw them away.
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(retain_on_delete=True)),
        )
        return {"persistentVolumeClaim": {"claimName": claim.metadata["name"], "readOnly": True}}

    def _pod_spec(self, args: ServingArgs, image: str, cmd: ServingCommand, secret: Any,
                  model_source: dict[str, Any], lws: bool = False) -> dict[str, Any]:
        """A serving pod: the leader's or a headless worker's (no HTTP, so no port and no probes)."""
        model_path = f"{MODELS_ROOT}/{args.model_dir}"
        mounts = [
            {"name": "models", "mountPath": model_path, "readOnly": True},
            {"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # the root filesystem is read-only; caches go here
        ]
        volumes: list[dict[str, Any]] = [
            {"name": "models", **model_source},
            {"name": "api-keys", "secret": {"secretName": secret.metadata["name"], "defaultMode": 0o440}},
            {"name": "tmp", "emptyDir": {}},
        ]
        if cmd.tls_dir:
            # serving.tls: the port speaks TLS with the front door's certificate (kubernetes.io/tls: tls.crt, tls.key).
            mounts.append({"name": "tls", "mountPath": cmd.tls_dir, "readOnly": True})
            volumes.append({"name": "tls", "secret": {"secretName": args.tls_secret_name, "defaultMode": 0o440}})
        if cmd.shared_memory:
            # NCCL/HCCL pass tensors between ranks through shared memory; the runtime's default 64 MiB
            # /dev/shm makes multi-device serving fail or crawl.
            mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
            volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted({"HOME": "/tmp", **cmd.env}.items())]
        args_list = list(cmd.args)
        if lws:
            # The pod's own address is what vLLM tells the other ranks; the rank is LWS's worker index.
            env.append({"name": "VLLM_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
            if not cmd.serves_http and "--node-rank" in args_list:
                args_list[args_list.index("--node-rank") + 1] = LWS_WORKER_INDEX
        container: dict[str, Any] = {
            "name": "serving",
            "image": image,
            "command": list(cmd.program),
            "args": args_list,
            "env": env,
            # Extended resources are requested through limits; the plan's TP degree is the device count.
            "resources": {"limits": {args.k8s_resource: str(args.tensor_parallel)}},
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": mounts,
        }
        if cmd.serves_http:
            http = {"port": "http", "scheme": "HTTPS" if cmd.tls_dir else "HTTP"}
            container.update({
                "ports": [{"name": "http", "containerPort": args.port, "protocol": "TCP"}],
                # Loading weights takes minutes: the startup probe holds liveness off until /health answers once.
                "startupProbe": {"httpGet": {**http, "path": cmd.health_path}, "periodSeconds": 10,
                                 "failureThreshold": max(1, max(args.startup_timeout_s,
                                                                cmd.startup_timeout_s) // 10)},
                "readinessProbe": {"httpGet": {**http, "path": cmd.ready_path}, "periodSeconds": 5,
                                   "failureThreshold": 3},
                "livenessProbe": {"httpGet": {**http, "path": cmd.health_path}, "periodSeconds": 10,
                                  "timeoutSeconds": 5, "failureThreshold": 3},
            })
        return {
            "nodeSelector": args.node_selector,
            "tolerations": args.tolerations,
            "terminationGracePeriodSeconds": DRAIN_TIMEOUT_S + 15,
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": args.run_as_user,
                                "runAsGroup": args.run_as_user, "fsGroup": args.run_as_user,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            "volumes": volumes,
        }

    def _deployment(self, res_name: str, args: ServingArgs, track: str, image: str, replicas: int,
                    base_labels: dict[str, str], namespace: Any, secret: Any, model_source: dict[str, Any],
                    opts: pulumi.ResourceOptions) -> Any:
        if args.nodes_per_replica > 1:
            return self._leader_worker_set(res_name, args, track, image, replicas, base_labels, namespace, secret,
                                           model_source, opts)
        labels = {**base_labels, "llmrack.io/track": track}
        extra: list[str] = []
        if args.autoscaling and track == "stable":
            # The HPA owns the replica count once it exists; Pulumi sets only the first value.
            extra.append("spec.replicas")
        return k8s.apps.v1.Deployment(
            res_name,
            metadata={"namespace": namespace, "labels": labels},
            spec={
                "replicas": replicas,
                # Rollback targets: `kubectl rollout undo` needs the old ReplicaSets kept.
                "revisionHistoryLimit": 5,
                # No spare accelerators: a surge pod would wait forever for devices and the rollout would
                # deadlock. Replace in place, one replica at a time.
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
                "selector": {"matchLabels": {k: labels[k] for k in (
                    "app.kubernetes.io/name", "app.kubernetes.io/instance", "llmrack.io/track")}},
                "template": {
                    "metadata": {"labels": labels, "annotations": self._scrape(args)},
                    "spec": self._pod_spec(args, image, args.command, secret, model_source),
                },
            },
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(ignore_changes=extra)),
        )

    @staticmethod
    def _scrape(args: ServingArgs) -> dict[str, str]:
        return {"prometheus.io/scrape": "true", "prometheus.io/port": str(args.port), "prometheus.io/path": "/metrics"}

    def _leader_worker_set(self, res_name: str, args: ServingArgs, track: str, image: str, replicas: int,
                           base_labels: dict[str, str], namespace: Any, secret: Any, model_source: dict[str, Any],
                           opts: pulumi.ResourceOptions) -> Any:
        """`replicas` groups of nodes_per_replica pods: a leader (rank 0, HTTP) and headless workers."""
        assert args.worker_command is not None
        labels = {**base_labels, "llmrack.io/track": track}
        extra = ["spec.replicas"] if args.autoscaling and track == "stable" else []
        return k8s.apiextensions.CustomResource(
            res_name,
            api_version=LWS_API_VERSION,
            kind="LeaderWorkerSet",
            metadata={"namespace": namespace, "labels": labels},
            spec={
                "replicas": replicas,
                # LeaderCreated: workers start with their leader, not after it is ready (the leader's vLLM waits
                # for every rank to join before its API answers).
                "startupPolicy": "LeaderCreated",
                # As the Deployments: no spare accelerators for a surge group; one whole replica at a time.
                "rolloutStrategy": {"type": "RollingUpdate",
                                    "rollingUpdateConfiguration": {"maxUnavailable": 1, "maxSurge": 0}},
                "leaderWorkerTemplate": {
                    "size": args.nodes_per_replica,
                    "restartPolicy": "RecreateGroupOnPodRestart",
                    "leaderTemplate": {
                        "metadata": {"labels": {**labels, "llmrack.io/role": "leader"},
                                     "annotations": self._scrape(args)},
                        "spec": self._pod_spec(args, image, args.command, secret, model_source, lws=True),
                    },
                    "workerTemplate": {
                        "metadata": {"labels": {**labels, "llmrack.io/role": "worker"}},
                        "spec": self._pod_spec(args, image, args.worker_command, secret, model_source, lws=True),
                    },
                },
            },
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(ignore_changes=extra)),
        )

    def _autoscaler(self, name: str, args: ServingArgs, stable: int, target: Any, namespace: Any,
                    labels: dict[str, str], opts: pulumi.ResourceOptions) -> None:
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata={"namespace": namespace, "labels": labels},
            spec={
                # LeaderWorkerSet has a scale subresource: the HPA scales whole replicas (groups).
                "scaleTargetRef": {"apiVersion": LWS_API_VERSION, "kind": "LeaderWorkerSet",
                                   "name": target.metadata["name"]} if args.nodes_per_replica > 1 else
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": target.metadata["name"]},
                "minReplicas": stable,
                "maxReplicas": args.max_replicas,
                "metrics": [{
                    "type": "Pods",
                    "pods": {"metric": {"name": QUEUE_METRIC},
                             "target": {"type": "AverageValue", "averageValue": f"{args.target_waiting_per_pod:g}"}},
                }],
                "behavior": {
                    # A new replica loads weights for minutes: scale down slowly so load spikes do not flap.
                    "scaleDown": {"stabilizationWindowSeconds": 900,
                                  "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}]},
                    "scaleUp": {"stabilizationWindowSeconds": 60,
                                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]},
                },
            },
            opts=opts,
        )
