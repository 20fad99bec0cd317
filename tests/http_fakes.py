"""Answers for the tests' fake HTTP services (a BaseHTTPRequestHandler playing an API at the protocol level)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


def send_bytes(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
    """One complete response: status, type, length, body."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def send_json(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    send_bytes(handler, status, json.dumps(body).encode(), "application/json")
