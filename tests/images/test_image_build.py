"""The real serving image: built once per session by `llmrack image build` (cached under the user's cache dir),
then inspected with podman. The SBOM must list exactly what is in the image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmrack.images.build import default_cache_dir
from llmrack.scan.oci import open_image
from tests.images.conftest import llmrack

pytestmark = pytest.mark.slow

NEEDED = ("podman", "debootstrap")


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    missing = [t for t in NEEDED if not (shutil.which(t) or Path(f"/usr/sbin/{t}").exists())]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/setup.sh installs them)")
    out = tmp_path_factory.mktemp("image")
    r = llmrack("image", "build", "--variant", "cpu", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr[-5000:]
    meta = json.loads((out / "image.json").read_text())
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(default_cache_dir() / "containers.conf"))
    # Run what ships: the archive, loaded back into podman (its layers are already there, so this is quick).
    loaded = subprocess.run(["podman", "load", "-q", "-i", str(out / meta["archive"])], env=env, check=True,
                            capture_output=True, text=True).stdout
    image = loaded.strip().splitlines()[-1].split(": ", 1)[-1]
    return {"out": out, "meta": meta, "stdout": r.stdout, "env": env, "image": image}


def podman_run(built: dict[str, Any], entrypoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "run", "--rm", "--network", "none", "--entrypoint", entrypoint, built["image"],
                           *args], env=built["env"], capture_output=True, text=True, check=False, timeout=300)


def components(built: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads((built["out"] / built["meta"]["sbom"]).read_text())["components"]


def test_build_writes_the_contracted_files(built):
    meta, out = built["meta"], built["out"]
    assert {"variant", "digest", "archive", "sbom", "reference"} <= set(meta)
    assert meta["variant"] == "cpu" and meta["archive"] == "llmrack-serving-cpu.oci.tar"
    assert meta["sbom"] == "llmrack-serving-cpu.cdx.json"
    assert built["stdout"].strip() == meta["digest"]  # the digest is what the command prints
    with open_image(out / meta["archive"]) as image:
        assert image.manifest_digest == meta["digest"]
        image.verify()
    assert meta["base_image"].startswith("localhost/llmrack-debian@sha256:")


def test_sbom_is_valid_cyclonedx_1_5(built):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    text = (built["out"] / built["meta"]["sbom"]).read_text()
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(text) is None
    doc = json.loads(text)
    assert doc["metadata"]["component"]["version"] == built["meta"]["digest"]


def test_sbom_debian_packages_are_the_image_dpkg_database(built):
    listed = {(c["name"], c["version"]) for c in components(built) if c["purl"].startswith("pkg:deb/debian/")}
    r = podman_run(built, "dpkg-query", "-W", "-f", "${db:Status-Status} ${Package} ${Version}\n")
    assert r.returncode == 0, r.stderr
    installed = {tuple(line.split()[1:]) for line in r.stdout.splitlines() if line.startswith("installed ")}
    assert listed == installed
    assert {"python3", "libc6", "ca-certificates"} <= {name for name, _v in listed}
    assert all("arch=amd64" in c["purl"] or "arch=all" in c["purl"] for c in components(built)
               if c["purl"].startswith("pkg:deb/"))


def test_sbom_python_distributions_are_the_image_site_packages(built):
    by_location: dict[str, set[tuple[str, str]]] = {}
    for c in components(built):
        if c["purl"].startswith("pkg:pypi/"):
            loc = next(p["value"] for p in c["properties"] if p["name"] == "llmrack:site-packages")
            by_location.setdefault(loc, set()).add((c["name"], c["version"]))
    assert "/opt/llmrack/lib/python3.11/site-packages" in by_location
    script = ("import importlib.metadata as m, json, sys; locs = json.loads(sys.argv[1]); "
              "print(json.dumps({l: sorted([d.metadata['Name'], d.version] for d in m.distributions(path=[l])) "
              "for l in locs}))")
    r = podman_run(built, "python", "-c", script, json.dumps(sorted(by_location)))
    assert r.returncode == 0, r.stderr
    found = {loc: {tuple(x) for x in dists} for loc, dists in json.loads(r.stdout).items()}
    assert found == by_location
    names = {n.lower() for n, _v in by_location["/opt/llmrack/lib/python3.11/site-packages"]}
    assert {"torch", "transformers", "fastapi", "uvicorn", "llmrack"} <= names
    assert "pip" not in names


def test_image_runs_as_non_root_with_serving_entrypoint_and_labels(built):
    inspect = json.loads(subprocess.run(["podman", "image", "inspect", built["image"]], env=built["env"],
                                        check=True, capture_output=True, text=True).stdout)[0]
    config = inspect["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["python", "-m", "serving"]
    assert "8000/tcp" in config["ExposedPorts"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert len(labels["org.opencontainers.image.revision"]) == 40
    assert labels["org.opencontainers.image.source"]
    r = podman_run(built, "id", "-u")
    assert r.stdout.strip() == "10001"


def test_final_image_has_no_compilers_pip_or_package_caches(built):
    script = ("for t in gcc cc g++ make pip pip3; do command -v $t && exit 1; done; "
              "test -z \"$(ls -A /var/lib/apt/lists)\" && test -z \"$(ls -A /var/cache/apt | grep -v archives)\" && "
              "test ! -e /opt/llmrack/bin/pip && python -c 'import serving, torch, transformers, fastapi'")
    r = podman_run(built, "sh", "-c", script)
    assert r.returncode == 0, r.stdout + r.stderr


def test_second_build_reuses_the_cached_base_and_layers(built, tmp_path):
    # A snapshot of the tree, so that edits made meanwhile in a shared checkout cannot change the image.
    root = Path(__file__).resolve().parents[2]
    snap = tmp_path / "src"
    for name in ("pyproject.toml", "README.md"):
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, snap / name)
    for pkg in ("llmrack", "serving", "infra", "images"):
        shutil.copytree(root / pkg, snap / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "out"
    r = llmrack("image", "build", "--variant", "cpu", "--source", str(snap), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "debootstrap" not in r.stderr and "podman import" not in r.stderr  # the base came from the cache
    meta = json.loads((out / "image.json").read_text())
    assert meta["base_image"] == built["meta"]["base_image"]
    with open_image(built["out"] / built["meta"]["archive"]) as first, open_image(out / meta["archive"]) as again:
        # The Debian base and the apt layer on it were not rebuilt: a rebuild would differ in file times.
        assert [layer.digest for layer in again.layers][:2] == [layer.digest for layer in first.layers][:2]
    # Nothing changed since: the archive in --out is kept, not exported again.
    r = llmrack("image", "build", "--variant", "cpu", "--source", str(snap), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "image unchanged" in r.stderr and r.stdout.strip() == meta["digest"]


def test_container_serves_a_tiny_model_and_passes_its_health_check(built, tmp_path):
    import time
    import urllib.request

    model = tmp_path / "models" / "tiny-qwen2"
    r = llmrack("model", "make-tiny", "--arch", "qwen2", "--out", str(model))
    assert r.returncode == 0, r.stderr
    name = f"llmrack-image-test-{os.getpid()}"
    env = built["env"]
    # As the serving role runs it: model mounted read-only at /models/<name>, port 8000 published on loopback.
    subprocess.run(["podman", "run", "-d", "--name", name, "-p", "127.0.0.1::8000",
                    "-v", f"{model}:/models/tiny-qwen2:ro", built["image"], "--model", "/models/tiny-qwen2"],
                   env=env, check=True, capture_output=True, text=True)
    try:
        port = subprocess.run(["podman", "port", name, "8000"], env=env, check=True, capture_output=True,
                              text=True).stdout.strip().rsplit(":", 1)[-1]
        deadline = time.monotonic() + 240
        status = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                    status = resp.status
                    break
            except OSError:
                time.sleep(2)
        logs = subprocess.run(["podman", "logs", name], env=env, capture_output=True, text=True,
                              check=False).stderr[-2000:]
        assert status == 200, logs
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as resp:
            assert json.loads(resp.read())["data"][0]["id"] == "tiny-qwen2"
        # The Containerfile's HEALTHCHECK command, run inside the container. (OCI image configs have no
        # health-check field, so the archive loaded here does not carry it for `podman healthcheck run`.)
        text = (Path(__file__).resolve().parents[2] / "images" / "cpu.Containerfile").read_text()
        command = json.loads(text.split("HEALTHCHECK", 1)[1].split("CMD", 1)[1].split("\n", 1)[0])
        hc = subprocess.run(["podman", "exec", name, *command], env=env, capture_output=True, text=True,
                            check=False)
        assert hc.returncode == 0, hc.stdout + hc.stderr
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "2", name], env=env, capture_output=True, check=False)
