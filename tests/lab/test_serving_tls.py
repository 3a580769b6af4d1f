"""TLS from the gateway to the nodes (the spec's serving.tls), turned on in the session lab.

The last module on the session lab (tests/conftest.py): the other lab tests use the nodes' plain URLs, and the lab is
torn down after this one, so nothing switches it off again.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from llmrack.contracts.inventory import DEPLOYMENT_FILE, DEPLOYMENT_VAR
from llmrack.lab import lab, serving_artifacts

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_serving_tls_from_the_gateway_to_the_nodes(lab_up: lab.UpResult, tmp_path: Path) -> None:
    """The spec's serving.tls turned on for the session lab by one site.yml run of the parts it touches (gateway,
    serving, monitoring): each node's serving port answers TLS with a certificate from the rack CA (verified from the
    host for 127.0.0.1) and no plain HTTP, the gateway's requests and health checks reach both nodes over verified
    TLS, and Prometheus scrapes the serving metrics over https."""
    state = lab_up.state
    gateway, lab_key = state.gateway_url, serving_artifacts.api_key(state.lab_dir)
    assert gateway
    inventory_dir = state.inventory.parent
    deployment = yaml.safe_load((inventory_dir / DEPLOYMENT_FILE).read_text())[DEPLOYMENT_VAR]
    tls_on = tmp_path / "serving-tls.yml"
    tls_on.write_text(yaml.safe_dump({DEPLOYMENT_VAR: {**deployment,
                                                       "serving": {**deployment["serving"], "tls": True}}}))
    parts = ["--tags", "gateway,serving,monitoring"]
    ca = ssl.create_default_context(cafile=str(state.rack_ca))
    node1 = state.nodes[0]
    assert node1.prometheus_credentials and node1.prometheus_address
    user, password = node1.prometheus_credentials.split(":", 1)
    started = time.monotonic()
    on = lab.provision(state.lab_dir, "site.yml", [*parts, "-e", f"@{tls_on}"])
    assert on.rc == 0, f"see {on.log}"
    took = time.monotonic() - started
    for node in state.nodes:
        https = node.serving_url.replace("http://", "https://")
        with socket.create_connection(("127.0.0.1", node.http_port), timeout=5) as raw, \
                ca.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            version = tls.version()
            assert version in ("TLSv1.2", "TLSv1.3")
        assert httpx.get(f"{https}/ready", verify=ca, timeout=10).status_code == 200
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the serving port: no HTTP answer
            httpx.get(f"{node.serving_url}/ready", timeout=5)
    # Through the gateway: every answer came from a node over TLS (no other way there is left).
    with httpx.Client(base_url=gateway, verify=ca, timeout=60,
                      headers={"Authorization": f"Bearer {lab_key}"}) as client:
        statuses = Counter(client.post("/v1/completions", json={
            "model": serving_artifacts.SERVED_NAME, "prompt": "tls", "max_tokens": 4}).status_code
            for _ in range(8))
    assert statuses == {200: 8}, statuses
    deadline = time.monotonic() + 60
    while True:  # Prometheus reloaded its config; each node is up at its first https scrape (every 15 s)
        r = httpx.get(f"{node1.prometheus_address}/api/v1/targets", params={"state": "active"},
                      auth=(user, password), timeout=10)
        serving = [t for t in r.json()["data"]["activeTargets"] if t["labels"]["job"] == "serving"]
        if serving and all(t["scrapeUrl"].startswith("https://") and t["health"] == "up" for t in serving):
            break
        assert time.monotonic() < deadline, [(t["scrapeUrl"], t["health"], t["lastError"]) for t in serving]
        time.sleep(2)
    print(f"\nserving.tls on in {took:.0f} s (site.yml --tags gateway,serving,monitoring): nodes' ports "
          f"{version}, chain verified against the rack CA, plain HTTP refused; 8/8 completions through the "
          f"gateway; Prometheus scrapes {len(serving)} nodes over https, all up")
