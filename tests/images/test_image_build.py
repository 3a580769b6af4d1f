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
    r = llmrack("image", "build", "--variant", "cpu", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "debootstrap" not in r.stderr and "podman import" not in r.stderr  # the base came from the cache
    meta = json.loads((tmp_path / "image.json").read_text())
    assert meta["base_image"] == built["meta"]["base_image"]
    with open_image(built["out"] / built["meta"]["archive"]) as first, open_image(tmp_path / meta["archive"]) as again:
        # The Debian base and the apt layer on it were not rebuilt: a rebuild would differ in file times.
        assert [layer.digest for layer in again.layers][:2] == [layer.digest for layer in first.layers][:2]
