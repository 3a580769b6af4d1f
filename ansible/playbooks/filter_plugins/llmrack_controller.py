"""Controller-side work of the serving role, done inside ansible-playbook instead of one `llmrack` process per node.

A node's play used to start the `llmrack` CLI twice on the controller (the scan gate, the model agent's build): a
Python start-up with llmrack's imports each, about 1 CPU-second per node per run, which is what a 1,000-node
converge pays a thousand times. These filters call the same library functions (llmrack.scan.gate, llmrack.models
.agent) in the process that templates the task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

from llmrack.models import agent
from llmrack.scan.gate import gate_decision


def scan_gate(digest: str, results_dir: str, allow_unscanned: bool) -> dict[str, Any]:
    """{ok, reason} of `llmrack image check-gate` for `digest`, from the scan results in `results_dir`."""
    if not digest:
        raise AnsibleFilterError("serving_image_digest is empty: pin the image by the digest `llmrack image build` "
                                 "printed")
    ok, reason = gate_decision(digest, Path(results_dir), bool(allow_unscanned))
    return {"ok": ok, "reason": reason}


def model_agent(out: str) -> str:
    """Path of the node-side model agent (`llmrack model agent --out`), written there. Its bytes are deterministic
    and each write is a rename into place, so nodes' plays writing it at once leave one whole file; the copy to each
    node then compares checksums as before."""
    return str(agent.build_zipapp(Path(out)))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"llmrack_scan_gate": scan_gate, "llmrack_model_agent": model_agent}
