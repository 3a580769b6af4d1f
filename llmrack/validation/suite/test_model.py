"""The model version: the node serves the spec's model.version and its files match their manifest."""

from __future__ import annotations

from typing import Any

from llmrack.validation.checks.model import model_version


def test_model_version(node: Any, verdict: Any) -> None:
    verdict(model_version)
