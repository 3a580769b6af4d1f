"""Monitoring: kube-prometheus-stack with llmrack's scrape config, alert rules and Grafana dashboards,
plus prometheus-adapter, which serves the queue metric to the serving autoscaler.

The alert rules come from llmrack.contracts.alerts, which also generates infra/monitoring/alerts.yml, the
file the Ansible monitoring role ships to racks (monitoring_shared_rules_file); the dashboards live in
infra/monitoring/dashboards/ for both paths (monitoring_shared_dashboards_dir).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components._args import check
from infra.components.batch import APP as BATCH_APP
from llmrack.contracts import alerts
from llmrack.contracts.metrics import NUM_REQUESTS_WAITING as QUEUE_METRIC
from llmrack.contracts.metrics import VARIANT_LABEL

MONITORING_DIR = Path(__file__).resolve().parent.parent / "monitoring"
DASHBOARDS_DIR = MONITORING_DIR / "dashboards"
RELEASE = "kube-prometheus-stack"  # fixed release name: the adapter addresses Prometheus by its service name

# Where each vendor's exporter runs when the accelerator stack installed it.
EXPORTERS = {
    "nvidia": {"job": "dcgm-exporter", "namespace": "gpu-operator", "service_label": "nvidia-dcgm-exporter"},
    "huawei": {"job": "npu-exporter", "namespace": "npu-exporter", "service_label": "npu-exporter"},
}


def load_rules() -> dict[str, Any]:
    return alerts.shared_rules()


def load_dashboards() -> dict[str, str]:
    """Dashboard file name -> JSON text (checked to be JSON, so a broken file fails at preview)."""
    return {p.name: json.dumps(json.loads(p.read_text())) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def scrape_configs(serving_namespace: str, vendor: str, batch: bool = False,
                   serving_tls: bool = False) -> list[dict[str, Any]]:
    """Plain Prometheus scrape configs: no ServiceMonitor CRDs, so no ordering between charts. With `batch`, the
    batch service too, under the job name the Ansible monitoring role gives it. With `serving_tls` (the spec's
    serving.tls) the serving pods are scraped over https."""
    exporter = EXPORTERS[vendor]
    # serving.tls: encrypted; the pods are scraped at their IPs, which their certificate (the front door's) does not
    # name, and its CA is a Secret of the serving namespace Prometheus cannot mount: the name is not verified here.
    serving_scheme: dict[str, Any] = ({"scheme": "https", "tls_config": {"insecure_skip_verify": True}}
                                      if serving_tls else {})
    return [
        {
            "job_name": "llmrack-serving",
            **serving_scheme,
            "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [serving_namespace]}}],
            "relabel_configs": [
                {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"], "regex": "llmrack-serving",
                 "action": "keep"},
                {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "http", "action": "keep"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"source_labels": ["__meta_kubernetes_pod_label_llmrack_io_track"], "target_label": "track"},
                # stable | canary under the name the rack's Prometheus uses too: `llmrack canary judge` reads either.
                {"source_labels": ["__meta_kubernetes_pod_label_llmrack_io_track"], "target_label": VARIANT_LABEL},
            ],
        },
        {
            "job_name": exporter["job"],
            "kubernetes_sd_configs": [{"role": "endpoints", "namespaces": {"names": [exporter["namespace"]]}}],
            "relabel_configs": [
                {"source_labels": ["__meta_kubernetes_service_label_app"], "regex": exporter["service_label"],
                 "action": "keep"},
                {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
            ],
        },
        # --- batch service (infra.components.batch): every pod behind its Service, as the role's `batch` job ---
        *([{
            "job_name": "batch",
            "kubernetes_sd_configs": [{"role": "endpoints", "namespaces": {"names": [serving_namespace]}}],
            "relabel_configs": [
                {"source_labels": ["__meta_kubernetes_service_label_app_kubernetes_io_name"], "regex": BATCH_APP,
                 "action": "keep"},
                {"source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": "http", "action": "keep"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
            ],
        }] if batch else []),
        # --- end batch service ---
    ]


def deployment_rules(namespace: str, max_queue: int) -> dict[str, Any]:
    """Rules that depend on this deployment's spec: the queue alert (llmrack.contracts.alerts)."""
    threshold = alerts.queue_alert_threshold(max_queue)
    return {"groups": [{"name": f"llmrack-{namespace}-queue", "rules": [{
        "alert": "LlmrackQueueNearLimit",
        "expr": f'sum by (pod) ({QUEUE_METRIC}{{namespace="{namespace}"}}) > {threshold}',
        "for": alerts.QUEUE_ALERT_FOR,
        "labels": {"severity": "critical"},
        "annotations": {"summary": f"a replica in {namespace} holds over {threshold} waiting requests "
                                   f"(max_queue {max_queue}); new requests are about to get 429"},
    }]}]}


