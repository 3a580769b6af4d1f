"""Connections to the nodes: testinfra hosts for an inventory (or host specs), with the inventory's ansible.cfg
applied the way ansible-playbook applies it, and the roles' defaults under the inventory's variables."""

from __future__ import annotations

import configparser
import os
from pathlib import Path
from typing import Any

import testinfra  # type: ignore[import-untyped]
import yaml
from testinfra.utils.ansible_runner import AnsibleRunner  # type: ignore[import-untyped]

from llmrack.errors import LlmrackError
from llmrack.validation import expect

# Roles whose public defaults are expectations (what a converged node has unless the inventory overrides it).
ROLES_WITH_EXPECTATIONS = ("common", "containerd", "nvidia_driver", "ascend_driver", "nccl_tuning", "serving")


def use_inventory_config(inventory: str | None) -> None:
    """testinfra and ansible-inventory read ssh_args, remote_user and the vault password file from
    $ANSIBLE_CONFIG (or ./ansible.cfg) only; a lab or rack checkout keeps its ansible.cfg next to the inventory."""
    cfg = expect.ansible_cfg(Path(inventory)) if inventory else None
    if cfg is not None:
        os.environ.setdefault("ANSIBLE_CONFIG", str(cfg))


def get_hosts(specs: list[str], inventory: str | None, **options: Any) -> list[Any]:
    use_inventory_config(inventory)
    if inventory and options.get("ssh_identity_file") is None:
        # testinfra ignores [defaults] private_key_file, which lab and rack configs use.
        key = expect.ansible_cfg_path(Path(inventory), "private_key_file")
        options["ssh_identity_file"] = str(key) if key else None
    try:
        hosts: list[Any] = testinfra.get_hosts(specs, ansible_inventory=inventory, **options)
    except (ValueError, RuntimeError, AssertionError) as exc:  # bad host spec; ansible-inventory failing
        raise LlmrackError(f"cannot resolve hosts {','.join(specs)!r}: {str(exc).strip()[-1000:]}") from None
    return sorted(hosts, key=lambda h: h.backend.get_pytest_id())


def role_defaults(inventory: str) -> dict[str, Any]:
    """defaults/main.yml of the roles found on the inventory's roles_path (ansible.cfg or $ANSIBLE_ROLES_PATH),
    without templated values (those need Ansible to evaluate). Empty when the roles are not found."""
    paths = os.environ.get("ANSIBLE_ROLES_PATH", "")
    cfg = expect.ansible_cfg(Path(inventory))
    if not paths and cfg is not None and cfg.is_file():
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(cfg)
        paths = parser.get("defaults", "roles_path", fallback="")
    out: dict[str, Any] = {}
    for base in filter(None, paths.split(os.pathsep)):
        for role in ROLES_WITH_EXPECTATIONS:
            defaults = (cfg.parent if cfg else Path()) / Path(base).expanduser() / role / "defaults" / "main.yml"
            if defaults.is_file():
                data = yaml.safe_load(defaults.read_text()) or {}
                out.update({k: v for k, v in data.items() if "{{" not in str(v)})
    return out


def host_vars(inventory: str, name: str) -> dict[str, Any]:
    """Role defaults, then the inventory's variables for the host (Ansible's precedence), keys decrypted."""
    return host_vars_with_origin(inventory, name)[0]


ROLE_DEFAULTS = "the roles' defaults"


def host_vars_with_origin(inventory: str, name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """As host_vars, with the variables that came from the roles' defaults (not the inventory) marked so."""
    use_inventory_config(inventory)
    try:
        hostvars = dict(AnsibleRunner.get_runner(inventory).get_variables(name))
    except AssertionError as exc:  # testinfra asserts ansible-inventory's exit status
        raise LlmrackError(f"ansible-inventory cannot read {inventory}: {str(exc).strip()[-500:]}") from None
    defaults = role_defaults(inventory)
    merged = {**defaults, **hostvars}
    if "serving_api_keys" in merged:
        merged["serving_api_keys"] = expect.reveal_vault(merged["serving_api_keys"], Path(inventory))
    return merged, {k: ROLE_DEFAULTS for k in defaults if k not in hostvars}
