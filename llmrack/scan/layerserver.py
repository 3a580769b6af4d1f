"""A short-lived HTTP endpoint that hands an image's layer blobs to Clair.

Clair's indexer fetches every layer from the URI in the manifest. For an image that lives only in a
local archive (no registry: air-gapped racks, CI before push) we serve the blobs ourselves for the
duration of one scan. Every request must carry a random bearer token that is passed to Clair in the
layer's `headers`, so nobody else on the network can read the image while the endpoint is up.
"""

from __future__ import annotations

import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from llmrack.errors import UsageError
from llmrack.scan.oci import OciImage


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `[v6]:PORT`; port 0 picks a free port."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {value!r}: expected HOST:PORT (port 0 picks a free one)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class LayerServer:
    """Serve `/blobs/sha256/<hex>` for the layers of `image`, until closed (use as a context manager)."""

    def __init__(self, image: OciImage, listen: str = "127.0.0.1:0", advertise: str | None = None) -> None:
        self.image = image
        self.token = secrets.token_urlsafe(32)
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) for the report and tests
        host, port = parse_listen(listen)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._serve(body=True)

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def _serve(self, body: bool) -> None:
                status = server._status_for(self.path, self.headers.get("Authorization", ""))
                server.requests.append((self.command, self.path, status))
                if status != HTTPStatus.OK:
                    self.send_error(status)
                    return
                digest = "sha256:" + self.path.rsplit("/", 1)[-1]
                size = image.blob_size(digest)
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.send_header("Docker-Content-Digest", digest)
                self.end_headers()
                if body:
                    with image.open_blob(digest) as fh:
                        for chunk in iter(lambda: fh.read(1 << 20), b""):
                            self.wfile.write(chunk)

            def log_message(self, format: str, *args: object) -> None:
                return  # the request list above is the log; stderr stays for the user

        try:
            self._httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise UsageError(f"cannot listen on {listen}: {exc}") from exc
        self._httpd.daemon_threads = True
        bound_port = self._httpd.server_address[1]
        if advertise:
            self.base_url = advertise.rstrip("/")
        else:
            shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
            shown = f"[{shown}]" if ":" in shown else shown
            self.base_url = f"http://{shown}:{bound_port}"
        self.port = bound_port
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="llmrack-layer-server", daemon=True)

    def _status_for(self, path: str, authorization: str) -> int:
        if not secrets.compare_digest(authorization.encode(), f"Bearer {self.token}".encode()):
            return HTTPStatus.UNAUTHORIZED
        parts = path.split("?", 1)[0].rstrip("/").split("/")
        if len(parts) < 3 or parts[-2] != "sha256" or parts[-3] != "blobs":
            return HTTPStatus.NOT_FOUND
        digest = "sha256:" + parts[-1]
        if digest not in {layer.digest for layer in self.image.layers} or not self.image.has_blob(digest):
            return HTTPStatus.NOT_FOUND
        return HTTPStatus.OK

    def uri_for(self, digest: str) -> str:
        return f"{self.base_url}/blobs/sha256/{digest.split(':', 1)[1]}"

    @property
    def headers(self) -> dict[str, list[str]]:
        return {"Authorization": [f"Bearer {self.token}"]}

    def __enter__(self) -> LayerServer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
