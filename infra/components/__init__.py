"""Pulumi components of llmrack: one ComponentResource per module, each with a typed `...Args` dataclass.

Every Args class has `validate()`, called by the component before it creates anything and by the
program for all components before the first one is created, so a bad argument never leaves a
half-built stack behind.
"""
