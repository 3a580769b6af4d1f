"""The stack's configuration: the deployment spec plus what belongs to Pulumi alone, read and checked once.

`load(pulumi.Config("llmrack"))` reads every `llmrack:*` key of the stack file, parses the deployment
spec with llmrack.spec.parse_spec (the one parser of the spec), derives the sizing with llmrack.plan
and checks the Pulumi-only keys. Every mistake is raised here, naming the key, the value and what is
allowed, before the program registers a single resource.
"""

from __future__ import annotations

import ipaddress
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import pulumi
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from infra.instance_types import AWS_DEFAULT_FOR_ACCELERATOR, AWS_INSTANCE_TYPES
from infra.rules import NAMESPACE, StackConfigError, canary_replicas, parse_image
from llmrack import catalog
from llmrack.catalog import Accelerator, Vendor
from llmrack.contracts.scan_results import DEFAULT_RESULTS_DIR
from llmrack.errors import LlmrackError
from llmrack.input_errors import describe_all
from llmrack.plan import Plan, plan_or_raise
from llmrack.scan import gate_decision
from llmrack.spec import DNS_LABEL, DeploymentSpec, parse_spec

# Oldest Kubernetes the objects are written for: autoscaling/v2 and policy/v1 are GA there.
MIN_KUBERNETES_MINOR = 26


def check_gate(ref: str, key: str, results_dir: Path, allow_unscanned: bool) -> None:
    """Refuse an image whose digest failed the vulnerability gate (or was never scanned where that matters)."""
    _, digest = parse_image(ref, key)
    ok, reason = gate_decision(digest, results_dir, allow_unscanned)
    if not ok:
        raise StackConfigError(f"{key}: {ref}: scan gate: {reason} (results in {results_dir})")
    if reason.startswith("WARNING"):  # llmrack.scan words an allowed unscanned image so
        pulumi.log.warn(f"{key}: {reason}")


class _Keys(BaseModel):
    # Pulumi config keys are camelCase by convention; Python reads them snake_case.
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