@dataclass
class MonitoringArgs:
    serving_namespace: str
    vendor: str
    max_queue: int
    chart_version: str = "75.6.2"
    adapter_chart_version: str = "4.11.0"
    helm_repo: str = "https://prometheus-community.github.io/helm-charts"
    retention: str = "15d"
    namespace: str = "monitoring"
    custom_metrics: bool = True
    # The stack runs the batch service (llmrack:batch): scrape it.
    batch_service: bool = False
    # The spec's serving.tls: the serving pods' metrics over https.
    serving_tls: bool = False

    def validate(self) -> None:
        check(self.vendor in EXPORTERS, "MonitoringArgs.vendor", self.vendor, f"must be one of {', '.join(EXPORTERS)}")
        check(self.max_queue >= 1, "MonitoringArgs.max_queue", self.max_queue, "must be >= 1")


class Monitoring(pulumi.ComponentResource):
    prometheus_url: str

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args.validate()
        super().__init__("llmrack:monitoring:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ns = k8s.core.v1.Namespace(
            f"{name}-namespace",
            # node-exporter needs host PID/network namespaces and hostPath mounts.
            metadata={"name": args.namespace, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}},
            opts=child,
        )
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[ns])
        repo = k8s.helm.v3.RepositoryOptsArgs(repo=args.helm_repo)
        dashboard_label = "grafana_dashboard"
        values = {
            "prometheus": {"prometheusSpec": {
                "retention": args.retention,
                "additionalScrapeConfigs": scrape_configs(args.serving_namespace, args.vendor, args.batch_service,
                                                          args.serving_tls),
            }},
            "additionalPrometheusRulesMap": {
                "llmrack-shared": load_rules(),
                "llmrack-deployment": deployment_rules(args.serving_namespace, args.max_queue),
            },
            # The Grafana sidecar loads every ConfigMap with this label as a dashboard.
            "grafana": {"sidecar": {"dashboards": {"enabled": True, "label": dashboard_label, "labelValue": "1",
                                                   "searchNamespace": "ALL"}}},
        }
        stack = k8s.helm.v3.Release(
            f"{name}-kube-prometheus-stack",
            name=RELEASE,
            chart="kube-prometheus-stack",
            version=args.chart_version,
            namespace=ns.metadata["name"],
            repository_opts=repo,
            values=values,
            opts=in_ns,
        )
        for filename, text in load_dashboards().items():
            k8s.core.v1.ConfigMap(
                f"{name}-dashboard-{Path(filename).stem}",
                metadata={"namespace": ns.metadata["name"], "labels": {dashboard_label: "1",
                                                                       "app.kubernetes.io/part-of": "llmrack"}},
                data={filename: text},
                opts=in_ns,
            )
        self.prometheus_url = f"http://{RELEASE}-prometheus.{args.namespace}.svc"
        outputs: dict[str, Any] = {"release": stack.name, "prometheusUrl": self.prometheus_url}
        if args.custom_metrics:
            adapter = k8s.helm.v3.Release(
                f"{name}-prometheus-adapter",
                name="prometheus-adapter",
                chart="prometheus-adapter",
                version=args.adapter_chart_version,
                namespace=ns.metadata["name"],
                repository_opts=repo,
                values={
                    "prometheus": {"url": self.prometheus_url, "port": 9090},
                    # Expose the serving queue gauge as a per-pod custom metric for the HPA.
                    "rules": {"default": False, "custom": [{
                        "seriesQuery": f'{QUEUE_METRIC}{{namespace!="",pod!=""}}',
                        "resources": {"overrides": {"namespace": {"resource": "namespace"},
                                                    "pod": {"resource": "pod"}}},
                        "name": {"matches": QUEUE_METRIC, "as": QUEUE_METRIC},
                        "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
                    }]},
                },
                # The adapter queries Prometheus; install it after the stack that runs Prometheus.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[stack]),
            )
            outputs["adapterRelease"] = adapter.name
        self.register_outputs(outputs)
