"""Runs ansible-playbook against the lab, shows which task is running, and reads the play recap."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from llmrack.errors import LlmrackError

RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$")
TASK = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?P<name>.*)\]")


def ansible_bin() -> Path:
    """The ansible installed next to this Python (the project venv), else the one on PATH."""
    here = Path(sys.executable).parent
    if (here / "ansible-playbook").exists():
        return here
    found = shutil.which("ansible-playbook")
    if found is None:
        raise LlmrackError("ansible-playbook not found: install the dev extra (pip install -e '.[dev]')")
    return Path(found).parent


def parse_recap(lines: list[str]) -> dict[str, dict[str, int]]:
    recap: dict[str, dict[str, int]] = {}
    in_recap = False
    for line in lines:
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        if in_recap:
            m = RECAP.match(line.strip())
            if m:
                recap[m["host"]] = {k: int(v) for k, v in (p.split("=") for p in m["counts"].split())}
    return recap


def run_playbook(
    playbook: Path, ansible_cfg: Path, log_dir: Path, extra_args: list[str] | None = None,
    on_task: Callable[[str], None] = lambda _t: None,
) -> tuple[int, dict[str, dict[str, int]], Path, float]:
    """Run one playbook; returns (exit code, recap per host, log file, seconds)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{playbook.stem}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ansible_cfg),
        "ANSIBLE_FORCE_COLOR": "0",
        "PYTHONUNBUFFERED": "1",
        # ansible-playbook started from the venv must find the venv's python (filter plugins import llmrack).
        "PATH": f"{ansible_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd = [str(ansible_bin() / "ansible-playbook"), str(playbook), *(extra_args or [])]
    lines: list[str] = []
    start = time.monotonic()
    with log.open("w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            lines.append(line.rstrip("\n"))
            m = TASK.match(line)
            if m:
                on_task(m["name"])
        rc = proc.wait()
    return rc, parse_recap(lines), log, time.monotonic() - start
