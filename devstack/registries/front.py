"""A pull-only registry front on 127.0.0.1: auth as a real registry does it, content from a backend.

The backend is a plain docker-registry on another loopback port (seeded by pushing to it
directly). The front answers the distribution API's GET/HEAD requests: it asks its policy
(ECR-style Basic auth or Docker Hub-style bearer tokens) whether the request may pass, applies
the `registry_429_manifests` fault, then streams the backend's answer without buffering blobs.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from devstack import faults

CHUNK = 1024 * 1024
PATH = re.compile(r"^/v2/(?P<name>[a-z0-9._/-]+?)/(?P<kind>manifests|blobs|tags)/(?P<rest>.+)$")
FORWARDED_REQUEST_HEADERS = ("Accept", "Range", "If-None-Match")
FORWARDED_RESPONSE_HEADERS = ("Content-Type", "Content-Length", "Docker-Content-Digest", "Etag", "Content-Range",
                              "Accept-Ranges", "Docker-Distribution-Api-Version")


class Refused(Exception):
    """An answer instead of content: status, distribution error code, message, extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class Policy(Protocol):
    """Who may pull what; a policy may also answer its own routes (a token endpoint)."""

    kind: str

    def authorize(self, authorization: str | None, repository: str | None) -> None:
        """Return when the request may pass, raise Refused otherwise (repository None: GET /v2/)."""

    def own_route(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
                  body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        """An answer for a path the policy serves itself, or None."""


class Front:
    """One registry host on its own loopback port (0 = any), in front of `backend` (host:port)."""

    def __init__(self, policy: Policy, backend: str, port: int = 0, host: str | None = None) -> None:
        self.policy, self.backend = policy, backend
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = host or f"127.0.0.1:{self.port}"  # the registry host image refs name
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"registry-front-{self.port}",
                                       daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Front:
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread.is_alive():  # shutdown() of a server that never served would wait forever
            self.server.shutdown()
        self.server.server_close()

    def describe(self) -> dict[str, str]:
        return {"kind": self.policy.kind, "host": self.host, "endpoint": self.endpoint, "backend": self.backend}


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


def _handler(front: Front) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "devstack-registry-front"

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: request lines carry no secrets, but the pull logs would drown in them."""

        def do_GET(self) -> None:
            self.serve()

        def do_HEAD(self) -> None:
            self.serve()

        def do_POST(self) -> None:
            self.serve()

        def serve(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            own = front.policy.own_route(self.command, url.path, urllib.parse.parse_qs(url.query),
                                         dict(self.headers.items()), body)
            if own is not None:
                self.answer(*own)
                return
            if self.command not in ("GET", "HEAD"):
                self.refuse(Refused(405, "UNSUPPORTED", "this registry front serves pulls only"))
                return
            match = PATH.match(url.path)
            if url.path not in ("/v2", "/v2/") and match is None:
                self.refuse(Refused(404, "NOT_FOUND", f"no route {url.path}"))
                return
            try:
                front.policy.authorize(self.headers.get("Authorization"), match["name"] if match else None)
                if match and match["kind"] == "manifests" and faults.take_one("registry_429_manifests"):
                    retry_after = faults.delay("registry_retry_after_seconds")
                    raise Refused(429, "TOOMANYREQUESTS", "You have reached your pull rate limit.",
                                  {"Retry-After": str(max(0, round(retry_after)))})
            except Refused as refused:
                self.refuse(refused)
                return
            self.proxy(url)

        def refuse(self, refused: Refused) -> None:
            self.answer(refused.status, {"Content-Type": "application/json", **refused.headers},
                        error_body(refused.code, refused.message))

        def answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def proxy(self, url: urllib.parse.SplitResult) -> None:
            """The backend's answer, streamed chunk by chunk."""
            connection = http.client.HTTPConnection(front.backend, timeout=300)
            try:
                headers = {name: self.headers[name] for name in FORWARDED_REQUEST_HEADERS if self.headers.get(name)}
                target = url.path + (f"?{url.query}" if url.query else "")
                connection.request(self.command, target, headers=headers)
                answer = connection.getresponse()
                self.send_response(answer.status)
                for name in FORWARDED_RESPONSE_HEADERS:
                    if answer.getheader(name) is not None:
                        self.send_header(name, answer.getheader(name))
                if answer.getheader("Content-Length") is None:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                while self.command != "HEAD" and (chunk := answer.read(CHUNK)):
                    self.wfile.write(chunk)
            finally:
                connection.close()

    return Handler
