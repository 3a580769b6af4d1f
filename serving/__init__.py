"""The serving layer: a torch engine with continuous batching behind an OpenAI-compatible API."""
