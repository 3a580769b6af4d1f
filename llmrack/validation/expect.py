"""What a node SHOULD be: from the deployment spec, the catalog and the inventory, never from the node.

Inventory variables read (host or group vars; see docs/validation.md):
  groups nvidia_nodes / ascend_nodes / cpu_nodes   the node's kind
  llmrack_deployment          the deployment spec (parsed with llmrack.spec.parse_spec)
  llmrack_accelerator         catalog accelerator of this node (default: the spec's `accelerator`)
  llmrack_accelerator_count   devices expected on the node (default: the catalog's devices_per_node)
  llmrack_serving_url         the node's serving endpoint as reachable from the control machine
  serving_api_keys            API keys (list; Ansible Vault values are decrypted with the inventory's vault password)
  nvidia_driver_version       the pinned NVIDIA driver (also the Fabric Manager version on NVSwitch systems)
  ascend_driver_version, ascend_driver_firmware_version, ascend_driver_cann_version   the pinned Ascend stack
  common_sysctl               {key: value} the common role sets
  common_kernel_cmdline       ["param=value" | "flag"] the common role puts on the kernel command line
  (for these role variables the roles' defaults/main.yml apply under the inventory, when the inventory's
  ansible.cfg names a roles_path: see llmrack.validation.hosts.role_defaults)
  llmrack_validation_python   the node's Python with torch, for the probes (default: python3)
  llmrack_validation_probe_runner   host (that Python) | serving-image (inside the serving image, via ctr,
                              with serving_containerd_namespace, serving_container_name, containerd_snapshotter
                              and serving_runtime_args as the serving role uses them)
  llmrack_validation_services units that must be enabled and active (default: by node kind)
  llmrack_validation_acceptance  {threshold: value} over the spec's validation.acceptance
                              (llmrack.validation.acceptance)

The same pins can come from the spec's `validation.expect` (under the inventory) and from `--expect NAME=VALUE`
(over everything); each expectation remembers where it came from, so messages name the real source.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmrack import catalog
from llmrack.catalog import Accelerator, Vendor
from llmrack.contracts.inventory import (
    ACCELERATOR_COUNT_VAR,
    ACCELERATOR_VAR,
    API_KEYS_VAR,
    ASCEND_GROUP,
    CPU_GROUP,
    DEPLOYMENT_VAR,
    NVIDIA_GROUP,
    REPLICA_RANK_VAR,
    SERVING_DEVICE_VAR,
    SERVING_GROUP,
    SERVING_URL_VAR,
)
from llmrack.errors import UsageError
from llmrack.spec import DeploymentSpec, parse_spec
from llmrack.validation.acceptance import Acceptance
from llmrack.validation.evidence import ServingImageProbe


class NodeKind(StrEnum):
    nvidia = "nvidia"
    ascend = "ascend"
    cpu = "cpu"


KIND_GROUPS = {NVIDIA_GROUP: NodeKind.nvidia, ASCEND_GROUP: NodeKind.ascend, CPU_GROUP: NodeKind.cpu}
VENDOR_KIND = {Vendor.nvidia: NodeKind.nvidia, Vendor.huawei: NodeKind.ascend}


@dataclass(frozen=True)
class Expectations:
    host: str
    kind: NodeKind
    accelerator: Accelerator | None
    count: int
    spec: DeploymentSpec | None
    vars: dict[str, Any] = field(default_factory=dict)
    serving_url: str | None = None
    api_keys: tuple[str, ...] = ()
    python: str = "python3"
    probe_image: ServingImageProbe | None = None
    acceptance: Acceptance = field(default_factory=Acceptance)
    origin: dict[str, str] = field(default_factory=dict)  # variable or threshold -> where its value came from
    consulted: tuple[str, ...] = ()  # the sources of expectations this run had, most specific first

    @property
    def device_label(self) -> str:
        return {NodeKind.nvidia: "gpu", NodeKind.ascend: "npu"}.get(self.kind, "cpu")

    @property
    def replica_rank(self) -> int:
        """The node's rank in its replica (0: the leader, or a one-node replica)."""
        return int(self.vars.get(REPLICA_RANK_VAR) or 0)

    @property
    def serving_device(self) -> str:
        """What the serving layer computes on (the inventory's serving_device; the lab serves on cpu)."""
        default = {NodeKind.nvidia: "cuda", NodeKind.ascend: "npu"}.get(self.kind, "cpu")
        return str(self.vars.get(SERVING_DEVICE_VAR) or default)

    def var(self, name: str, default: Any = None) -> Any:
        return self.vars.get(name, default)

    def source(self, name: str) -> str:
        """Where the value of a variable or threshold came from ("--expect", "the spec's validation.expect", ...)."""
        return self.origin.get(name, "llmrack's default")

    def unset(self, name: str) -> str:
        """Why nothing pins `name`, naming the sources this run consulted and how to set it."""
        src = self.consulted
        said = (f"nothing pins {name}" if not src else f"{src[0]} does not pin {name}" if len(src) == 1 else
                f"neither {src[0]} nor {src[1]} pins {name}" if len(src) == 2 else
                f"none of {', '.join(src)} pins {name}")
        return f"{said}: set it with --expect {name}=VALUE, the spec's validation.expect or the inventory"

    def services(self) -> list[str]:
        explicit = self.vars.get("llmrack_validation_services")
        if explicit is not None:
            return [str(s) for s in explicit]
        # site.yml runs the containerd and monitoring roles on every node (node exporter for Prometheus).
        units = ["containerd", "prometheus-node-exporter"]
        if self.serving_url or SERVING_GROUP in self.vars.get("group_names", []):
            units.append("llmrack-serving")
        if self.kind is NodeKind.nvidia:
            units.append("nvidia-persistenced")
            if self.accelerator is not None and self.accelerator.nvswitch:
                units.append("nvidia-fabricmanager")
        return units


