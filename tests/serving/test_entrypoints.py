"""`llmrack serve` and `python -m serving` are one command; the app warns loudly when it has no API keys."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmrack.cli.main import app as llmrack_app
from serving.app import create_app
from serving.settings import ServingSettings

FLAGS = ["--model", "--served-model-name", "--host", "--port", "--device", "--dtype", "--max-num-seqs",
         "--max-model-len", "--max-queue", "--api-key-file", "--drain-timeout", "--quantize"]


def test_same_flags_both_ways() -> None:
    ours = CliRunner().invoke(llmrack_app, ["serve", "--help"], terminal_width=200)
    module = subprocess.run([sys.executable, "-m", "serving", "--help"], capture_output=True, text=True,
                            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}, check=True)
    for flag in FLAGS:
        assert flag in ours.stdout and flag in module.stdout, flag


def test_bad_model_dir_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(llmrack_app, ["serve", "--model", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_unauthenticated_warning(qwen2_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="serving"):
        create_app(ServingSettings(model=qwen2_dir))
    assert any("UNAUTHENTICATED" in r.getMessage() for r in caplog.records)


def test_settings_from_environment(qwen2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.settings import get_settings

    monkeypatch.setenv("LLMRACK_SERVE_MODEL", str(qwen2_dir))
    monkeypatch.setenv("LLMRACK_SERVE_MAX_NUM_SEQS", "7")
    get_settings.cache_clear()
    try:
        settings = get_settings()
        assert settings.max_num_seqs == 7 and settings.name == qwen2_dir.name
        assert get_settings() is settings  # cached: built once
    finally:
        get_settings.cache_clear()
