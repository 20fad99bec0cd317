"""The Docker Hub / NGC-style policy: the distribution token flow.

A request without a valid token gets 401 `WWW-Authenticate: Bearer realm=".../token",service=...,
scope=...` (https://distribution.github.io/distribution/spec/auth/token/). The token endpoint takes
GET with optional Basic user:password, or containerd's OAuth POST (grant_type=password)
(https://distribution.github.io/distribution/spec/auth/oauth/), and grants `pull` on public
repositories to anyone and on private ones (under a private prefix) to a known user only; a wrong
password is 401 there. Tokens live 300 s, like Docker Hub's.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass

from devstack.registries.front import Refused

TOKEN_SECONDS = 300


@dataclass(frozen=True)
class Grant:
    user: str | None
    repositories: frozenset[str]
    expires_at: float


class BearerPolicy:
    kind = "bearer"

    def __init__(self, users: dict[str, str], private_prefixes: tuple[str, ...] = ("private/",),
                 service: str = "devstack-registry") -> None:
        self.users = dict(users)
        self.private_prefixes = tuple(private_prefixes)
        self.service = service
        self.realm = ""  # set by the front's owner once the port is known
        self._grants: dict[str, Grant] = {}
        self._lock = threading.Lock()

    def is_private(self, repository: str) -> bool:
        return repository.startswith(self.private_prefixes)

    def challenge(self, repository: str | None, error: str | None = None) -> dict[str, str]:
        value = f'Bearer realm="{self.realm}",service="{self.service}"'
        if repository:
            value += f',scope="repository:{repository}:pull"'
        if error:
            value += f',error="{error}"'
        return {"WWW-Authenticate": value}

    def authorize(self, authorization: str | None, repository: str | None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        with self._lock:
            grant = self._grants.get(token) if scheme.lower() == "bearer" else None
        if grant is None:
            raise Refused(401, "UNAUTHORIZED", "authentication required", self.challenge(repository))
        if grant.expires_at <= time.time():
            raise Refused(401, "UNAUTHORIZED", "authentication required", self.challenge(repository, "invalid_token"))
        if repository is not None and repository not in grant.repositories:
            raise Refused(401, "UNAUTHORIZED", "authentication required",
                          self.challenge(repository, "insufficient_scope"))

    def own_route(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
                  body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        if path != "/token":
            return None
        if method == "POST":  # OAuth2 password grant, as containerd asks when it has a secret
            form = urllib.parse.parse_qs(body.decode())
            user = (form.get("username") or [None])[0]
            password = (form.get("password") or [""])[0]
            scopes = " ".join(form.get("scope", [])).split()
        else:
            user, password = self._basic(headers.get("Authorization") or headers.get("authorization"))
            scopes = " ".join(query.get("scope", [])).split()
        if user is not None and self.users.get(user) != password:
            return 401, {"Content-Type": "application/json"}, json.dumps(
                {"details": "incorrect username or password"}).encode()
        token = secrets.token_urlsafe(32)
        grant = Grant(user, frozenset(self._pullable(scopes, user)), time.time() + TOKEN_SECONDS)
        with self._lock:
            self._grants[token] = grant
        document = {"token": token, "access_token": token, "expires_in": TOKEN_SECONDS,
                    "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        return 200, {"Content-Type": "application/json"}, json.dumps(document).encode()

    def _pullable(self, scopes: list[str], user: str | None) -> list[str]:
        granted = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            repository, _, actions = rest.rpartition(":")
            if kind == "repository" and "pull" in actions.split(",") and (user or not self.is_private(repository)):
                granted.append(repository)
        return granted

    @staticmethod
    def _basic(authorization: str | None) -> tuple[str | None, str]:
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return None, ""
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""  # an unreadable header is a wrong password, not anonymous
        return user, password