# --- fleets -------------------------------------------------------------------------------------
class AwsFleetConfig(_Keys):
    kind: Literal["aws"]
    region: str
    ami: str = Field(description="AMI id; a Deep Learning AMI or the rack's base image that Ansible provisions")
    subnet_id: str
    security_group_ids: list[str] = Field(min_length=1)
    instance_type: str | None = Field(None, description="default: the first type in infra/instance_types.py")
    key_name: str | None = None
    availability_zone: str | None = None
    root_volume_gib: int = Field(500, ge=50, le=16384)
    ssh_user: str = "ubuntu"

    @field_validator("instance_type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is not None and value not in AWS_INSTANCE_TYPES:
            raise ValueError(f"must be one of {', '.join(AWS_INSTANCE_TYPES)}")
        return value


class HuaweiCloudFleetConfig(_Keys):
    kind: Literal["huaweicloud"]
    region: str
    # Ascend flavors are sold per region and per contract (ECS or BMS); the stack names the one it was given.
    flavor: str = Field(min_length=1)
    image_id: str
    network_id: str
    security_group_ids: list[str] = Field(min_length=1)
    availability_zone: str
    key_pair: str | None = None
    system_disk_gib: int = Field(200, ge=40, le=1024)
    ssh_user: str = "root"


class StaticHost(_Keys):
    name: str = Field(pattern=DNS_LABEL)
    address: str
    ssh_user: str | None = Field(None, description="default: the fleet's sshUser")
    ssh_port: int = Field(22, ge=1, le=65535)


class StaticFleetConfig(_Keys):
    kind: Literal["static"]
    hosts: list[StaticHost] = Field(min_length=1)
    ssh_user: str = Field("root", description="for every host that does not name its own")


class NoFleetConfig(_Keys):
    kind: Literal["none"]


FleetConfig = Annotated[
    AwsFleetConfig | HuaweiCloudFleetConfig | StaticFleetConfig | NoFleetConfig, Field(discriminator="kind")
]


# --- Kubernetes -----------------------------------------------------------------------------------
class KubernetesConfig(_Keys):
    version: str = Field("1.31", description="target Kubernetes minor version the objects are checked against")
    # ambient: the operator's KUBECONFIG; config: the secret `llmrack:kubeconfig`; stack: a StackReference.
    source: Literal["ambient", "config", "stack"] = "ambient"
    stack: str | None = Field(None, description="org/project/stack whose output holds the kubeconfig")
    output: str = "kubeconfig"
    context: str | None = None
    label_nodes: list[str] = Field([], description="existing nodes to label for the accelerator")

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        match = re.fullmatch(r"1\.(\d+)", value)
        if match is None or int(match[1]) < MIN_KUBERNETES_MINOR:
            raise ValueError(f"must be a minor version like '1.31', at least 1.{MIN_KUBERNETES_MINOR}")
        return value

    @model_validator(mode="after")
    def _stack_named(self) -> KubernetesConfig:
        if self.source == "stack" and not self.stack:
            raise ValueError("source 'stack' needs `stack` (org/project/stack of the cluster's stack)")
        return self


class AcceleratorStackConfig(_Keys):
    gpu_operator_version: str = "v25.3.0"
    # false where Ansible's nvidia_driver role installed the driver: the operator must not fight it.
    gpu_operator_driver: bool = True
    nvidia_helm_repo: str = "https://helm.ngc.nvidia.com/nvidia"
    ascend_device_plugin_image: str | None = None
    # Huawei's npu-exporter (digest-pinned); without it the NPU alerts and dashboard panels stay empty.
    npu_exporter_image: str | None = None


# --- serving ----------------------------------------------------------------------------------------
class ModelVolumeConfig(_Keys):
    kind: Literal["pvc", "hostPath"]
    path: str | None = Field(None, description="hostPath: node directory; default: model.source when absolute")
    claim_name: str | None = Field(None, description="pvc: an existing claim to mount instead of creating one")
    storage_class: str | None = None
    size_gib: int = Field(200, ge=1, le=65536)


class ServiceConfig(_Keys):
    type: Literal["ClusterIP", "LoadBalancer"] = "ClusterIP"
    allowlist: list[str] = Field([], description="CIDRs allowed to reach a LoadBalancer")

    @field_validator("allowlist")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR (e.g. 10.0.0.0/8)") from None
        return value

    @model_validator(mode="after")
    def _allowlisted(self) -> ServiceConfig:
        if self.type == "LoadBalancer" and not self.allowlist:
            raise ValueError("type LoadBalancer needs `allowlist` (CIDRs); a public endpoint open to all is refused")
        return self


class AutoscalingConfig(_Keys):
    enabled: bool = False
    max_replicas: int | None = Field(None, ge=1)
    # Waiting requests per pod the autoscaler aims for; above it a replica is added.
    target_waiting_per_pod: float = Field(4, gt=0)


class ServingConfig(_Keys):
    namespace: str = Field("llmrack", pattern=DNS_LABEL)
    model_volume: ModelVolumeConfig = ModelVolumeConfig(kind="pvc")
    service: ServiceConfig = ServiceConfig()
    autoscaling: AutoscalingConfig = AutoscalingConfig()
    startup_timeout_s: int = Field(1800, ge=60, le=14400, description="time a replica may take to load the model")
    run_as_user: int = Field(10001, ge=1)


class CanaryConfig(_Keys):
    image: str
    weight: int = Field(ge=1, le=99, description="percent of traffic the canary serves")


class MonitoringConfig(_Keys):
    enabled: bool = True
    chart_version: str = "75.6.2"
    adapter_chart_version: str = "4.11.0"
    helm_repo: str = "https://prometheus-community.github.io/helm-charts"
    retention: str = Field("15d", pattern=r"^\d+[dhw]$")


_SECTIONS: dict[str, type[BaseModel]] = {
    "kubernetes": KubernetesConfig,
    "acceleratorStack": AcceleratorStackConfig,
    "serving": ServingConfig,
    "monitoring": MonitoringConfig,
}


class StackConfig(BaseModel):
    """Everything the program needs, checked; Outputs only for secrets."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    stack: str
    project_root: Path
    spec: DeploymentSpec
    plan: Plan
    accelerator: Accelerator
    image: str
    scan_results_dir: Path
    api_keys: Any  # pulumi.Output[list[str]], secret
    keys_store: Any = None  # pulumi.Output[str] | None, secret: the key store of `llmrack keys` (hashes)
    kubeconfig: Any  # pulumi.Output[str] | None, secret
    fleet: FleetConfig
    kubernetes: KubernetesConfig
    accelerator_stack: AcceleratorStackConfig
    serving: ServingConfig
    canary: CanaryConfig | None
    monitoring: MonitoringConfig

    @property
    def replica_capacity(self) -> int:
        """Replicas the spec's nodes can hold: the ceiling for the autoscaler."""
        per_node = self.accelerator.devices_per_node // self.plan.tensor_parallel
        return max(1, self.spec.nodes * per_node // self.plan.pipeline_parallel)

    @property
    def fleet_nodes(self) -> int:
        """Nodes a fleet provisions: the plan's, or enough for the autoscaler's maximum when it is on."""
        scaling = self.serving.autoscaling
        if not scaling.enabled:
            return self.plan.nodes
        top = scaling.max_replicas or self.replica_capacity
        return max(self.plan.nodes, math.ceil(top * self.plan.count_per_replica / self.accelerator.devices_per_node))


# ---------------------------------------------------------------------------------------------------
def _section(model: type[BaseModel], key: str, value: Any) -> Any:
    """Check one section; a mistake is worded as in the spec (llmrack.input_errors: did-you-mean for a typo)."""
    try:
        return model.model_validate(value if value is not None else {})
    except ValidationError as exc:
        raise StackConfigError("; ".join(describe_all(exc, model, key))) from None


def find_project_root(start: Path) -> Path:
    """The directory of Pulumi.yaml: `pulumi up` runs the program inside `main` (infra/), paths are the root's."""
    for candidate in (start, *start.parents):
        if (candidate / "Pulumi.yaml").is_file():
            return candidate
    return start


def _check_plan(spec: DeploymentSpec, where: str) -> tuple[Plan, Accelerator]:
    acc = catalog.accelerator(spec.accelerator)
    try:
        result = plan_or_raise(spec.plan_request(), acc)
    except LlmrackError as exc:
        tp = spec.serving.tensor_parallel
        key = f"{where}.serving.tensor_parallel" if tp != "auto" else f"{where}.accelerator"
        raise StackConfigError(f"{key}: {exc}") from None
    return result, acc


def _secret_list(config: pulumi.Config, key: str) -> list[str]:
    full = f"{NAMESPACE}:{key}"
    value = config.get_object(key)
    hint = f"set it with: pulumi config set --secret {full} '[\"<key>\"]'"
    if value is None:
        raise StackConfigError(f"{full}: required secret is missing; {hint}")
    if not pulumi.runtime.is_config_secret(full):
        raise StackConfigError(f"{full}: must be a Pulumi secret, not plain text in the stack file; {hint}")
    if not (isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value)):
        raise StackConfigError(f"{full}: must be a non-empty list of non-empty strings; {hint}")
    return value


def load(config: pulumi.Config, stack: str, cwd: Path | None = None) -> StackConfig:
    """Read and check every key; raises StackConfigError naming the first bad key."""
    root = find_project_root(cwd or Path.cwd())
    where = f"{NAMESPACE}:deployment"
    raw_spec = config.get_object("deployment")
    if raw_spec is None:
        raise StackConfigError(f"{where}: required key is missing (the deployment spec, see docs/pulumi.md)")
    try:
        spec = parse_spec(raw_spec, f"{where} (Pulumi.{stack}.yaml)", root)
    except LlmrackError as exc:
        raise StackConfigError(str(exc)) from None
    result, acc = _check_plan(spec, where)

    image_key = f"{NAMESPACE}:image"
    image = config.get("image")
    if image is None:
        raise StackConfigError(f"{image_key}: required key is missing (REPOSITORY@sha256:<digest>)")
    parse_image(image, image_key)

    sections = {name: _section(model, f"{NAMESPACE}:{name}", config.get_object(name))
                for name, model in _SECTIONS.items()}
    fleet_key = f"{NAMESPACE}:fleet"
    fleet_raw = config.get_object("fleet") or {"kind": "none"}
    fleet = _fleet(fleet_raw, fleet_key)

    canary_raw = config.get_object("canary")
    canary = _section(CanaryConfig, f"{NAMESPACE}:canary", canary_raw) if canary_raw is not None else None
    if canary is not None:
        parse_image(canary.image, f"{NAMESPACE}:canary.image")

    kube: KubernetesConfig = sections["kubernetes"]
    kubeconfig = None
    if kube.source == "config":
        if config.get("kubeconfig") is None:
            raise StackConfigError(
                f"{NAMESPACE}:kubeconfig: required secret is missing for kubernetes.source 'config'; "
                f"set it with: pulumi config set --secret {NAMESPACE}:kubeconfig < kubeconfig.yaml"
            )
        kubeconfig = config.require_secret("kubeconfig")

    api_keys = pulumi.Output.secret(_secret_list(config, "apiKeys"))
    scan_dir = Path(config.get("scanResultsDir") or DEFAULT_RESULTS_DIR)

    out = StackConfig(
        stack=stack,
        project_root=root,
        spec=spec,
        plan=result,
        accelerator=acc,
        image=image,
        scan_results_dir=scan_dir if scan_dir.is_absolute() else root / scan_dir,
        api_keys=api_keys,
        keys_store=config.get_secret("keysStore"),
        kubeconfig=kubeconfig,
        fleet=fleet,
        kubernetes=kube,
        accelerator_stack=sections["acceleratorStack"],
        serving=sections["serving"],
        canary=canary,
        monitoring=sections["monitoring"],
    )
    _cross_checks(out)
    check_gate(image, image_key, out.scan_results_dir, spec.unscanned_images_allowed)
    if canary is not None:
        check_gate(canary.image, f"{NAMESPACE}:canary.image", out.scan_results_dir, spec.unscanned_images_allowed)
    return out


def _fleet(raw: Any, key: str) -> Any:
    kind = raw.get("kind") if isinstance(raw, dict) else None
    models: dict[str, type[BaseModel]] = {
        "aws": AwsFleetConfig, "huaweicloud": HuaweiCloudFleetConfig,
        "static": StaticFleetConfig, "none": NoFleetConfig,
    }
    if kind not in models:
        raise StackConfigError(f"{key}.kind: {kind!r} is not valid: must be one of {', '.join(models)}")
    return _section(models[kind], key, raw)


def _cross_checks(cfg: StackConfig) -> None:
    """Rules that join the spec, the plan, the catalog and the Pulumi keys."""
    acc, plan, spec = cfg.accelerator, cfg.plan, cfg.spec
    fleet = cfg.fleet
    if isinstance(fleet, AwsFleetConfig):
        if acc.vendor is not Vendor.nvidia:
            raise StackConfigError(
                f"{NAMESPACE}:fleet.kind: 'aws' has no {acc.name} instances; use huaweicloud or static for Ascend"
            )
        itype = fleet.instance_type or AWS_DEFAULT_FOR_ACCELERATOR.get(acc.name)
        if itype is None:
            raise StackConfigError(
                f"{NAMESPACE}:fleet.instanceType: no AWS instance type in infra/instance_types.py carries "
                f"{acc.name}; known: {', '.join(f'{n} ({t.accelerator})' for n, t in AWS_INSTANCE_TYPES.items())}"
            )
        if AWS_INSTANCE_TYPES[itype].accelerator != acc.name:
            raise StackConfigError(
                f"{NAMESPACE}:fleet.instanceType: {itype!r} carries {AWS_INSTANCE_TYPES[itype].accelerator}, "
                f"but the deployment's accelerator is {acc.name}"
            )
    if isinstance(fleet, HuaweiCloudFleetConfig) and acc.vendor is not Vendor.huawei:
        raise StackConfigError(f"{NAMESPACE}:fleet.kind: 'huaweicloud' fleets here are Ascend fleets, not {acc.name}")
    if isinstance(fleet, StaticFleetConfig) and len(fleet.hosts) < cfg.fleet_nodes:
        raise StackConfigError(
            f"{NAMESPACE}:fleet.hosts: the plan needs {cfg.fleet_nodes} nodes, {len(fleet.hosts)} hosts are listed"
        )
    if acc.vendor is Vendor.huawei:
        image = cfg.accelerator_stack.ascend_device_plugin_image
        if image is None:
            raise StackConfigError(
                f"{NAMESPACE}:acceleratorStack.ascendDevicePluginImage: required for {acc.name} "
                "(Huawei's Ascend device plugin image, pinned by digest, from your mirror)"
            )
        parse_image(image, f"{NAMESPACE}:acceleratorStack.ascendDevicePluginImage")
        exporter = cfg.accelerator_stack.npu_exporter_image
        if exporter is not None:
            parse_image(exporter, f"{NAMESPACE}:acceleratorStack.npuExporterImage")
    scaling = cfg.serving.autoscaling
    if scaling.enabled:
        ceiling = cfg.replica_capacity
        top = scaling.max_replicas or ceiling
        if top > ceiling or top < spec.serving.replicas:
            raise StackConfigError(
                f"{NAMESPACE}:serving.autoscaling.maxReplicas: {top} is not valid: must be between the spec's "
                f"replicas ({spec.serving.replicas}) and {ceiling}, what {spec.nodes} node(s) of "
                f"{acc.devices_per_node} x {acc.name} hold at tensor parallel {plan.tensor_parallel}"
            )
    if cfg.canary is not None:
        canary_replicas(spec.serving.replicas, cfg.canary.weight)
    volume = cfg.serving.model_volume
    if volume.kind == "hostPath" and volume.path is None and not spec.model.source.startswith("/"):
        raise StackConfigError(
            f"{NAMESPACE}:serving.modelVolume.path: required for hostPath when model.source is not an absolute path"
        )
