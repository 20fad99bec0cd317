"""ECR authorization tokens as AWS issues them, and the rules the registry front checks them by.

GetAuthorizationToken (https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetAuthorizationToken.html):
user `AWS`, a password of its own per call, `expiresAt` 12 hours later, `proxyEndpoint`
https://<registry>.dkr.ecr.<region>.amazonaws.com. The token carries the caller's IAM identity
and is used in the region it was issued in; expired, other-region and other-account tokens are
refused with 403 (https://docs.aws.amazon.com/AmazonECR/latest/userguide/common-errors-docker.html#error-403).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from devstack import clock, faults

TOKEN_SECONDS = 12 * 3600  # "The authorization token is valid for 12 hours." (API reference above)
HOST = re.compile(r"^(?P<account>[0-9]{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com$")
EXPIRED = "Your authorization token has expired. Reauthenticate and try again."
OTHER_REGION = "Your authorization token is invalid."


@dataclass(frozen=True)
class Token:
    """What AWS knows about one issued token: who asked, where, until when."""

    password: str
    account: str
    region: str
    expires_at: float

    def authorization_data(self, registry_id: str) -> dict[str, object]:
        encoded = base64.b64encode(f"AWS:{self.password}".encode()).decode()
        return {"authorizationToken": encoded, "expiresAt": datetime.fromtimestamp(self.expires_at, tz=UTC),
                "proxyEndpoint": f"https://{registry_id}.dkr.ecr.{self.region}.amazonaws.com"}


class Denied(Exception):
    """A request the registry refuses: HTTP status, distribution error code and ECR's message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


_lock = threading.Lock()
_tokens: dict[str, Token] = {}


def issue(account: str, region: str) -> Token:
    """A new token for this caller (account) in this region; lifetime from fault `ecr_token_seconds`."""
    token = Token(password=secrets.token_urlsafe(48), account=account, region=region,
                  expires_at=clock.time() + faults.delay("ecr_token_seconds"))
    with _lock:
        _tokens[token.password] = token
    return token


def reset() -> None:
    with _lock:
        _tokens.clear()


def split_host(host: str) -> tuple[str, str]:
    """(account, region) of an ECR registry host such as 123456789012.dkr.ecr.us-west-2.amazonaws.com."""
    match = HOST.match(host)
    if match is None:
        raise ValueError(f"not an ECR registry host (<account>.dkr.ecr.<region>.amazonaws.com): {host}")
    return match["account"], match["region"]


def check_pull(password: str, host: str, repository: str | None) -> Token:
    """The token behind `password` if it may pull `repository` from `host` (None: `GET /v2/`); else Denied."""
    account, region = split_host(host)
    with _lock:
        token = _tokens.get(password)
    if token is None:
        raise Denied(401, "DENIED", "Not Authorized")
    if token.expires_at <= clock.time():
        raise Denied(403, "DENIED", EXPIRED)
    if token.region != region:
        raise Denied(403, "DENIED", OTHER_REGION)
    if repository is None:
        return token
    policy = repository_policy(account, region, repository)  # raises NAME_UNKNOWN first, as ECR does
    if token.account != account and not policy_allows_pull(policy, token.account):
        raise Denied(403, "DENIED", f"User: arn:aws:iam::{token.account}:root is not authorized to perform: "
                     f"ecr:BatchGetImage on resource: arn:aws:ecr:{region}:{account}:repository/{repository} "
                     "because no resource-based policy allows the ecr:BatchGetImage action")
    return token


def repository_policy(account: str, region: str, repository: str) -> str | None:
    """The repository's policy text (None without one); NAME_UNKNOWN when moto's ECR has no such repository."""
    from moto.ecr.models import ecr_backends

    found = dict.get(dict.get(ecr_backends, account) or {}, region)
    repo = found.repositories.get(repository) if found is not None else None
    if repo is None:
        raise Denied(404, "NAME_UNKNOWN", f"The repository with name '{repository}' does not exist in the "
                     f"registry with id '{account}'")
    return getattr(repo, "policy", None)


def policy_allows_pull(policy: str | None, account: str) -> bool:
    """Whether a repository policy has an Allow statement for `account` (or *) covering ecr:BatchGetImage."""
    if not policy:
        return False
    statements = json.loads(policy).get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        if statement.get("Effect") != "Allow":
            continue
        principal = statement.get("Principal")
        principals = principal.get("AWS", []) if isinstance(principal, dict) else principal
        principals = [principals] if isinstance(principals, str) else principals or []
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if (any(p in ("*", account, f"arn:aws:iam::{account}:root") for p in principals)
                and any(a in ("*", "ecr:*", "ecr:BatchGetImage") for a in actions)):
            return True
    return False
