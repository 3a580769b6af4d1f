"""Load llmrack's filter plugins once, in ansible-playbook's main process, before any task runs.

Ansible runs every task of every host in a worker process forked from the main process. The filters of
filter_plugins/ (and of roles/*/filter_plugins/) import llmrack (the spec, the planner, the serving command's
renderer, the model agent, the scan gate): about 0.3 CPU-s of imports. Left to the workers, each worker that
templates one of these filters (most serving, gateway and firewall tasks reach one through a role variable) paid
that import again, since a forked worker starts from the main process's modules and the main process had none of
them: a no-op converge cost the controller ~18 CPU-s per node. Imported here, every worker inherits them.
Nothing else changes: this callback needs no `callbacks_enabled` and prints only at -vvv (what it loaded).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import filter_loader

ANSIBLE_DIR = Path(__file__).resolve().parents[2]


def filter_plugin_dirs() -> list[Path]:
    return [ANSIBLE_DIR / "playbooks" / "filter_plugins", *sorted(ANSIBLE_DIR.glob("roles/*/filter_plugins"))]


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "llmrack_preload"
    CALLBACK_NEEDS_ENABLED = False

    def v2_playbook_on_start(self, playbook: Any) -> None:
        for directory in filter_plugin_dirs():
            # What Ansible does itself when it loads a role: the role's plugin folders join the loader's paths.
            filter_loader.add_directory(str(directory))
            for plugin in sorted(directory.glob("*.py")):
                filter_loader.get(plugin.stem)
        imported = sorted(name for name in sys.modules if name.startswith("llmrack."))
        self._display.vvv(f"llmrack filters preloaded: {len(imported)} llmrack modules: {' '.join(imported)}")
