"""The shipped post-provision suite: one module per area, one parametrised test per check.

Run through `llmrack validate`, or `pytest -p llmrack.validation.plugin --pyargs llmrack.validation.suite ...`.
Each test only names a check from llmrack.validation.checks; the `node`/`device` parameters and the
`verdict` fixture come from the plugin.
"""
