"""HTTP routers: request parsing and response shaping only; the logic lives in serving.service."""
