"""The engine's serving port with TLS (the spec's serving.tls): `python -m serving --ssl-certfile --ssl-keyfile`, the
real entrypoint in a subprocess, with a certificate from a CA made here the way the serving role's is (ECDSA P-256
leaf signed by a P-384 CA): the chain verifies for 127.0.0.1, plain HTTP gets no HTTP answer, TLS 1.1 is refused;
a certificate without its key is a usage error (exit 2)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.serving.conftest import free_port


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificates(out: Path) -> tuple[Path, Path, Path]:
    """A rack CA and a node certificate for localhost / 127.0.0.1 (PEM files: ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmrack rack CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("node1"), x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = out / "ca.crt", out / "tls.crt", out / "tls.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem_key(key))
    os.chmod(paths[2], 0o400)
    return paths


@pytest.fixture(scope="module")
def tls_server(qwen2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    ca, cert, key = _certificates(tmp_path_factory.mktemp("tls"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "serving", "--model", str(qwen2_dir), "--host", "127.0.0.1",
                             "--port", str(port), "--max-num-seqs", "2", "--max-model-len", "256",
                             "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        verified = ssl.create_default_context(cafile=str(ca))
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
            try:
                if httpx.get(f"https://127.0.0.1:{port}/ready", verify=verified, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the TLS server was not ready in 90 s"
            time.sleep(0.2)
        yield port, ca
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_engine_serves_tls_that_verifies_against_the_rack_ca(tls_server: tuple[int, Path]) -> None:
    port, ca = tls_server
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    r = httpx.get(f"https://localhost:{port}/v1/models", verify=ctx, timeout=10)
    assert r.status_code == 200 and r.json()["data"]
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port: no HTTP answer
        httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5)
    with pytest.raises(httpx.ConnectError):  # not the rack CA: the client refuses the certificate
        httpx.get(f"https://127.0.0.1:{port}/ready", timeout=5, verify=True)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.minimum_version = old.maximum_version = ssl.TLSVersion["TLSv1_1"]
    old.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, pytest.raises(ssl.SSLError):
        old.wrap_socket(raw, server_hostname="127.0.0.1")


def test_a_certificate_without_its_key_is_a_usage_error(qwen2_dir: Path, tmp_path: Path) -> None:
    _, cert, _ = _certificates(tmp_path)
    r = subprocess.run([sys.executable, "-m", "serving", "--model", str(qwen2_dir), "--ssl-certfile", str(cert)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "--ssl-keyfile" in r.stderr, r.stderr
