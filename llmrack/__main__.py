"""`python -m llmrack` is the `llmrack` command."""

from llmrack.cli.main import run

run()
