"""A protocol-level OCI registry for what docker-registry cannot do on demand: 429 with Retry-After,
a bearer-token realm (Docker Hub, GHCR and NGC style), a lying Docker-Content-Digest header."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPOSITORY = "demo/app"
TOKEN = "bearer-token-for-demo-app"


def _blob(document: dict) -> tuple[bytes, str]:
    data = json.dumps(document, sort_keys=True).encode()
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


CONFIG, CONFIG_DIGEST = _blob({"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": []}})
LAYER_SIZES = (1234, 56789)
MANIFEST, MANIFEST_DIGEST = _blob({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": CONFIG_DIGEST, "size": len(CONFIG)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": size,
                "digest": "sha256:" + hashlib.sha256(str(size).encode()).hexdigest()} for size in LAYER_SIZES],
})


@dataclass
class Behaviour:
    """What the server does: `throttle` 429s first (-1: forever), a bearer realm guarded by `login`."""

    throttle: int = 0
    retry_after: str | None = None
    login: tuple[str, str] | None = None
    lie_about_digest: bool = False
    manifest_times: list[float] = field(default_factory=list)
    token_requests: list[str] = field(default_factory=list)  # the Authorization header each sent


class ThrottlingRegistry:
    """ThreadingHTTPServer on 127.0.0.1 serving tag `demo/app:1.0` (one linux/amd64 manifest)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(behaviour))
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ThrottlingRegistry:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(behaviour: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
            body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
            self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

        def _token(self) -> None:
            behaviour.token_requests.append(self.headers.get("Authorization", ""))
            user, password = behaviour.login
            expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._error(401, "UNAUTHORIZED", "incorrect username or password")
                return
            self._send(200, json.dumps({"token": TOKEN}).encode(), {"Content-Type": "application/json"})

        def do_GET(self) -> None:
            if self.path.startswith("/token"):
                self._token()
                return
            if behaviour.login and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                realm = f"http://127.0.0.1:{self.server.server_port}/token"
                challenge = f'Bearer realm="{realm}",service="fake",scope="repository:{REPOSITORY}:pull"'
                self._error(401, "UNAUTHORIZED", "authentication required", {"Www-Authenticate": challenge})
                return
            if self.path == f"/v2/{REPOSITORY}/manifests/1.0":
                behaviour.manifest_times.append(time.monotonic())
                if behaviour.throttle != 0:
                    behaviour.throttle -= 1 if behaviour.throttle > 0 else 0
                    headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after is not None else {}
                    self._error(429, "TOOMANYREQUESTS", "You have reached your pull rate limit.", headers)
                    return
                digest = "sha256:" + "0" * 64 if behaviour.lie_about_digest else MANIFEST_DIGEST
                self._send(200, MANIFEST, {"Content-Type": "application/vnd.oci.image.manifest.v1+json",
                                           "Docker-Content-Digest": digest})
            elif self.path == f"/v2/{REPOSITORY}/blobs/{CONFIG_DIGEST}":
                self._send(200, CONFIG, {"Content-Type": "application/octet-stream"})
            else:
                self._error(404, "NAME_UNKNOWN", "repository name not known to registry")

    return Handler
