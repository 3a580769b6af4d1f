"""The gateway's key map, rendered by llmrack.keys itself from the key store's JSON (one owner of its shape).

Runs on the controller, in the Python that runs ansible-playbook (the project's venv).
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from llmrack.keys import KeyStoreError, haproxy_map, parse


def haproxy_key_map(store_json: str) -> str:
    try:
        return haproxy_map(parse(store_json, "gateway_keys_store"))
    except KeyStoreError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"llmrack_haproxy_key_map": haproxy_key_map}
