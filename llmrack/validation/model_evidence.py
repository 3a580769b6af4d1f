"""Evidence of the model version a node serves: its release history (llmrack.contracts.model_manifest) and the
model agent's verification of that version's files, sizes at level quick, every byte hashed at standard/full.
Read by llmrack.validation.checks.model."""

from __future__ import annotations

import base64
import shlex

from llmrack.contracts.model_manifest import NODE_AGENT, NODE_RELEASES, NODE_STORE

ITEM = "model"

# Runs on the node with its python3; prints one JSON object. Exit 127 when the node keeps no release history
# (the serving role never pulled a model version there).
_SCRIPT = f"""
import json, os, subprocess, sys
if not os.path.exists({NODE_RELEASES!r}):
    sys.exit(127)
releases = json.load(open({NODE_RELEASES!r}))
model = (releases[:1] or [{{}}])[0].get("model", "")
out = {{"releases": releases, "model": model}}
if model:
    hexd = model.split(":", 1)[-1]
    unit = "/etc/systemd/system/llmrack-serving.service"
    out["unit_mounts_it"] = os.path.exists(unit) and os.path.join({NODE_STORE!r}, hexd) in open(unit).read()
    p = subprocess.run([sys.executable, {NODE_AGENT!r}, "verify", "--dir", os.path.join({NODE_STORE!r}, hexd),
                        "--version", model, "--level", sys.argv[1]], capture_output=True, text=True)
    out["verify"] = {{"rc": p.returncode, "out": p.stdout.strip(), "err": p.stderr.strip()}}
print(json.dumps(out))
"""


def command(level: str, python: str) -> str:
    """The shell command that collects the item (quick: sizes; standard and full: sha256 of every byte)."""
    verify = "quick" if level == "quick" else "standard"
    src = base64.b64encode(_SCRIPT.encode()).decode()
    return f"echo {src} | base64 -d | {python} - {shlex.quote(verify)}"


def collector_line(level: str, python: str) -> str:
    """The collector script's line for this item (same shape as every other item's)."""
    return f"( {command(level, python)} ) >{ITEM}.out 2>{ITEM}.err </dev/null; echo $? >{ITEM}.rc"
