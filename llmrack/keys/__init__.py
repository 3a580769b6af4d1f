"""Named, hashed API keys per tenant (the store file's shape and its changes): see llmrack.keys.store."""

from llmrack.keys.store import (
    FORMAT,
    KEY_PREFIX,
    KeyRecord,
    KeyStore,
    KeyStoreError,
    TenantLimits,
    digest,
    haproxy_map,
    load,
    parse,
    save,
)

__all__ = ["FORMAT", "KEY_PREFIX", "KeyRecord", "KeyStore", "KeyStoreError", "TenantLimits", "digest",
           "haproxy_map", "load", "parse", "save"]
