"""Post-provision validation: is a node fit to serve, and does it deliver what its hardware should?

Layout:
- `evidence`: what is read from a node (raw tool outputs), gathered live over testinfra in one round trip
  or loaded from a dump written by `llmrack validate collect`; the checks only ever see evidence.
- `parsers`: turn raw outputs (nvidia-smi, npu-smi, dmesg, sysctl ...) into typed records.
- `expect`: what a node SHOULD be, from the deployment spec, the catalog, the inventory and --expect.
- `acceptance`: the per-deployment acceptance thresholds (the spec's `validation` section), with defaults.
- `checks`: one function per check, evidence + expectations -> Outcome (status, measured, threshold, unit), per
  area and per accelerator family behind `checks.family.AcceleratorFamily`.
- `plugin` + `suite/`: the pytest + testinfra suite over those checks; `report` writes report.json / .html.
- `runner`: what `llmrack validate` calls.
"""
