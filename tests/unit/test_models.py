"""Model versions end to end on this machine: manifests, verification, push/pull through a real registry
(Debian's docker-registry on a loopback port, the oras client), an HTTP mirror, resume and refusal."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from llmrack.contracts.model_manifest import (
    MANIFEST_FILE,
    NODE_AGENT,
    NODE_RELEASES,
    NODE_STORE,
    Manifest,
    VerifyLevel,
    partial_dir,
    version_dir,
)
from llmrack.models import local, transfer
from llmrack.models.errors import ModelError, TransferError, VerifyError
from llmrack.models.sources import OciSource, parse_source
from llmrack.spec import SpecError, parse_spec

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = Path("/usr/bin/docker-registry")


def llmrack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmrack", *args], capture_output=True, text=True, cwd=ROOT,
                          check=False)


def make_model(path: Path, weights: bytes) -> Path:
    (path / "tokenizer").mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "qwen2"}\n')
    (path / "model.safetensors").write_bytes(weights)
    (path / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0"}\n')
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_model(tmp_path / "tiny", bytes(range(256)) * 4096)  # 1 MiB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The reference registry (Debian docker-registry, installed by scripts/setup.sh) on a loopback port."""
    if not REGISTRY.exists():
        pytest.skip("docker-registry is not installed (scripts/setup.sh installs it)")
    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    (root / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([str(REGISTRY), "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield f"oci+http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_version_is_the_manifest_digest_and_follows_every_byte(model: Path) -> None:
    first = local.write_manifest(model)
    assert local.write_manifest(model) == first  # same files, same version
    manifest, version = local.read_manifest(model)
    assert version == first
    assert [f.path for f in manifest.files] == ["config.json", "model.safetensors", "tokenizer/tokenizer.json"]
    assert manifest.files[1].size == 1 << 20
    assert Manifest.from_bytes((model / MANIFEST_FILE).read_bytes()) == manifest
    (model / "config.json").write_text('{"model_type": "qwen3"}\n')
    assert local.write_manifest(model) != first


def test_verify_names_the_corrupted_file(model: Path) -> None:
    version = local.write_manifest(model)
    with (model / "model.safetensors").open("r+b") as f:
        f.seek(1000)
        f.write(b"\xff")
    # Same size: sizes alone (quick) cannot see it, every byte hashed (standard) does.
    assert local.verify(model, VerifyLevel.quick).version == version
    with pytest.raises(VerifyError, match=r"model\.safetensors: sha256 .* but the manifest says"):
        local.verify(model, VerifyLevel.standard)
    (model / "tokenizer" / "tokenizer.json").write_text("{}")
    (model / "extra.safetensors").write_bytes(b"x")
    with pytest.raises(VerifyError) as err:
        local.verify(model, VerifyLevel.quick)
    assert "tokenizer/tokenizer.json: 2 bytes, the manifest says 19" in str(err.value)
    assert "extra.safetensors: not in the manifest" in str(err.value)


def test_cli_verify_refuses_with_the_file_name_and_no_traceback(model: Path) -> None:
    assert llmrack("model", "manifest", str(model)).returncode == 0
    ok = llmrack("model", "verify", str(model))
    assert ok.returncode == 0 and ok.stdout.startswith("sha256:")
    (model / "model.safetensors").write_bytes(b"truncated")
    bad = llmrack("model", "verify", str(model), "--level", "quick")
    assert bad.returncode == 1
    assert "model.safetensors: 9 bytes, the manifest says 1048576" in bad.stderr and "Traceback" not in bad.stderr
    missing = llmrack("model", "verify", str(model.parent))
    assert missing.returncode == 2 and "llmrack-model.json not found" in missing.stderr


def test_sources_parse_and_bad_ones_are_refused() -> None:
    oci = parse_source("oci+http://10.0.0.5:5000/models/r1-qwen:v2")
    assert isinstance(oci, OciSource) and oci.plain_http and oci.tag == "v2" and oci.repository == "models/r1-qwen"
    assert parse_source("oci://harbor.rack.local/llm/r1").describe() == "oci://harbor.rack.local/llm/r1:latest"
    for bad in ("s3://bucket/model", "oci://harbor/Upper Case"):
        with pytest.raises(ModelError):
            parse_source(bad)
    spec = {"name": "m", "environment": "lab", "accelerator": "a100-80g",
            "serving": {"max_model_len": 512, "max_num_seqs": 8},
            "model": {"name": "deepseek-r1-distill-qwen-7b", "source": "oci://reg.local/models/r1", "version": "v1"}}
    with pytest.raises(SpecError, match=r"model\.version: 'v1' is not valid"):
        parse_spec(spec, "spec.yaml")


def test_push_then_pull_by_version_alone(registry: str, model: Path, tmp_path: Path) -> None:
    pushed = transfer.push(model, f"{registry}/models/tiny:v1")
    assert pushed.references[1].endswith(f":sha256-{pushed.version.split(':')[1]}")
    # A node knows only the repository and the version (model.source + model.version): it pulls by digest.
    store = tmp_path / "store"
    dest = version_dir(store, pushed.version)
    result = transfer.pull(f"{registry}/models/tiny", dest, pushed.version)
    assert result.changed and result.fetched_bytes == result.total_bytes and not partial_dir(dest).exists()
    assert (dest / "tokenizer" / "tokenizer.json").read_text() == '{"version": "1.0"}\n'
    assert local.verify(dest).version == pushed.version
    again = transfer.pull(f"{registry}/models/tiny", dest, pushed.version)
    assert not again.changed and again.fetched_bytes == 0
    # The tag names another version than the one asked for: refused before anything is written.
    other = make_model(tmp_path / "other", b"other weights")
    transfer.push(other, f"{registry}/models/tiny:v2")
    with pytest.raises(TransferError, match=f"holds model version sha256:.*, not {pushed.version}"):
        transfer.pull(f"{registry}/models/tiny:v2", tmp_path / "wrong", pushed.version)
    assert not (tmp_path / "wrong").exists() and not partial_dir(tmp_path / "wrong").exists()
    with pytest.raises(TransferError, match="no artifact"):
        transfer.pull(f"{registry}/models/absent", tmp_path / "absent", pushed.version)


def test_pull_resumes_from_what_an_interrupted_pull_left(registry: str, model: Path, tmp_path: Path) -> None:
    version = transfer.push(model, f"{registry}/models/resume:v1").version
    dest = tmp_path / "dest"
    staging = partial_dir(dest)
    staging.mkdir()
    # What a pull killed halfway leaves: the first file whole, the weights cut at 300 KiB.
    shutil.copy(model / "config.json", staging / "config.json")
    (staging / MANIFEST_FILE).write_bytes((model / MANIFEST_FILE).read_bytes())
    (staging / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes()[: 300 << 10])
    result = transfer.pull(f"{registry}/models/resume", dest, version)
    assert result.resumed_bytes == len((model / "config.json").read_bytes()) + (300 << 10)
    assert result.fetched_bytes == result.total_bytes - result.resumed_bytes
    assert local.verify(dest).version == version


def test_killed_pull_leaves_no_version_dir_and_resumes(registry: str, tmp_path: Path) -> None:
    big = make_model(tmp_path / "big", bytes(range(256)) * (32 << 12))  # 8 MiB
    version = transfer.push(big, f"{registry}/models/big:v1").version
    dest = tmp_path / "pulled"
    cmd = [sys.executable, "-m", "llmrack", "model", "pull", f"{registry}/models/big", str(dest),
           "--version", version, "--max-rate", "4"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    weights = partial_dir(dest) / "model.safetensors"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not weights.exists() or weights.stat().st_size < (2 << 20)):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    have = weights.stat().st_size
    assert 0 < have < (8 << 20) and not dest.exists()
    done = subprocess.run([*cmd[:-2], "--json"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["resumed_bytes"] >= have and out["fetched_bytes"] == out["total_bytes"] - out["resumed_bytes"]
    assert "model.safetensors: resuming at" in done.stderr
    assert local.verify(dest).version == version


def test_a_source_serving_a_corrupted_file_is_refused(model: Path, tmp_path: Path) -> None:
    version = local.write_manifest(model)
    mirror = tmp_path / "mirror"
    shutil.copytree(model, mirror)
    (mirror / "model.safetensors").write_bytes(b"\0" * (1 << 20))  # right size, wrong bytes
    dest = tmp_path / "dest"
    with pytest.raises(VerifyError, match=r"model\.safetensors: sha256 .* but the manifest says") as err:
        transfer.pull(str(mirror), dest, version)
    assert "config.json" not in str(err.value)
    assert not dest.exists() and not (partial_dir(dest) / "model.safetensors").exists()
    (mirror / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes())
    assert transfer.pull(str(mirror), dest, version).resumed_bytes > 0  # the good files were kept


@pytest.fixture
def http_mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server over a directory (it ignores Range: a pull must skip what it has)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()


def test_http_mirror_of_a_store_resumes_without_range(http_mirror: tuple[str, Path], model: Path,
                                                      tmp_path: Path) -> None:
    url, root = http_mirror
    version = local.write_manifest(model)
    # A node's store served as is is a mirror: <base>/<hex>/...
    shutil.copytree(model, version_dir(root, version))
    dest = tmp_path / "dest"
    partial_dir(dest).mkdir()
    (partial_dir(dest) / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes()[:12345])
    (partial_dir(dest) / MANIFEST_FILE).write_bytes((model / MANIFEST_FILE).read_bytes())
    result = transfer.pull(url, dest, version)
    assert result.resumed_bytes == 12345 and local.verify(dest).version == version


def test_prune_keeps_the_newest_and_never_the_protected(tmp_path: Path) -> None:
    store = tmp_path / "store"
    versions = []
    for i in range(5):
        src = make_model(tmp_path / f"m{i}", f"weights {i}".encode())
        versions.append(local.write_manifest(src))
        shutil.copytree(src, version_dir(store, versions[-1]))
        time.sleep(0.01)  # distinct mtimes: m4 is the newest
    running = versions[0]  # the oldest, but it is what the node serves
    removed = transfer.prune(store, 3, [running, versions[4]])
    kept = {f"sha256:{d.name}" for d in transfer.installed_versions(store)}
    assert kept == {running, versions[4], versions[3]}
    assert {f"sha256:{d.name}" for d in removed} == {versions[1], versions[2]}
    with pytest.raises(ModelError, match="keep must be at least 1"):
        transfer.prune(store, 0, [])


def test_agent_zipapp_runs_on_the_system_python(model: Path, tmp_path: Path) -> None:
    """The serving role runs the agent with the node's python3, outside any virtualenv."""
    agent = tmp_path / "agent.pyz"
    assert llmrack("model", "agent", "--out", str(agent)).returncode == 0
    version = local.write_manifest(model)
    python = shutil.which("python3", path="/usr/bin") or sys.executable
    ok = subprocess.run([python, str(agent), "verify", "--dir", str(model), "--version", version],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["version"] == version
    (model / "config.json").write_text("{}")
    bad = subprocess.run([python, str(agent), "verify", "--dir", str(model), "--level", "quick"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "config.json: 2 bytes, the manifest says 24" in bad.stderr


def test_serving_role_defaults_are_the_contracts_node_paths() -> None:
    """The validation suite reads a node where the serving role writes: one set of paths."""
    defaults = yaml.safe_load((ROOT / "ansible/roles/serving/defaults/main.yml").read_text())
    assert defaults["serving_models_dir"] == NODE_STORE
    assert defaults["serving_releases_file"] == NODE_RELEASES
    assert defaults["serving_model_agent"] == NODE_AGENT


def test_validation_check_judges_the_served_version() -> None:
    from llmrack.validation import expect
    from llmrack.validation.checks.base import run
    from llmrack.validation.checks.model import model_version
    from llmrack.validation.evidence import Evidence, Item

    v1, v2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    spec = parse_spec({"name": "m", "environment": "lab", "accelerator": "a100-80g",
                       "serving": {"max_model_len": 512, "max_num_seqs": 8},
                       "model": {"name": "deepseek-r1-distill-qwen-7b", "source": "oci://reg.local/models/r1",
                                 "version": v1}}, "spec.yaml")
    exp = expect.build("node", {"group_names": ["cpu_nodes", "serving_nodes"],
                                "llmrack_serving_url": "http://127.0.0.1:8000"}, spec=spec)

    def outcome(doc: dict[str, object] | None, rc: int = 0) -> tuple[str, str]:
        ev = Evidence("node", manifest={"level": "standard"})
        ev.items["model"] = Item("model", rc, json.dumps(doc) if doc else "")
        got = run(model_version, ev, exp)
        return got.status, got.detail

    ok = {"rc": 0, "out": json.dumps({"files": 5, "bytes": 2400000, "level": "standard"}), "err": ""}
    serving_v1 = {"releases": [{"image": "sha256:" + "a" * 64, "model": v1}], "model": v1, "unit_mounts_it": True}
    assert outcome({**serving_v1, "verify": ok}) == ("pass", "5 files, 2400000 bytes verified (standard)")
    assert outcome({**serving_v1, "model": v2, "verify": ok})[0] == "fail"
    bad = {"rc": 1, "out": "", "err": "error: ... model.safetensors: sha256 0b6d... but the manifest says 54e1..."}
    status, detail = outcome({**serving_v1, "verify": bad})
    assert status == "fail" and "model.safetensors: sha256" in detail
    assert outcome(None, rc=127) == ("fail", "the serving role has not rolled a model version out here")


def test_agent_reports_a_filesystem_error_by_path_without_a_traceback(model: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from llmrack.models import agent

    version = local.write_manifest(model)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    rc = agent.main(["pull", "--source", str(model), "--version", version, "--store", str(blocker / "store")])
    err = capsys.readouterr().err
    assert rc == 1 and "Not a directory" in err and str(blocker) in err and "run the same command again" in err
