"""The deployment spec: one description of a deployment that every part of llmrack reads.

It lives where each tool expects it (a YAML file, Pulumi stack config `llmrack:deployment`,
Ansible group_vars `llmrack_deployment`) and is always parsed here, so a mistake is reported the
same way everywhere, naming the key, the bad value and what is allowed, before anything is touched.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from llmrack import catalog
from llmrack.arch import ModelArch, load_config_file
from llmrack.contracts.serving_command import (
    Engine,
    Executor,
    ServingCommandError,
    choose_engine,
    layout_problems,
    node_kind_of_vendor,
)
from llmrack.contracts.serving_defaults import MAX_MODEL_LEN, MAX_NUM_SEQS, MAX_QUEUE, PORT
from llmrack.dtypes import KVCacheDType, WeightsDType
from llmrack.errors import NotFoundError, UsageError
from llmrack.input_errors import describe_all
from llmrack.models.errors import ModelError
from llmrack.models.sources import parse_source
from llmrack.observe.canary import CanaryThresholds
from llmrack.plan import (
    DEFAULT_AMORTIZATION_YEARS,
    DEFAULT_HEADROOM,
    DEFAULT_MAX_NODES,
    DEFAULT_MEMORY_UTILIZATION,
    PlanRequest,
)
from llmrack.validation.acceptance import ValidationSpec

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class Environment(StrEnum):
    lab = "lab"
    dev = "dev"
    staging = "staging"
    prod = "prod"


class SpecError(UsageError):
    """A spec that does not validate; one line per problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    config: Path | None = Field(None, description="path to a Hugging Face config.json, relative to the spec file")
    name: str | None = Field(None, description="catalog model name (llmrack catalog models), or a label with config")
    source: str = Field(description="where the weights live: oci:// or oci+http:// (a registry), an http(s) "
                        "mirror or a directory (docs/models.md)")
    version: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$", description="model version to serve: "
                                "the sha256 of its llmrack-model.json (llmrack model push prints it)")
    served_name: str | None = Field(None, description="model name the API answers to; default: name")
    weights_dtype: WeightsDType = WeightsDType.bf16
    kv_cache_dtype: KVCacheDType = KVCacheDType.auto

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        try:
            parse_source(value)
        except ModelError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("name")
    @classmethod
    def _catalog_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        # With a config.json the name is only a label; without one it must be a catalog model.
        if value is not None and info.data.get("config") is None and value not in catalog.models():
            raise ValueError(str(NotFoundError.for_name("model", value, catalog.models())))
        return value

    @model_validator(mode="after")
    def _name_or_config(self) -> ModelSpec:
        if self.config is None and self.name is None:
            raise ValueError("give model.name (a catalog model) or model.config (a config.json path)")
        return self

    @property
    def label(self) -> str:
        return self.served_name or self.name or (self.config.parent.name if self.config else "model")


class ServingSpec(_Strict):
    max_model_len: int = MAX_MODEL_LEN.field(required=True)
    max_num_seqs: int = MAX_NUM_SEQS.field(required=True)
    replicas: int = Field(1, ge=1, le=1024)
    tensor_parallel: Literal["auto"] | int = Field("auto", description="'auto' or a degree from 1 to 64")
    memory_utilization: float = Field(DEFAULT_MEMORY_UTILIZATION, ge=0.1, le=0.99)
    max_queue: int = MAX_QUEUE.field()
    port: int = PORT.field()
    tls: bool = Field(False, description="the serving port speaks TLS: each node gets a certificate from the rack "
                      "CA and the gateways, Prometheus and the node's own checks verify it (default: plain HTTP, "
                      "which the firewall opens only to the gateways and Prometheus)")
    pipeline_parallel: Literal["auto"] | int = Field("auto", description="'auto' or a number of pipeline stages "
                                                     "from 1 to 64, one node each: a replica spans that many nodes")
    expert_parallel: bool = Field(False, description="vLLM's expert parallelism for MoE models "
                                  "(--enable-expert-parallel); accelerator nodes only")
    executor: Executor = Field(Executor.mp, description="how a replica of several nodes starts: mp (vLLM's own "
                               "launcher, nothing more in the image) or ray (the image must carry Ray)")
    engine: Engine = Field(Engine.auto, description="llmrack (one device, one node), vllm (TP/PP, replicas across "
                           "nodes), or auto: the serving command module's choice (vllm on accelerator nodes; on CPU "
                           "nodes llmrack when the plan fits one device)")

    @field_validator("tensor_parallel", "pipeline_parallel", mode="before")
    @classmethod
    def _tp(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64):
            return value
        raise ValueError("must be 'auto' or an integer from 1 to 64")


