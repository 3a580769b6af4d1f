"""`llmrack bench serve`: the engine against the per-request generate() baseline and the static-batch ceiling."""
