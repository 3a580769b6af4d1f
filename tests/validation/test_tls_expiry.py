"""`llmrack validate`'s security.tls_expiry: the certificate a gateway's HAProxy serves, read on the node (its
certificate blocks only, never the key kept in the same file), fails when it ends in fewer days than the TLS
expiry alert's threshold (llmrack.contracts.alerts.TLS_EXPIRY_DAYS) and passes with the days left otherwise."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from llmrack.contracts.alerts import TLS_EXPIRY_DAYS
from llmrack.validation.evidence import ITEMS, SCHEMA, Evidence, Item
from tests.validation.conftest import by_id, llmrack, report

ITEM = "gateway-certificates"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _gateway_pem(days: float) -> bytes:
    """A rack CA's leaf for the gateway valid for `days` more days, its chain and its key, in one file."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("test rack CA")).issuer_name(_name("test rack CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(_name("gw1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (leaf.public_bytes(pem) + ca.public_bytes(pem) + key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _read_on_node(tmp: Path, days: float) -> Item:
    """The evidence command as it runs on a gateway host, against a HAProxy config and certificate made here."""
    (tmp / "llmrack-api.pem").write_bytes(_gateway_pem(days))
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(f"frontend api\n    bind *:8080 ssl crt {tmp / 'llmrack-api.pem'} alpn h2,http/1.1\n")
    proc = subprocess.run(["sh", "-c", ITEMS[ITEM].replace("/etc/haproxy/haproxy.cfg", str(cfg))],
                          capture_output=True, text=True, check=False, timeout=30)
    return Item(ITEM, proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize(("days", "status"), [(5, "fail"), (397, "pass")])
def test_tls_expiry_judged_by_validate(tmp_path: Path, days: float, status: str) -> None:
    got = _read_on_node(tmp_path, days)
    assert got.rc == 0 and got.out.count("BEGIN CERTIFICATE") == 2, got
    assert "PRIVATE KEY" not in got.out
    dump = tmp_path / "dump"
    Evidence("gw1", {ITEM: got}, {"schema": SCHEMA, "host": "gw1", "level": "quick",
                                  "collected_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}).write(dump)
    proc = llmrack("validate", "analyze", str(dump), "--kind", "cpu", "--report", str(tmp_path / "report"))
    check = by_id(report(tmp_path / "report"))["security.tls_expiry[gw1]"]
    assert check["status"] == status, (check, proc.stderr[-2000:])
    assert abs(float(check["measured"]) - days) < 0.1 and check["threshold"] == f">= {TLS_EXPIRY_DAYS}"
    assert "CN=gw1" in check["detail"], check
    assert (proc.returncode != 0) is (status == "fail"), proc.stderr[-2000:]


def test_no_gateway_no_verdict(tmp_path: Path) -> None:
    cfg = tmp_path / "absent.cfg"
    proc = subprocess.run(["sh", "-c", ITEMS[ITEM].replace("/etc/haproxy/haproxy.cfg", str(cfg))],
                          capture_output=True, text=True, check=False, timeout=30)
    assert proc.returncode == 0 and proc.stdout == ""