class ImagesSpec(_Strict):
    allow_unscanned: bool | None = Field(
        None, description="run images that no Clair scan has passed; default: only in lab and dev"
    )


class PlanningSpec(_Strict):
    headroom: float = Field(DEFAULT_HEADROOM, ge=0, le=0.9, description="share of memory and of the throughput "
                            "target kept unused (the DeepSeek private-deployment selection guide's 20 %)")
    target_tokens_per_s: float | None = Field(None, gt=0, description="decode throughput to deliver, all replicas")


class CostsSpec(_Strict):
    accelerator_price_usd: float | None = Field(None, gt=0, description="overrides the catalog list price")
    amortization_years: float = Field(DEFAULT_AMORTIZATION_YEARS, gt=0, le=10)


class DeploymentSpec(_Strict):
    name: str = Field(pattern=DNS_LABEL, description="DNS label: lower case letters, digits and '-'")
    environment: Environment
    model: ModelSpec
    accelerator: str = Field(description="catalog accelerator name (llmrack catalog accelerators)")
    nodes: int = Field(DEFAULT_MAX_NODES, ge=1, le=4096, description="nodes available to this deployment")
    serving: ServingSpec
    images: ImagesSpec = ImagesSpec()
    costs: CostsSpec = CostsSpec()
    planning: PlanningSpec = PlanningSpec()
    validation: ValidationSpec = ValidationSpec()
    canary: CanaryThresholds = CanaryThresholds()

    @field_validator("accelerator")
    @classmethod
    def _known_accelerator(cls, value: str) -> str:
        if value not in catalog.accelerators():
            raise ValueError(str(NotFoundError.for_name("accelerator", value, catalog.accelerators())))
        return value

    @model_validator(mode="after")
    def _prod_never_runs_unscanned(self) -> DeploymentSpec:
        # Production runs only images that passed the Clair gate; no spec can opt out of that.
        if self.environment is Environment.prod and self.images.allow_unscanned:
            raise ValueError(
                "images.allow_unscanned: true is not allowed in environment prod; scan the image "
                "(llmrack scan) or deploy to lab, dev or staging"
            )
        return self

    @property
    def unscanned_images_allowed(self) -> bool:
        if self.images.allow_unscanned is not None:
            return self.images.allow_unscanned
        return self.environment in (Environment.lab, Environment.dev)

    def arch(self) -> ModelArch:
        if self.model.config is not None:
            return load_config_file(self.model.config)
        assert self.model.name is not None
        return catalog.model(self.model.name).arch

    def plan_request(self) -> PlanRequest:
        prices = {}
        if self.costs.accelerator_price_usd is not None:
            prices[self.accelerator] = self.costs.accelerator_price_usd
        tp = self.serving.tensor_parallel
        pp = self.serving.pipeline_parallel
        return PlanRequest(
            model_name=self.model.label,
            arch=self.arch(),
            context=self.serving.max_model_len,
            concurrency=self.serving.max_num_seqs,
            weights_dtype=self.model.weights_dtype,
            kv_cache_dtype=self.model.kv_cache_dtype,
            replicas=self.serving.replicas,
            tensor_parallel=None if tp == "auto" else tp,
            pipeline_parallel=None if pp == "auto" else pp,
            memory_utilization=self.serving.memory_utilization,
            max_nodes=self.nodes,
            amortization_years=self.costs.amortization_years,
            prices_usd=prices,
            headroom=self.planning.headroom,
            target_tokens_per_s=self.planning.target_tokens_per_s,
        )