def _kind_from_groups(groups: list[str]) -> NodeKind | None:
    for group, kind in KIND_GROUPS.items():
        if group in groups:
            return kind
    return None


def build(
    host: str,
    hostvars: dict[str, Any],
    spec: DeploymentSpec | None = None,
    kind: NodeKind | None = None,
    where: str = "inventory",
    overrides: dict[str, Any] | None = None,
    origin: dict[str, str] | None = None,
) -> Expectations:
    """Expectations for one host from its (merged) inventory variables; `spec`/`kind` override them.

    Layers, most specific last: the spec's validation.expect, `hostvars` (from `where`; `origin` names other
    sources of some of them, e.g. role defaults), then `overrides` (--expect). Acceptance thresholds likewise:
    the spec's validation.acceptance, the inventory's llmrack_validation_acceptance, then `overrides`."""
    if spec is None and hostvars.get(DEPLOYMENT_VAR) is not None:
        spec = parse_spec(hostvars[DEPLOYMENT_VAR], f"{where}: {DEPLOYMENT_VAR} (host {host})")
    hostvars, sources, acceptance, consulted = _layers(spec, hostvars, where, overrides or {}, origin or {})
    if kind is None:
        kind = _kind_from_groups(list(hostvars.get("group_names", []))) or NodeKind.cpu
    acc: Accelerator | None = None
    if kind is not NodeKind.cpu:
        name = hostvars.get(ACCELERATOR_VAR) or (spec.accelerator if spec else None)
        if not name:
            raise UsageError(
                f"{where}: host {host} is an {kind} node but neither llmrack_accelerator nor a deployment "
                "spec (llmrack_deployment / --spec) names its accelerator"
            )
        acc = catalog.accelerator(str(name))
        if VENDOR_KIND[acc.vendor] is not kind:
            raise UsageError(
                f"{where}: host {host} is in the {kind} group but its accelerator {acc.name} is {acc.vendor}",
                hint=f"set the host variable llmrack_accelerator to a {kind} accelerator of the catalog for {host}",
            )
    count = int(hostvars.get(ACCELERATOR_COUNT_VAR) or (acc.devices_per_node if acc else 0))
    keys = hostvars.get(API_KEYS_VAR) or []
    if isinstance(keys, str):
        keys = [keys]
    probe_image = None
    if hostvars.get("llmrack_validation_probe_runner", "host") == "serving-image":
        runtime = hostvars.get("serving_runtime_args") or {}
        key = {NodeKind.nvidia: "cuda", NodeKind.ascend: "npu"}.get(kind, "cpu")
        probe_image = ServingImageProbe(
            namespace=str(hostvars.get("serving_containerd_namespace") or "llmrack"),
            container=str(hostvars.get("serving_container_name") or "llmrack-serving"),
            snapshotter=str(hostvars.get("containerd_snapshotter") or "overlayfs"),
            runtime_args=tuple(str(a) for a in runtime.get(key, [])),
        )
    return Expectations(
        host=host,
        kind=kind,
        accelerator=acc,
        count=count,
        spec=spec,
        vars=hostvars,
        # A headless worker of a multi-node replica serves no HTTP: its replica is probed on its leader.
        serving_url=hostvars.get(SERVING_URL_VAR) if not int(hostvars.get(REPLICA_RANK_VAR) or 0) else None,
        api_keys=tuple(str(k) for k in keys),
        python=str(hostvars.get("llmrack_validation_python") or "python3"),
        probe_image=probe_image,
        acceptance=acceptance,
        origin=sources,
        consulted=consulted,
    )


