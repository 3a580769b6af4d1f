"""A test server that speaks Clair v4's indexer/matcher HTTP API (the contract of quay/clair's OpenAPI document).

It is not a stand-in for our code: it plays the remote Clair. Like Clair it really fetches every layer URI it
is given (with the layer's headers), checks the blob's sha256 against the manifest, reads the dpkg database
out of the layers, and matches the installed packages against advisory data (tests/fixtures/clair) with
`dpkg --compare-versions`. Status codes, content types and error bodies follow Clair's httptransport:
201 + IndexReport on index, 200/404 on index report, 202 + empty body while the matcher is not initialized,
429 `{"code":"too-many-requests"}`, 401 without a valid PSK JWT, `{"code","message"}` errors.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import subprocess
import tarfile
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt

ADVISORIES = Path(__file__).resolve().parents[1] / "fixtures" / "clair" / "advisories-debian-bookworm.json"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass
class Behaviour:
    """Knobs for one test: how this Clair misbehaves or is configured."""

    busy_responses: int = 0  # answer 429 to the first N requests
    matcher_not_ready: int = 0  # answer 202 + empty body to the first N vulnerability report requests
    index_in_progress: int = 0  # the first N index report reads say "ScanLayers"
    psk: bytes | None = None  # require an HS256 JWT signed with this key
    issuers: tuple[str, ...] = ("clairctl",)
    malformed_report: bool = False
    # answer vulnerability reports with this recorded Clair response (its manifest_hash set to the one asked for)
    recorded_report: Path | None = None


@dataclass
class FakeClair:
    behaviour: Behaviour = field(default_factory=Behaviour)
    fetched: list[tuple[str, int, str]] = field(default_factory=list)  # (uri, status, digest ok?)
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    indexed: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- indexer ---------------------------------------------------------------------------------------

    def index(self, manifest: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        mhash = manifest.get("hash")
        layers = manifest.get("layers")
        if not isinstance(mhash, str) or not DIGEST.match(mhash) or not isinstance(layers, list) or not layers:
            return 400, {"code": "bad-request", "message": "bogus manifest"}
        packages: dict[str, dict[str, Any]] = {}
        environments: dict[str, list[dict[str, str]]] = {}
        err = ""
        status_text = ""
        introduced: dict[str, str] = {}
        for layer in layers:
            if not isinstance(layer, dict) or not DIGEST.match(str(layer.get("hash", ""))) or not layer.get("uri"):
                return 400, {"code": "bad-request", "message": "failed to deserialize manifest: bad layer"}
            headers = [(k, v) for k, vs in (layer.get("headers") or {}).items() for v in vs]
            try:
                resp = httpx.get(layer["uri"], headers=headers, timeout=30)
            except httpx.HTTPError as exc:
                err = f"fetcher: request failed: {exc}"
                self.fetched.append((layer["uri"], 0, "unreachable"))
                break
            ok = "sha256:" + hashlib.sha256(resp.content).hexdigest() == layer["hash"]
            self.fetched.append((layer["uri"], resp.status_code, "ok" if ok else "mismatch"))
            if resp.status_code != 200:
                err = f"fetcher: unexpected status code: {resp.status_code} {HTTPStatus(resp.status_code).phrase}"
                break
            if not ok:
                err = f"fetcher: layer {layer['hash']} digest mismatch"
                break
            found = _dpkg_status(resp.content)
            if found is not None:
                status_text = found
                for line in re.findall(r"^Package: (.+)$", found, re.M):
                    introduced.setdefault(line, layer["hash"])
        if not err:
            for i, pkg in enumerate(_parse_status(status_text), start=1):
                src_name = pkg.get("source") or pkg["name"]
                pid = str(i)
                packages[pid] = {
                    "id": pid, "name": pkg["name"], "version": pkg["version"], "kind": "binary", "arch": pkg["arch"],
                    "source": {"id": f"s{i}", "name": src_name, "version": pkg["version"], "kind": "source"},
                }
                environments[pid] = [{"package_db": "var/lib/dpkg/status",
                                      "introduced_in": introduced.get(pkg["name"], layers[0]["hash"]),
                                      "distribution_id": "1"}]
        dist = json.loads(ADVISORIES.read_text())["distribution"]
        report = {
            "manifest_hash": mhash,
            "state": "IndexError" if err else "IndexFinished",
            "packages": packages,
            "distributions": {"1": {**dist, "id": "1"}} if packages else {},
            "repositories": {},
            "environments": environments,
            "success": not err,
            "err": err,
        }
        with self._lock:
            self.indexed[mhash] = report
        if self.behaviour.index_in_progress > 0:
            return 201, {**report, "state": "FetchLayers", "success": False}
        return 201, report

    def index_report(self, mhash: str) -> tuple[int, dict[str, Any]]:
        report = self.indexed.get(mhash)
        if report is None:
            return 404, {"code": "not-found", "message": "index report not found"}
        if self.behaviour.index_in_progress > 0:
            self.behaviour.index_in_progress -= 1
            return 200, {**report, "state": "ScanLayers", "success": False}
        return 200, report

    # --- matcher ---------------------------------------------------------------------------------------

    def vulnerability_report(self, mhash: str) -> tuple[int, dict[str, Any] | None]:
        if self.behaviour.matcher_not_ready > 0:
            self.behaviour.matcher_not_ready -= 1
            return 202, None
        index = self.indexed.get(mhash)
        if index is None:
            return 404, {"code": "not-found", "message": f"index report for manifest {mhash!r} not found"}
        if self.behaviour.recorded_report is not None:
            recorded = json.loads(self.behaviour.recorded_report.read_text())
            recorded.pop("_comment", None)
            self.reports[mhash] = {**recorded, "manifest_hash": mhash}
            return 200, self.reports[mhash]
        data = json.loads(ADVISORIES.read_text())
        vulns: dict[str, dict[str, Any]] = {}
        by_pkg: dict[str, list[str]] = {}
        for pid, pkg in index["packages"].items():
            for n, adv in enumerate(data["advisories"]):
                if adv["source"] != pkg["source"]["name"]:
                    continue
                fixed = adv["fixed_in_version"]
                if fixed and not _dpkg_lt(pkg["version"], fixed):
                    continue
                vid = str(1000 + n)
                vulns[vid] = {
                    "id": vid, "updater": data["updater"], "name": adv["name"], "description": adv["description"],
                    "issued": "2024-01-01T00:00:00Z", "links": adv["links"], "severity": adv["severity"],
                    "normalized_severity": adv["normalized_severity"],
                    "package": {"id": "", "name": adv["source"], "version": "", "kind": "binary"},
                    "distribution": {**data["distribution"], "id": ""},
                    "repository": {"id": "", "name": "", "key": "", "uri": ""},
                    "fixed_in_version": fixed, "arch_op": "",
                }
                by_pkg.setdefault(pid, []).append(vid)
        report: dict[str, Any] = {
            "manifest_hash": mhash, "packages": index["packages"], "distributions": index["distributions"],
            "repositories": {}, "environments": index["environments"], "vulnerabilities": vulns,
            "package_vulnerabilities": by_pkg, "enrichments": {},
        }
        if self.behaviour.malformed_report:
            # A vulnerability without its required normalized_severity and a non-list package mapping.
            for v in report["vulnerabilities"].values():
                v.pop("normalized_severity")
            report["package_vulnerabilities"] = {"1": "1000"}
        self.reports[mhash] = report
        return 200, report

    def authorized(self, header: str) -> bool:
        if self.behaviour.psk is None:
            return True
        if not header.startswith("Bearer "):
            return False
        try:
            claims = jwt.decode(header[7:], self.behaviour.psk, algorithms=["HS256"], leeway=15,
                                options={"require": ["iss", "exp"]})
        except jwt.PyJWTError:
            return False
        return claims.get("iss") in self.behaviour.issuers


def _dpkg_lt(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode == 0


def _dpkg_status(blob: bytes) -> str | None:
    data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            if member.name.lstrip("./") == "var/lib/dpkg/status" and member.isfile():
                fh = tar.extractfile(member)
                return fh.read().decode() if fh else None
    return None


def _parse_status(text: str) -> list[dict[str, str]]:
    out = []
    for para in re.split(r"\n\s*\n", text.strip()):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", para, re.M))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            out.append({"name": fields["Package"], "version": fields.get("Version", ""),
                        "arch": fields.get("Architecture", ""), "source": fields.get("Source", "").split(" ")[0]})
    return out


def start(clair: FakeClair) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: dict[str, Any] | None, ctype: str = "application/json") -> None:
            clair.requests.append((self.command, self.path, status))
            raw = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", ctype)
            if status == 429:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _gate(self) -> bool:
            if not clair.authorized(self.headers.get("Authorization", "")):
                self._send(401, {"code": "unauthorized", "message": "unauthorized"})
                return False
            if clair.behaviour.busy_responses > 0:
                clair.behaviour.busy_responses -= 1
                self._send(429, {"code": "too-many-requests", "message": "server handling too many requests"})
                return False
            return True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if not self._gate():
                return
            if self.path != "/indexer/api/v1/index_report":
                self._send(404, {"code": "not-found", "message": "no such endpoint"})
                return
            try:
                manifest = json.loads(body)
            except ValueError as exc:
                self._send(400, {"code": "bad-request", "message": f"failed to deserialize manifest: {exc}"})
                return
            status, report = clair.index(manifest)
            self._send(status, report)

        def do_GET(self) -> None:
            if not self._gate():
                return
            m = re.fullmatch(r"/indexer/api/v1/index_report/(sha256:[0-9a-f]{64})", self.path)
            if m:
                self._send(*clair.index_report(m.group(1)))
                return
            m = re.fullmatch(r"/matcher/api/v1/vulnerability_report/(.+)", self.path)
            if m:
                if not DIGEST.match(m.group(1)):
                    self._send(400, {"code": "bad-request", "message": "malformed path: bad digest"})
                    return
                self._send(*clair.vulnerability_report(m.group(1)))
                return
            self._send(404, {"code": "not-found", "message": "no such endpoint"})

        def do_PUT(self) -> None:
            self._send(405, {"code": "method-not-allowed", "message": f"method disallowed: {self.command}"})

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    clair.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
