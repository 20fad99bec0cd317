"""The demo's private registries: an ECR repository and a Docker Hub/NGC-style registry with a user.

A second docker-registry holds their content; the local cloud serves it through its registry
fronts (they check its ECR tokens), so this starts after the cloud. The user's password is made
here, handed to the cloud over loopback HTTP and stored in the local cloud's Secrets Manager: the
DAGs find it there through the secret's ARN, as in AWS. It is never written to a file or a log.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import requests

from devstack.registry import Registry
from devstack.stack.layout import REGION, Layout, say
from devstack.stack.provision import aws

ACCOUNT = "123456789012"  # the local cloud's default account (moto's)
ECR_REPOSITORY = "ml-cache-demo/tools"
PRIVATE_REPOSITORY = "private/ml-cache-demo/large"
SECRET_NAME = "ml-container-cache/private-registry"  # noqa: S105 - the secret's name, not its value
USER = "ml-cache-demo"


@dataclass(frozen=True)
class PrivateRegistries:
    """Pinned refs of the private images and the settings that reach them."""

    refs: dict[str, str]  # {"ecr": ..., "private": ...}
    credentials: dict[str, dict[str, str]]  # the settings' aws.registry_credentials (exact hosts)
    endpoints: dict[str, str]  # host -> http://127.0.0.1:port


def start(layout: Layout) -> PrivateRegistries:
    """Backend, fronts in the running cloud, the ECR repository and the secret; images pushed."""
    from devstack.demo_images import DEMO_IMAGES, ECR_DEMO_IMAGE, build_layout, push_layout

    Registry(layout.home / "registry-private" / "storage", int(layout.private_backend.rsplit(":", 1)[1]),
             work_dir=layout.home / "registry-private", pid_file=layout.pid_file("registry-private")).start()
    password = secrets.token_urlsafe(24)
    ecr_front = _front(layout, {"kind": "ecr", "account": ACCOUNT, "region": REGION, "port": layout.ecr_front_port})
    private_front = _front(layout, {"kind": "bearer", "users": {USER: password}, "port": layout.private_front_port})
    aws(layout, "ecr").create_repository(repositoryName=ECR_REPOSITORY)
    secret_arn = aws(layout, "secretsmanager").create_secret(
        Name=SECRET_NAME, SecretString=json.dumps({"username": USER, "password": password}))["ARN"]
    cache = layout.home / "cache"
    ecr_digest = push_layout(build_layout(ECR_DEMO_IMAGE, cache), ECR_DEMO_IMAGE, layout.private_backend,
                             ECR_REPOSITORY)
    large = DEMO_IMAGES["large"]
    private_digest = push_layout(build_layout(large, cache), large, layout.private_backend, PRIVATE_REPOSITORY)
    say(f"private registries: ECR {ecr_front['host']} and {private_front['host']} (user {USER}, password in "
        f"Secrets Manager {SECRET_NAME}), served through the local cloud")
    return PrivateRegistries(
        refs={"ecr": f"{ecr_front['host']}/{ECR_REPOSITORY}:{ECR_DEMO_IMAGE.tag}@{ecr_digest}",
              "private": f"{private_front['host']}/{PRIVATE_REPOSITORY}:{large.tag}@{private_digest}"},
        credentials={ecr_front["host"]: {"source": "ecr"},
                     private_front["host"]: {"source": "secretsmanager", "secret_arn": secret_arn}},
        endpoints={front["host"]: front["endpoint"] for front in (ecr_front, private_front)},
    )


def _front(layout: Layout, request: dict[str, Any]) -> dict[str, str]:
    """Ask the local cloud to start a registry front in front of the private backend."""
    answer = requests.post(f"{layout.endpoint}/_devstack/registries", timeout=30,
                           json={**request, "backend": layout.private_backend})
    if answer.status_code != 200:
        raise SystemExit(f"the local cloud could not start a {request['kind']} registry front: {answer.text}")
    return answer.json()