SPEC_EXPECT = "the spec's validation.expect"
SPEC_ACCEPTANCE = "the spec's validation.acceptance"
COMMAND_LINE = "--expect"


def _layers(spec: DeploymentSpec | None, hostvars: dict[str, Any], where: str, overrides: dict[str, Any],
            origin: dict[str, str]) -> tuple[dict[str, Any], dict[str, str], Acceptance, tuple[str, ...]]:
    """Merged variables, where each came from, the acceptance thresholds, and the sources consulted."""
    from_spec = dict(spec.validation.expect) if spec else {}
    sources = {k: SPEC_EXPECT for k in from_spec}
    sources |= {k: origin.get(k, where) for k in hostvars}
    thresholds = set(Acceptance.model_fields)
    plain = {k: v for k, v in overrides.items() if k not in thresholds}
    sources |= {k: COMMAND_LINE for k in plain}
    merged = {**from_spec, **hostvars, **plain}
    base = spec.validation.acceptance if spec else Acceptance()
    accept = {k: SPEC_ACCEPTANCE for k in base.model_fields_set}
    inv = hostvars.get("llmrack_validation_acceptance") or {}
    accept |= {k: f"{where}: llmrack_validation_acceptance" for k in inv}
    pinned = {k: v for k, v in overrides.items() if k in thresholds}
    accept |= {k: COMMAND_LINE for k in pinned}
    try:
        acceptance = Acceptance.model_validate({**base.model_dump(), **inv, **pinned})
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"invalid acceptance threshold ({bad})",
                         hint="see docs/validation.md#thresholds-and-their-sources") from None
    consulted = tuple(dict.fromkeys(
        ([COMMAND_LINE] if overrides else []) + ([where] if hostvars and where != "--local" else [])
        + sorted(set(origin.values())) + ([SPEC_EXPECT] if spec else [])))
    return merged, sources | accept, acceptance, consulted


def reveal_vault(value: Any, inventory: Path | None) -> Any:
    """Decrypt Ansible Vault values that `ansible-inventory --list` leaves as {"__ansible_vault": ...}, using the
    vault password file from ANSIBLE_VAULT_PASSWORD_FILE or the ansible.cfg next to the inventory."""
    if isinstance(value, list):
        return [reveal_vault(v, inventory) for v in value]
    if isinstance(value, dict) and "__ansible_vault" in value:
        return _decrypt(str(value["__ansible_vault"]), inventory)
    if isinstance(value, str) and value.startswith("$ANSIBLE_VAULT;"):
        return _decrypt(value, inventory)
    return value


def ansible_cfg(inventory: Path | None) -> Path | None:
    """The ansible.cfg that applies: $ANSIBLE_CONFIG, else one next to the inventory (or its parent directory),
    as a lab or rack checkout keeps it; None when there is none."""
    if os.environ.get("ANSIBLE_CONFIG"):
        return Path(os.environ["ANSIBLE_CONFIG"])
    if inventory is not None:
        base = inventory if inventory.is_dir() else inventory.parent
        for cfg in (base / "ansible.cfg", base.parent / "ansible.cfg"):
            if cfg.is_file():
                return cfg
    return None


def ansible_cfg_path(inventory: Path | None, key: str) -> Path | None:
    """A path-valued [defaults] key of that ansible.cfg (private_key_file, vault_password_file)."""
    cfg = ansible_cfg(inventory)
    if cfg is None or not cfg.is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(cfg)
    value = parser.get("defaults", key, fallback=None)
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else cfg.parent / path


def _vault_password_file(inventory: Path | None) -> Path | None:
    env = os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE")
    return Path(env) if env else ansible_cfg_path(inventory, "vault_password_file")


def _decrypt(ciphertext: str, inventory: Path | None) -> str:
    pw_file = _vault_password_file(inventory)
    if pw_file is None or not pw_file.is_file():
        raise UsageError(
            "serving_api_keys is vault-encrypted but no vault password file was found "
            "(set ANSIBLE_VAULT_PASSWORD_FILE or vault_password_file in the inventory's ansible.cfg)"
        )
    # Imported here: only inventories with vaulted keys need ansible's library, which is slow to import and
    # patches sys.intern process-wide (torch._dynamo imported afterwards in the same process then fails).
    from ansible.parsing.vault import VaultLib, VaultSecret  # type: ignore[import-untyped]  # noqa: PLC0415

    secret = VaultSecret(pw_file.read_bytes().strip())
    plain: bytes = VaultLib([("default", secret)]).decrypt(ciphertext.strip())
    return plain.decode()
