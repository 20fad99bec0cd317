"""Resolve image references at their registries before any instance is launched (issue 8).

Library: oras-py (`oras`, the ORAS project's Python SDK). It does the distribution auth dance
that Docker Hub, GHCR and NGC need: a bearer token from the realm named in `WWW-Authenticate`,
asked with the basic credential for a private repository or anonymously, refreshed once on 403.
What we add around it, and why:
- its retry decorator sleeps 2 + 3**n on any exception and ignores 429 `Retry-After`: we call the
  undecorated request and retry ourselves (bounded attempts, Retry-After capped, else backoff);
- its token backend takes a `Basic` challenge (htpasswd registries, ECR) for a token realm:
  `_ChallengeAuth` answers those with the basic credential;
- its ECR backend asks boto3's default session for the default registry: ECR tokens come from the
  Amazon provider's EcrHook on our connection, for the account and region the host names;
- it keeps one bearer token whatever the repository's scope, so every image gets a fresh client;
- it would read ~/.docker/config.json: we never call the methods that do, credentials come only
  from the configured sources (build_spec.schema.json $defs/credential), fetched just in time.
"""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import oras.auth.utils
import oras.provider
import requests
from airflow.providers.amazon.aws.hooks.ecr import EcrHook
from airflow.providers.amazon.aws.hooks.secrets_manager import SecretsManagerHook
from airflow.providers.amazon.aws.hooks.ssm import SsmHook
from airflow.providers.common.compat.sdk import BaseHook
from airflow.sdk.log import mask_secret
from botocore.exceptions import BotoCoreError, ClientError
from oras.auth.token import TokenAuth
from requests.adapters import HTTPAdapter

from ml_cache.images import parse_reference
from ml_cache.registry import (
    ACCEPT_MANIFESTS,
    DETAIL_MAX,
    ImageResolutionFailed,
    ResolutionError,
    ResolvedImage,
    compressed_bytes,
    credential_for,
    ecr_registry,
    endpoint_for,
    json_object,
    manifest_kind,
    platform_descriptor,
    platform_matches,
    platform_name,
    verified_digest,
)

REQUEST_TIMEOUT_SECONDS = 30
_NOT_FOUND_CODES = {"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"}


class _NoBodiesWhileFetching(logging.Filter):
    """botocore logs every response body at DEBUG (botocore/parsers.py), a secret's value included:
    its records are dropped while this thread fetches a credential."""

    fetching = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.fetching, "active", False)


_BOTOCORE_BODIES = logging.getLogger("botocore.parsers")
if not any(isinstance(existing, _NoBodiesWhileFetching) for existing in _BOTOCORE_BODIES.filters):
    _BOTOCORE_BODIES.addFilter(_NoBodiesWhileFetching())


@contextmanager
def _response_bodies_unlogged() -> Iterator[None]:
    _NoBodiesWhileFetching.fetching.active = True
    try:
        yield
    finally:
        _NoBodiesWhileFetching.fetching.active = False


class _ChallengeAuth(TokenAuth):
    """oras's token backend that also answers `Basic` challenges (htpasswd registries, ECR)."""

    def __init__(self, basic_auth: str | None) -> None:
        super().__init__()
        # Set even when None: oras then asks the token realm without a basic header (anonymous pull).
        self._basic_auth = basic_auth

    def authenticate_request(self, original: requests.Response, headers: dict, refresh: bool = False
                             ) -> tuple[dict, bool]:
        if original.headers.get("Www-Authenticate", "").split(" ", 1)[0].lower() != "basic":
            return super().authenticate_request(original, headers, refresh)
        headers = dict(headers or {})
        if self._basic_auth:
            headers["Authorization"] = f"Basic {self._basic_auth}"
        # Without a credential, ask again: the registry's own 401 message then reaches the report.
        return headers, True


class _TimeoutAdapter(HTTPAdapter):
    """requests has no default timeout; a registry that accepts and never answers must not hang the task."""

    def send(self, request: requests.PreparedRequest, timeout: Any = None, **kwargs: Any) -> requests.Response:
        return super().send(request, timeout=timeout or REQUEST_TIMEOUT_SECONDS, **kwargs)


class _OrasClient(oras.provider.Registry):
    """oras's registry client for one image, reached at `endpoint` (plain HTTP for http://)."""

    # The library's retry decorator ignores Retry-After and sleeps 2 + 3**n: CacheRegistryHook retries.
    do_request = oras.provider.Registry.do_request.__wrapped__

    def __init__(self, endpoint: str, basic_auth: str | None) -> None:
        url = urlsplit(endpoint)
        super().__init__(hostname=url.netloc, insecure=url.scheme == "http")
        for prefix in ("http://", "https://"):
            self.session.mount(prefix, _TimeoutAdapter())
        self.auth = _ChallengeAuth(basic_auth)
        self.auth.session, self.auth.prefix, self.auth._tls_verify = self.session, self.prefix, True


