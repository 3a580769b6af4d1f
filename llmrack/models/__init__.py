"""Model weights as content-addressed versions (llmrack.contracts.model_manifest): build and verify a
manifest, push to / pull from an OCI registry (oras), an HTTP(S) mirror or a directory, keep a node's store.

Only the standard library and `oras` (with its `requests`) are imported here, so the same modules run on a
serving node as a zipapp (llmrack.models.agent) without the rest of llmrack.
"""
