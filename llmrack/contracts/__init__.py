"""The contracts between llmrack's parts, one module per contract.

Each module's docstring is the documentation of its contract; every part that produces or consumes it imports
the names from here instead of spelling them again. At run time these modules import nothing else of llmrack, so
any part (the serving layer, the Pulumi program, Ansible filter plugins, the lab) can depend on them.

- inventory         Ansible inventory groups and the host variables llmrack reads and writes
- metrics           Prometheus metric names the serving layer and the accelerator exporter expose
- alerts            alert thresholds and the Prometheus rules built from them
- scan_results      where an image's scan verdict is recorded and what the record holds
- serving_defaults  the serving limits' defaults and bounds, shared by the spec and the server
- serving_command   the serving command (engine, argv, env) rendered from spec + plan + node kind
- model_manifest    what a model version is (files, sizes, sha256; its digest), in a registry and on a node
"""
