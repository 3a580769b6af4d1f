"""The serving checks against the real serving layer: `python -m serving` on a tiny model with an API key, then
`llmrack validate --local --serving-url ... --api-key-file ...`; and against a server that enforces no key."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.model.tiny import make_tiny
from serving.readiness import wait_ready
from tests.validation.conftest import ROOT, by_id, llmrack, report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny("qwen2", tmp_path_factory.mktemp("models") / "tiny-qwen2", seed=0)


def _serve(model: Path, *extra: str) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "serving", "--model", str(model), "--host", "127.0.0.1",
                             "--port", str(port), "--served-model-name", "tiny", *extra],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 120, exited=lambda: None if proc.poll() is None else
                   (proc.stderr.read() if proc.stderr else f"exit code {proc.returncode}"))
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    path.write_text("llmrack-test-key-0123456789\n")
    return path


@pytest.fixture(scope="module")
def server(model_dir: Path, key_file: Path) -> Iterator[str]:
    yield from _serve(model_dir, "--api-key-file", str(key_file))


@pytest.mark.slow
def test_serving_checks_pass_against_the_real_server(server: str, key_file: Path, tmp_path: Path) -> None:
    llmrack("validate", "--local", "--serving-url", server, "--api-key-file", str(key_file),
            "--report", str(tmp_path))
    checks = by_id(report(tmp_path))
    node = next(iter(report(tmp_path)["nodes"]))
    ready, key, comp = (checks[f"serving.{c}[{node}]"] for c in ("ready", "api_key", "completion"))
    assert (ready["status"], ready["measured"]) == ("pass", 200)
    assert (key["status"], key["measured"]) == ("pass", "no key 401, wrong key 401, valid key 200")
    assert comp["status"] == "pass" and 0 < comp["measured"] <= 30 and comp["unit"] == "s"
    assert comp["data"]["completion_tokens"] > 0 and "'tiny'" in comp["detail"]
    # The key never reaches the report.
    assert "llmrack-test-key" not in (tmp_path / "report.json").read_text()


@pytest.mark.slow
def test_a_server_without_keys_fails_the_key_check(model_dir: Path, key_file: Path, tmp_path: Path) -> None:
    for url in _serve(model_dir):
        proc = llmrack("validate", "--local", "--serving-url", url, "--api-key-file", str(key_file),
                       "--report", str(tmp_path))
        assert proc.returncode == 1
        checks = by_id(report(tmp_path))
        node = next(iter(report(tmp_path)["nodes"]))
        assert checks[f"serving.api_key[{node}]"]["status"] == "fail"
        assert checks[f"serving.api_key[{node}]"]["measured"].startswith("no key 200")
        assert checks[f"serving.ready[{node}]"]["status"] == "pass"


@pytest.mark.slow
def test_golden_output_passes_on_the_reference_and_fails_on_other_tokens(server: str, key_file: Path,
                                                                         tmp_path: Path) -> None:
    from llmrack.validation import golden

    reference = tmp_path / "golden.json"
    rc = golden.main(["record", server, "--model", "tiny", "--api-key-file", str(key_file), "--out", str(reference)])
    assert rc == 0
    recorded = golden.load(reference)
    assert len(recorded["completions"]) == len(golden.PROMPTS) and all(recorded["completions"])
    llmrack("validate", "--local", "--serving-url", server, "--api-key-file", str(key_file),
            "--expect", f"{golden.GOLDEN_VAR}={reference}", "--report", str(tmp_path / "ok"))
    node = next(iter(report(tmp_path / "ok")["nodes"]))
    check = by_id(report(tmp_path / "ok"))[f"serving.golden_output[{node}]"]
    assert (check["status"], check["measured"]) == ("pass", 0), check
    # The same server against a reference whose second completion differs from its 5th character on: what a
    # mis-wired layout looks like from outside.
    wrong = dict(recorded, completions=[recorded["completions"][0], recorded["completions"][1][:5] + " rack rack",
                                        *recorded["completions"][2:]])
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    proc = llmrack("validate", "--local", "--serving-url", server, "--api-key-file", str(key_file),
                   "--expect", f"{golden.GOLDEN_VAR}={tmp_path / 'wrong.json'}", "--report", str(tmp_path / "bad"))
    assert proc.returncode == 1
    check = by_id(report(tmp_path / "bad"))[f"serving.golden_output[{node}]"]
    assert (check["status"], check["measured"]) == ("fail", 1)
    assert f"{golden.PROMPTS[1]!r}: differs from character 5" in check["detail"]
