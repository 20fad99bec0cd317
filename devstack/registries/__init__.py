"""Private registries of the local cloud: ECR-style and Docker Hub/NGC-style fronts on loopback ports.

Each front serves one registry host (an ECR host name that cannot resolve here, or
127.0.0.1:<port> itself) and is reached through an endpoint mapping, host -> http://127.0.0.1:<port>,
as the DAG settings' `aws.registry_endpoints` and containerd's hosts.toml give it. The fronts run
in the local cloud's process (they check tokens its ECR issued); `POST /_devstack/registries`
starts one there. The kubelet stand-in pulls through them with the credentials a node would have.
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any

from devstack.registries.bearer import BearerPolicy
from devstack.registries.ecr import EcrPolicy
from devstack.registries.front import Front

_lock = threading.Lock()
_fronts: dict[str, Front] = {}


def start_ecr(account: str, region: str, backend: str, port: int = 0) -> Front:
    """The ECR registry <account>.dkr.ecr.<region>.amazonaws.com, content from `backend` (host:port)."""
    host = f"{account}.dkr.ecr.{region}.amazonaws.com"
    return _register(Front(EcrPolicy(host), backend, port, host=host))


def start_bearer(backend: str, users: dict[str, str], private_prefixes: tuple[str, ...] = ("private/",),
                 port: int = 0) -> Front:
    """A token-flow registry on 127.0.0.1:<port>; repositories under `private_prefixes` need a user."""
    policy = BearerPolicy(users, private_prefixes)
    front = Front(policy, backend, port)
    policy.realm = f"{front.endpoint}/token"
    return _register(front)


def _register(front: Front) -> Front:
    with _lock:
        if front.host in _fronts:
            front.stop()
            raise ValueError(f"a registry front for {front.host} already runs at {_fronts[front.host].endpoint}")
        _fronts[front.host] = front.start()
    return front


def find(host: str) -> Front | None:
    with _lock:
        return _fronts.get(host)


def endpoints() -> dict[str, str]:
    """host -> endpoint URL of every front: the `registry_endpoints` mapping."""
    with _lock:
        return {host: front.endpoint for host, front in _fronts.items()}


def stop(host: str) -> None:
    with _lock:
        front = _fronts.pop(host, None)
    if front is not None:
        front.stop()


def stop_all() -> None:
    for host in list(endpoints()):
        stop(host)


def route(method: str, body: dict[str, Any] | None) -> tuple[str, Any]:
    """`/_devstack/registries`: GET lists the fronts, POST starts one, DELETE stops them all."""
    if method == "GET":
        with _lock:
            return "200 OK", [front.describe() for front in _fronts.values()]
    if method == "DELETE":
        stop_all()
        return "200 OK", []
    if method != "POST":
        return "405 Method Not Allowed", {"error": f"{method} not allowed"}
    body = body or {}
    try:
        if body.get("kind") == "ecr":
            front = start_ecr(str(body["account"]), str(body["region"]), str(body["backend"]),
                              int(body.get("port", 0)))
        elif body.get("kind") == "bearer":
            front = start_bearer(str(body["backend"]), dict(body["users"]),
                                 tuple(body.get("private_prefixes", ("private/",))), int(body.get("port", 0)))
        else:
            return "400 Bad Request", {"error": 'kind must be "ecr" or "bearer"'}
    except (KeyError, TypeError, ValueError, OSError) as error:
        return "400 Bad Request", {"error": f"cannot start the registry front: {error!r}"}
    return "200 OK", front.describe()


def node_credentials(host: str, cloud_endpoint: str | None) -> tuple[str, str] | None:
    """(user, password) a node has for `host`, fetched when asked: an ECR token through kubelet's ECR
    credential provider (GetAuthorizationToken with the node's role), the node credential of a
    token-flow registry (kubelet's config.json); None for a registry without a front."""
    front = find(host)
    if front is None:
        return None
    if isinstance(front.policy, EcrPolicy):
        import boto3

        region = host.split(".")[3]
        ecr = boto3.client("ecr", region_name=region, endpoint_url=cloud_endpoint,
                           aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106 - local cloud
        token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        user, _, password = base64.b64decode(token).decode().partition(":")
        return user, password
    assert isinstance(front.policy, BearerPolicy)
    return next(iter(front.policy.users.items()), None)


def write_hosts_dir(directory: Path, host: str) -> Path | None:
    """containerd hosts.toml for `host` pointing at its front (`ctr --hosts-dir`); None without a front."""
    front = find(host)
    if front is None:
        return None
    target = Path(directory) / host
    target.mkdir(parents=True, exist_ok=True)
    (target / "hosts.toml").write_text(
        f'server = "https://{host}"\n\n[host."{front.endpoint}"]\n  capabilities = ["pull", "resolve"]\n')
    return Path(directory)
