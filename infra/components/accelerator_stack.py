"""The Kubernetes accelerator stack: NVIDIA GPU Operator (Helm) or the Ascend device plugin, and node labels.

It also says where accelerator pods go (`node_selector`, `tolerations`), so the serving pods land only
on nodes with the catalog's part, whichever vendor labelled them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components._args import check
from infra.rules import parse_image
from llmrack import catalog
from llmrack.catalog import Accelerator, Vendor

ACCELERATOR_LABEL = "llmrack.io/accelerator"
# Huawei's device-plugin manifests select nodes by this label; nothing sets it automatically.
ASCEND_NODE_LABEL = ("accelerator", "huawei-Ascend910")
# NVIDIA GPU Feature Discovery (part of the GPU Operator) labels each node with the product name.
GFD_PRODUCT_LABEL = "nvidia.com/gpu.product"


def scheduling(acc: Accelerator) -> tuple[dict[str, str], list[dict[str, str]]]:
    """nodeSelector and tolerations for a pod that needs `acc`.

    Accelerator node pools are commonly tainted with the resource name (EKS/GKE GPU pools, kubeadm
    `--register-with-taints`) so other workloads stay off them; accelerator pods tolerate it.
    """
    tolerations = [{"key": acc.k8s_resource, "operator": "Exists", "effect": "NoSchedule"}]
    if acc.vendor is Vendor.nvidia:
        # GFD writes the SMI product name with spaces as '-': "NVIDIA H100 80GB HBM3" -> NVIDIA-H100-80GB-HBM3.
        return {GFD_PRODUCT_LABEL: acc.smi_names[0].replace(" ", "-")}, tolerations
    return {ASCEND_NODE_LABEL[0]: ASCEND_NODE_LABEL[1]}, tolerations


@dataclass
class AcceleratorStackArgs:
    accelerator: str
    gpu_operator_version: str = "v25.3.0"
    gpu_operator_driver: bool = True
    nvidia_helm_repo: str = "https://helm.ngc.nvidia.com/nvidia"
    ascend_device_plugin_image: str | None = None
    npu_exporter_image: str | None = None
    label_nodes: list[str] = field(default_factory=list)

    def validate(self) -> None:
        known = catalog.accelerators()
        check(self.accelerator in known, "AcceleratorStackArgs.accelerator", self.accelerator,
              f"must be one of {', '.join(known)}")
        if known[self.accelerator].vendor is Vendor.huawei:
            check(self.ascend_device_plugin_image is not None, "AcceleratorStackArgs.ascend_device_plugin_image",
                  None, "required for Ascend accelerators")
            assert self.ascend_device_plugin_image is not None
            parse_image(self.ascend_device_plugin_image, "AcceleratorStackArgs.ascend_device_plugin_image")
            if self.npu_exporter_image is not None:
                parse_image(self.npu_exporter_image, "AcceleratorStackArgs.npu_exporter_image")


class AcceleratorStack(pulumi.ComponentResource):
    node_selector: dict[str, str]
    tolerations: list[dict[str, str]]

    def __init__(self, name: str, args: AcceleratorStackArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args.validate()
        super().__init__("llmrack:accelerator_stack:AcceleratorStack", name, None, opts)
        acc = catalog.accelerator(args.accelerator)
        child = pulumi.ResourceOptions(parent=self)
        self.node_selector, self.tolerations = scheduling(acc)
        outputs: dict[str, Any] = {"nodeSelector": self.node_selector, "resource": acc.k8s_resource}

        node_labels = {ACCELERATOR_LABEL: acc.name}
        if acc.vendor is Vendor.nvidia:
            outputs["release"] = self._gpu_operator(name, args, child).name
        else:
            node_labels[ASCEND_NODE_LABEL[0]] = ASCEND_NODE_LABEL[1]
            outputs["daemonSet"] = self._ascend_device_plugin(name, args, acc, child).metadata["name"]
            if args.npu_exporter_image is not None:
                outputs["npuExporter"] = self._npu_exporter(name, args.npu_exporter_image, acc, child)

        # Labels are a map, so a server-side-apply patch adds ours without touching anyone else's. Taints are
        # a list Kubernetes replaces whole, so they stay with whoever creates the node (node pool, kubelet flags).
        for node in args.label_nodes:
            k8s.core.v1.NodePatch(
                f"{name}-label-{node}",
                metadata=k8s.meta.v1.ObjectMetaPatchArgs(name=node, labels=node_labels),
                opts=child,
            )
        outputs["labelledNodes"] = args.label_nodes
        self.register_outputs(outputs)

    def _gpu_operator(self, name: str, args: AcceleratorStackArgs, child: pulumi.ResourceOptions) -> Any:
        ns = k8s.core.v1.Namespace(
            f"{name}-gpu-operator-ns",
            # The operator's driver and toolkit pods are privileged by design.
            metadata={"name": "gpu-operator", "labels": {"pod-security.kubernetes.io/enforce": "privileged"}},
            opts=child,
        )
        values = {
            # Off where Ansible's driver role installed the driver: two installers on one node break both.
            "driver": {"enabled": args.gpu_operator_driver},
            "toolkit": {"enabled": True},
            "devicePlugin": {"enabled": True},
            # dcgm-exporter feeds the XID/ECC/temperature alerts; Prometheus finds it by scrape config,
            # so the operator does not need the Prometheus CRDs (no ServiceMonitor ordering problem).
            "dcgmExporter": {"enabled": True, "serviceMonitor": {"enabled": False}},
            "nfd": {"enabled": True},
        }
        return k8s.helm.v3.Release(
            f"{name}-gpu-operator",
            name="gpu-operator",
            chart="gpu-operator",
            version=args.gpu_operator_version,
            namespace=ns.metadata["name"],
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=args.nvidia_helm_repo),
            values=values,
            # The operator's pods take minutes to build drivers; waiting would time out `pulumi up`.
            skip_await=True,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[ns])),
        )

    def _ascend_device_plugin(
        self, name: str, args: AcceleratorStackArgs, acc: Accelerator, child: pulumi.ResourceOptions
    ) -> Any:
        namespace = "kube-system"
        labels = {"app.kubernetes.io/name": "ascend-device-plugin", "app.kubernetes.io/part-of": "llmrack"}
        account = k8s.core.v1.ServiceAccount(
            f"{name}-ascend-sa", metadata={"name": "ascend-device-plugin", "namespace": namespace}, opts=child
        )
        # The plugin records device allocations as pod annotations and node status: it reads and patches both.
        role = k8s.rbac.v1.ClusterRole(
            f"{name}-ascend-role",
            metadata={"name": "llmrack-ascend-device-plugin"},
            rules=[
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
                {"apiGroups": [""], "resources": ["nodes", "nodes/status"], "verbs": ["get", "patch", "update"]},
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "update"]},
            ],
            opts=child,
        )
        k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-ascend-binding",
            metadata={"name": "llmrack-ascend-device-plugin"},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role.metadata["name"]},
            subjects=[{"kind": "ServiceAccount", "name": account.metadata["name"], "namespace": namespace}],
            opts=child,
        )
        host_dirs = {
            "device-plugin": "/var/lib/kubelet/device-plugins",
            "log": "/var/log/mindx-dl/devicePlugin",
            "driver": "/usr/local/Ascend/driver",
        }
        return k8s.apps.v1.DaemonSet(
            f"{name}-ascend-device-plugin",
            metadata={"name": "ascend-device-plugin", "namespace": namespace, "labels": labels},
            spec={
                "selector": {"matchLabels": labels},
                "updateStrategy": {"type": "RollingUpdate"},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": account.metadata["name"],
                        "priorityClassName": "system-node-critical",
                        "nodeSelector": {ASCEND_NODE_LABEL[0]: ASCEND_NODE_LABEL[1]},
                        "tolerations": [
                            {"key": "CriticalAddonsOnly", "operator": "Exists"},
                            {"key": acc.k8s_resource, "operator": "Exists", "effect": "NoSchedule"},
                        ],
                        "containers": [{
                            "name": "device-plugin",
                            "image": args.ascend_device_plugin_image,
                            "command": ["device-plugin"],
                            # Ascend Docker Runtime mounts the driver into containers; without Volcano the
                            # plugin schedules devices itself.
                            "args": ["-useAscendDocker=true", "-volcanoType=false",
                                     "-logFile=/var/log/mindx-dl/devicePlugin/devicePlugin.log"],
                            # It opens /dev/davinci* and the driver's management device on the host.
                            "securityContext": {"privileged": True},
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                          "limits": {"cpu": "500m", "memory": "256Mi"}},
                            "volumeMounts": [
                                {"name": key, "mountPath": path, "readOnly": key == "driver"}
                                for key, path in host_dirs.items()
                            ],
                        }],
                        "volumes": [{"name": key, "hostPath": {"path": path}} for key, path in host_dirs.items()],
                    },
                },
            },
            opts=child,
        )

    def _npu_exporter(self, name: str, image: str, acc: Accelerator, child: pulumi.ResourceOptions) -> Any:
        """Huawei's npu-exporter on every Ascend node, behind a Service the monitoring scrape job finds."""
        labels = {"app": "npu-exporter", "app.kubernetes.io/part-of": "llmrack"}
        ns = k8s.core.v1.Namespace(
            f"{name}-npu-exporter-ns",
            # The exporter reads the driver through host paths and device files.
            metadata={"name": "npu-exporter", "labels": {"pod-security.kubernetes.io/enforce": "privileged"}},
            opts=child,
        )
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[ns])
        port = 8082  # npu-exporter's default listen port
        host_dirs = {"driver": "/usr/local/Ascend/driver", "log": "/var/log/npu-exporter", "sys": "/sys"}
        k8s.apps.v1.DaemonSet(
            f"{name}-npu-exporter",
            metadata={"name": "npu-exporter", "namespace": ns.metadata["name"], "labels": labels},
            spec={
                "selector": {"matchLabels": {"app": "npu-exporter"}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {ASCEND_NODE_LABEL[0]: ASCEND_NODE_LABEL[1]},
                        "tolerations": [{"key": acc.k8s_resource, "operator": "Exists", "effect": "NoSchedule"}],
                        "containers": [{
                            "name": "npu-exporter",
                            "image": image,
                            "command": ["npu-exporter"],
                            "args": [f"-port={port}", "-ip=0.0.0.0", "-updateTime=5",
                                     "-logFile=/var/log/npu-exporter/npu-exporter.log"],
                            "ports": [{"name": "metrics", "containerPort": port}],
                            "securityContext": {"privileged": True},
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                          "limits": {"cpu": "500m", "memory": "256Mi"}},
                            "volumeMounts": [{"name": k, "mountPath": p, "readOnly": k != "log"}
                                             for k, p in host_dirs.items()],
                        }],
                        "volumes": [{"name": k, "hostPath": {"path": p}} for k, p in host_dirs.items()],
                    },
                },
            },
            opts=in_ns,
        )
        service = k8s.core.v1.Service(
            f"{name}-npu-exporter-svc",
            metadata={"name": "npu-exporter", "namespace": ns.metadata["name"], "labels": labels},
            spec={"selector": {"app": "npu-exporter"},
                  "ports": [{"name": "metrics", "port": port, "targetPort": "metrics"}]},
            opts=in_ns,
        )
        return service.metadata["name"]
