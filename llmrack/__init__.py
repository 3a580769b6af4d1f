"""llmrack: one deployment description drives planning, provisioning, serving and validation."""

__version__ = "0.1.0"
