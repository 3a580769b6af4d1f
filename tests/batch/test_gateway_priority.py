"""The gateway's batch priority class is keyed on the header the batch service sends, and HAProxy accepts it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from llmrack.batch.protocol import PRIORITY_HEADER, PRIORITY_HEADER_VALUE

TEMPLATE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "gateway" / "templates" / "haproxy.cfg.j2"
RULE = re.compile(r"^\s*(http-request set-priority-class int\(\d+\) if \{ req\.hdr\(([^)]+)\) -m str (\S+) \})\s*$",
                  re.MULTILINE)


def test_the_rule_matches_what_the_batch_service_sends() -> None:
    rules = RULE.findall(TEMPLATE.read_text())
    assert len(rules) == 1, "one batch priority-class rule in the gateway's frontend"
    _, header, value = rules[0]
    assert header.lower() == PRIORITY_HEADER.lower() and value == PRIORITY_HEADER_VALUE


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs Debian's haproxy (apt-get install haproxy)")
def test_haproxy_accepts_the_rule(tmp_path: Path) -> None:
    rule = RULE.findall(TEMPLATE.read_text())[0][0]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("defaults\n    mode http\n    timeout connect 5s\n    timeout client 10s\n    timeout server 10s\n"
                   f"frontend api\n    bind 127.0.0.1:18080\n    {rule}\n    default_backend nodes\n"
                   "backend nodes\n    server node1 127.0.0.1:1 maxconn 8\n")
    result = subprocess.run([str(shutil.which("haproxy")), "-c", "-f", str(cfg)], capture_output=True, text=True,
                            check=False, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
