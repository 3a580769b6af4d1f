"""docs/batch.md's script written for the hosted Batch API runs, unchanged, against the rack's batch service:
only OPENAI_BASE_URL (read by the openai client) points it here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.batch.conftest import BatchService, requests_file
from tests.serving.conftest import ThreadServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "batch.md"


def _hosted_script() -> str:
    match = re.search(r"<!-- hosted-script -->\n```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert match, "docs/batch.md lost its hosted-script block"
    return match.group(1)


def test_the_hosted_api_script_runs_unchanged_but_for_base_url(upstream: ThreadServer, tmp_path: Path) -> None:
    script = tmp_path / "hosted_batch.py"
    script.write_text(_hosted_script())
    assert "base_url" not in script.read_text()  # nothing in the script itself names the rack
    inputs = requests_file(tmp_path / "requests.jsonl", 5, str(upstream.settings.name))
    svc = BatchService(upstream.url, tmp_path / "state")
    try:
        svc.start()
        env = {**os.environ, "OPENAI_BASE_URL": f"{svc.url}/v1", "OPENAI_API_KEY": "unused"}
        result = subprocess.run([sys.executable, str(script), str(inputs)], capture_output=True, text=True, env=env,
                                timeout=120, check=False)
    finally:
        svc.stop()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "completed 5 completed, 0 failed"
    assert sorted(line.split()[0] for line in lines[1:]) == [f"req-{i}" for i in range(5)]
