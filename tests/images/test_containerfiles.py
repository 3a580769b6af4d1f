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


def test_all_three_variants_exist():
    assert [p.name for p in FILES] == ["ascend.Containerfile", "cpu.Containerfile", "cuda.Containerfile"]


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
    assert ("ENTRYPOINT", '["python", "-m", "serving"]') in final
    assert ("EXPOSE", "8000") in final
    # No compilers, package managers' caches or pip in what ships.
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make|python3-dev|python3-pip)\b", final_text)
    assert "pip install" not in final_text
    assert "COPY --from=venv /opt/llmrack /opt/llmrack" in final_text
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
    ({"variant": "cpu", "base_image": "debian:bookworm-slim"}, "must be pinned by digest"),
])
def test_build_refuses_unpinned_or_unknown_bases(tmp_path, kw, message):
    opts = BuildOptions(out=tmp_path / "out", cache_dir=tmp_path / "cache", source_dir=IMAGES.parent,
                        **kw)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=message):
        build(opts, log=lambda _m: None)