class CacheRegistryHook(BaseHook):
    """Resolve refs to digests, platform manifests and compressed sizes, with the configured credentials.

    `credentials` maps hosts or host patterns to a credential ($defs/credential); `endpoints` maps a
    host to the URL its API is reached at. The credential is always chosen by the ref's own host.
    """

    def __init__(self, *, aws_conn_id: str | None, credentials: dict[str, dict], endpoints: dict[str, str],
                 max_attempts: int = 5, max_retry_after_seconds: float = 60) -> None:
        super().__init__()
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.aws_conn_id = aws_conn_id
        self.credentials = credentials
        self.endpoints = endpoints
        self.max_attempts = max_attempts
        self.max_retry_after_seconds = max_retry_after_seconds
        self._basic_auth: dict[str, str | None] = {}  # per host, for this hook's life only

    def resolve(self, ref: str, platform: str) -> ResolvedImage:
        """One image; raises ImageResolutionFailed naming it and the reason."""
        return self.resolve_all([ref], platform)[0]

    def resolve_all(self, refs: list[str], platform: str) -> list[ResolvedImage]:
        """Every image, in order; one ImageResolutionFailed lists all that failed."""
        resolved: list[ResolvedImage] = []
        failures: list[tuple[str, str, str]] = []
        for ref in refs:
            try:
                image = self._resolve(ref, platform)
            except ResolutionError as failure:
                self.log.error("%s: %s (%s)", ref, failure.reason, failure.detail)
                failures.append((ref, failure.reason, failure.detail))
                continue
            self.log.info("%s -> %s (%s manifest %s, %d compressed bytes, authenticated: %s)", ref, image.digest,
                          platform, image.platform_digest, image.compressed_bytes, image.authenticated)
            resolved.append(image)
        if failures:
            raise ImageResolutionFailed(failures)
        return resolved

    # --- one image -------------------------------------------------------------------------

    def _resolve(self, ref: str, platform: str) -> ResolvedImage:
        image = parse_reference(ref)
        credential = credential_for(image.registry, self.credentials)
        endpoint = endpoint_for(image.registry, self.endpoints).rstrip("/")
        client = _OrasClient(endpoint, self._credential(image.registry, credential))
        base = f"{endpoint}/v2/{image.repository}"
        kind, document, digest = self._manifest(client, base, image.digest or image.tag, image.digest)
        if kind == "index":
            descriptor = platform_descriptor(document, platform)
            kind, manifest, platform_digest = self._manifest(client, base, descriptor["digest"], descriptor["digest"])
            if kind != "manifest":
                raise ResolutionError("invalid manifest", f"the {platform} entry of the index is not an image manifest")
        else:
            manifest, platform_digest = document, digest
            self._check_config_platform(client, base, manifest, platform)
        return ResolvedImage(ref=ref, digest=digest, platform_digest=platform_digest, platform=platform,
                             compressed_bytes=compressed_bytes(manifest), authenticated=credential["source"])

    def _manifest(self, client: _OrasClient, base: str, reference: str, pinned: str | None
                  ) -> tuple[str, dict, str]:
        """The kind ("index" or "manifest"), document and verified digest of the manifest at `reference`."""
        response = self._get(client, f"{base}/manifests/{reference}", {"Accept": ACCEPT_MANIFESTS})
        digest = verified_digest(response.content, response.headers.get("Docker-Content-Digest"), pinned)
        document = json_object(response.content, "manifest")
        return manifest_kind(document, response.headers.get("Content-Type", "")), document, digest

    def _check_config_platform(self, client: _OrasClient, base: str, manifest: dict, platform: str) -> None:
        """A single-platform image: its config blob must name the platform."""
        config = manifest.get("config")
        if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
            raise ResolutionError("invalid manifest", "the manifest has no config descriptor")
        response = self._get(client, f"{base}/blobs/{config['digest']}", {})
        verified_digest(response.content, None, config["digest"])
        document = json_object(response.content, "image config")
        if not platform_matches(platform, document):
            raise ResolutionError("no such platform",
                                  f"a single-platform image for {platform_name(document)}, not {platform}")

    # --- HTTP with retries ------------------------------------------------------------------

    def _get(self, client: _OrasClient, url: str, headers: dict[str, str]) -> requests.Response:
        """GET through oras (auth), retrying 429 (Retry-After honoured), 5xx and connection errors."""
        attempt = 0
        while True:
            attempt += 1
            last_try = attempt >= self.max_attempts
            try:
                response = client.do_request(url, "GET", headers=dict(headers))
            except (requests.ConnectionError, requests.Timeout) as error:
                if last_try:
                    cause = getattr(error.args[0], "reason", error) if error.args else error  # urllib3's, shorter
                    raise ResolutionError("unreachable", f"{url} after {attempt} attempt(s): {cause}") from error
                delay = self._backoff(attempt)
            except ValueError as error:  # oras could not answer the challenge (the token service refused)
                raise ResolutionError("unauthorized", f"{url}: {error}") from error
            else:
                status = response.status_code
                if status != 429 and status < 500:
                    return _checked(response, url)
                if last_try:
                    reason = "rate-limited" if status == 429 else "unreachable"
                    raise ResolutionError(reason, f"{url}: HTTP {status} after {attempt} attempt(s): "
                                              f"{_registry_message(response)}")
                delay = self._retry_delay(response, attempt)
            self.log.info("Retrying %s in %.1f s (attempt %d of %d)", url, delay, attempt + 1, self.max_attempts)
            time.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        return min(2.0 ** (attempt - 1), self.max_retry_after_seconds)

    def _retry_delay(self, response: requests.Response, attempt: int) -> float:
        """Retry-After in seconds or as an HTTP date (RFC 9110 10.2.3), capped; else exponential backoff."""
        value = (response.headers.get("Retry-After") or "").strip()
        if value.isdigit():
            return min(float(value), self.max_retry_after_seconds)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return self._backoff(attempt)
        seconds = (when - datetime.now(UTC)).total_seconds()
        return min(max(seconds, 0.0), self.max_retry_after_seconds)

    # --- credentials, just in time ------------------------------------------------------------

    def _credential(self, host: str, credential: dict) -> str | None:
        """The base64 basic credential for `host` (None: anonymous), fetched once per hook and masked."""
        if host not in self._basic_auth:
            user_password = self._fetch(host, credential)
            if user_password is None:
                self._basic_auth[host] = None
            else:
                username, password = user_password
                encoded = oras.auth.utils.get_basic_auth(username, password)
                mask_secret(password)
                mask_secret(encoded)
                self._basic_auth[host] = encoded
        return self._basic_auth[host]

    def _fetch(self, host: str, credential: dict) -> tuple[str, str] | None:
        source = credential.get("source")
        try:
            with _response_bodies_unlogged():
                if source == "anonymous":
                    return None
                if source == "ecr":
                    return self._ecr_login(host)
                if source == "secretsmanager":
                    return self._secret_login(credential["secret_arn"])
                if source == "ssm_secure_parameter":
                    return self._parameter_login(credential["parameter_name"])
        except (ClientError, BotoCoreError) as error:
            raise ResolutionError("unauthorized", f"cannot read the {source} credential of {host}: {error}") from error
        raise ResolutionError("unauthorized", f"unknown credential source {source!r} for {host}")

    def _ecr_login(self, host: str) -> tuple[str, str]:
        registry = ecr_registry(host)
        if registry is None:
            raise ResolutionError("unauthorized", f"{host} is no ECR host (<account>.dkr.ecr.<region>.amazonaws.com)")
        account, region = registry
        token = EcrHook(aws_conn_id=self.aws_conn_id, region_name=region).get_temporary_credentials(
            registry_ids=[account])[0]
        return token.username, token.password

    def _secret_login(self, arn: str) -> tuple[str, str]:
        """A Secrets Manager secret holding {"username": ..., "password": ...} (region from its ARN)."""
        secret = SecretsManagerHook(aws_conn_id=self.aws_conn_id, region_name=arn.split(":")[3]).get_secret(arn)
        if isinstance(secret, bytes):
            secret = secret.decode(errors="replace")
        mask_secret(secret)
        try:
            login = json.loads(secret)
            username, password = login["username"], login["password"]
        except (ValueError, TypeError, KeyError):
            username = password = None
        if not isinstance(username, str) or not isinstance(password, str) or not username:
            raise ResolutionError("unauthorized", f"secret {arn} must be JSON with string fields username and password")
        return username, password

    def _parameter_login(self, name: str) -> tuple[str, str]:
        """An SSM SecureString parameter holding `username:password` (decrypted; the hook masks it)."""
        value = SsmHook(aws_conn_id=self.aws_conn_id).get_parameter_value(name)
        mask_secret(value)
        username, separator, password = value.partition(":")
        if not separator or not username:
            raise ResolutionError("unauthorized", f"parameter {name} must hold username:password")
        return username, password


# --- pure helpers -------------------------------------------------------------------------------

def _checked(response: requests.Response, url: str) -> requests.Response:
    """200, else the failure named by the registry's status and error codes (its message kept)."""
    if response.status_code == 200:
        return response
    message = _registry_message(response)
    codes = {error.get("code") for error in _registry_errors(response)}
    if response.status_code == 404 or codes & _NOT_FOUND_CODES:
        raise ResolutionError("not found", f"{url}: HTTP {response.status_code}: {message}")
    if response.status_code in (401, 403):
        raise ResolutionError("unauthorized", f"{url}: HTTP {response.status_code}: {message}")
    raise ResolutionError("invalid manifest", f"{url}: HTTP {response.status_code}: {message}")


def _registry_errors(response: requests.Response) -> list[dict]:
    """The distribution spec's error list ({"errors": [{"code", "message"}]}), empty when absent."""
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        return []
    return [error for error in errors if isinstance(error, dict)] if isinstance(errors, list) else []


def _registry_message(response: requests.Response) -> str:
    errors = _registry_errors(response)
    if errors:
        return "; ".join(f"{error.get('code')}: {error.get('message')}" for error in errors)
    return response.text.strip()[:DETAIL_MAX] or response.reason or "no message"