# ---------------------------------------------------------------------------------------------
def parse_spec(data: Any, where: str, base_dir: Path | None = None) -> DeploymentSpec:
    """Validate a spec given as a mapping; `where` names its origin in error messages."""
    if not isinstance(data, dict):
        raise SpecError(f"{where}: a deployment spec must be a mapping of keys, got {type(data).__name__}")
    try:
        spec = DeploymentSpec.model_validate(data)
    except ValidationError as exc:
        lines = describe_all(exc, DeploymentSpec)
        raise SpecError(f"{where}: invalid deployment spec:\n  " + "\n  ".join(lines)) from None
    if spec.model.config is not None and base_dir is not None and not spec.model.config.is_absolute():
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"config": base_dir / spec.model.config})})
    _check_against_model(spec, where)
    return spec


def _check_against_model(spec: DeploymentSpec, where: str) -> None:
    """Rules that need the model's architecture and the accelerator: checked here so that every tool
    (spec check, Pulumi, Ansible) refuses the same spec with the same key named."""
    try:
        arch = spec.arch()
    except UsageError as exc:
        raise SpecError(f"{where}: invalid deployment spec:\n  model.config: {exc}") from None
    problems = _layout_problems(spec, arch)
    if problems:
        raise SpecError(f"{where}: invalid deployment spec:\n  " + "\n  ".join(problems))


def _layout_problems(spec: DeploymentSpec, arch: ModelArch) -> list[str]:
    serving = spec.serving
    tp = 1 if serving.tensor_parallel == "auto" else serving.tensor_parallel
    pp = 1 if serving.pipeline_parallel == "auto" else serving.pipeline_parallel
    problems = []
    try:
        choose_engine(serving.engine, tp, pp)
    except ServingCommandError as exc:
        problems.append(str(exc))
    if serving.tensor_parallel != "auto" and (problem := arch.tensor_parallel_problem(tp)):
        problems.append(f"serving.tensor_parallel: {tp} is not valid: {problem} of {spec.model.label}")
    per_node = catalog.accelerator(spec.accelerator).devices_per_node
    if tp > per_node:
        problems.append(
            f"serving.tensor_parallel: {tp} is not valid: tensor parallelism stays within one node and a "
            f"{spec.accelerator} node has {per_node} devices (pipeline stages span nodes)"
        )
    if pp > arch.num_layers:
        problems.append(f"serving.pipeline_parallel: {pp} stages for {arch.num_layers} layers of {spec.model.label}: "
                        f"use at most {arch.num_layers}")
    if pp > 1 and pp * serving.replicas > spec.nodes:
        problems.append(
            f"serving.pipeline_parallel: {pp} stages x serving.replicas {serving.replicas} need "
            f"{pp * serving.replicas} nodes (one stage per node), and nodes is {spec.nodes}: raise nodes or lower "
            "serving.pipeline_parallel"
        )
    if serving.expert_parallel and arch.moe is None:
        problems.append(f"serving.expert_parallel: true, but {spec.model.label} has no experts: set it to false")
    # Whether vLLM can run the layout on the spec's own accelerator (the renderer repeats it per node kind).
    kind = node_kind_of_vendor(catalog.accelerator(spec.accelerator).vendor.value)
    problems += [p for p in layout_problems(tp, pp, pp, kind, serving.expert_parallel) if p not in problems]
    return problems


def load_spec(path: Path) -> DeploymentSpec:
    """Read and validate a spec file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read spec {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    return parse_spec(data, str(path), path.parent)
