"""The Docker Hub/NGC-style registry front: the bearer token flow, private namespaces, rate limits.

Real parts: a docker-registry backend, skopeo; HTTP spoken with requests as a client would.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import boto3
import requests

from devstack import sandbox

MANIFEST_TYPES = ", ".join(["application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json"])


def _parts(ref: str) -> tuple[str, str]:
    name, digest = ref.split("@")
    return name.split("/", 1)[1].rsplit(":", 1)[0], digest


def _token(registry, repository: str, auth: tuple[str, str] | None = None) -> requests.Response:
    return requests.get(f"{registry.endpoint}/token", auth=auth, timeout=10,
                        params={"service": "devstack-registry", "scope": f"repository:{repository}:pull"})


def _manifest(registry, repository: str, digest: str, token: str | None) -> requests.Response:
    headers = {"Accept": MANIFEST_TYPES, **({"Authorization": f"Bearer {token}"} if token else {})}
    return requests.get(f"{registry.endpoint}/v2/{repository}/manifests/{digest}", headers=headers, timeout=10)


def test_without_a_token_it_challenges_with_the_token_realm_and_scope(private_registry) -> None:
    repository, digest = _parts(private_registry.image)
    answer = _manifest(private_registry, repository, digest, None)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == (
        f'Bearer realm="{private_registry.endpoint}/token",service="devstack-registry",'
        f'scope="repository:{repository}:pull"')


def test_an_anonymous_token_pulls_a_public_repository(private_registry) -> None:
    repository, digest = _parts(private_registry.public_image)
    issued = _token(private_registry, repository)
    assert issued.status_code == 200
    document = issued.json()
    assert document["token"] == document["access_token"] and document["expires_in"] == 300
    answer = _manifest(private_registry, repository, digest, document["token"])
    assert answer.status_code == 200 and answer.headers["Docker-Content-Digest"] == digest


def test_an_anonymous_token_does_not_open_a_private_namespace(private_registry) -> None:
    repository, digest = _parts(private_registry.image)
    answer = _manifest(private_registry, repository, digest, _token(private_registry, repository).json()["token"])
    assert answer.status_code == 401
    assert 'error="insufficient_scope"' in answer.headers["WWW-Authenticate"]
    assert answer.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_the_users_token_pulls_the_private_image_and_its_blobs(private_registry) -> None:
    repository, digest = _parts(private_registry.image)
    token = _token(private_registry, repository, (private_registry.username, private_registry.password)).json()["token"]
    manifest = _manifest(private_registry, repository, digest, token)
    assert manifest.status_code == 200
    layer = manifest.json()["layers"][0]
    blob = requests.get(f"{private_registry.endpoint}/v2/{repository}/blobs/{layer['digest']}", timeout=30,
                        headers={"Authorization": f"Bearer {token}"})
    assert blob.status_code == 200 and len(blob.content) == layer["size"]
    other, _ = _parts(private_registry.public_image)
    assert _manifest(private_registry, other, digest, token).status_code == 401  # the token is for its scope only


def test_a_wrong_password_is_refused_at_the_token_endpoint(private_registry) -> None:
    repository, _ = _parts(private_registry.image)
    answer = _token(private_registry, repository, (private_registry.username, "not-the-password"))
    assert answer.status_code == 401
    assert answer.json() == {"details": "incorrect username or password"}
    assert "token" not in answer.text.replace("details", "")


def test_containerds_oauth_post_gets_a_token_too(private_registry) -> None:
    repository, digest = _parts(private_registry.image)
    answer = requests.post(f"{private_registry.endpoint}/token", timeout=10, data={
        "grant_type": "password", "service": "devstack-registry", "client_id": "containerd-client",
        "scope": f"repository:{repository}:pull", "username": private_registry.username,
        "password": private_registry.password})
    assert answer.status_code == 200
    assert _manifest(private_registry, repository, digest, answer.json()["access_token"]).status_code == 200


def test_429_fault_hits_manifests_only_with_retry_after(private_registry, registry_faults) -> None:
    repository, digest = _parts(private_registry.public_image)
    token = _token(private_registry, repository).json()["token"]
    registry_faults(registry_429_manifests=1, registry_retry_after_seconds=7)
    limited = _manifest(private_registry, repository, digest, token)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert limited.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert _manifest(private_registry, repository, digest, token).status_code == 200


def test_skopeo_pulls_the_private_image_with_the_users_credentials(private_registry, tmp_path: Path) -> None:
    auth = base64.b64encode(f"{private_registry.username}:{private_registry.password}".encode()).decode()
    authfile = tmp_path / "auth.json"
    authfile.touch(mode=0o600)
    authfile.write_text(json.dumps({"auths": {private_registry.host: {"auth": auth}}}))
    name, digest = private_registry.image.split("@")
    source = f"docker://{name.rsplit(':', 1)[0]}@{digest}"
    pulled = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", "--authfile", str(authfile), source],
                            capture_output=True, text=True, timeout=60, check=False)
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["layers"]
    anonymous = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", "--no-creds", source],
                               capture_output=True, text=True, timeout=60, check=False)
    assert anonymous.returncode != 0
    assert re.search(r"unauthorized|authentication required", anonymous.stderr, re.IGNORECASE), anonymous.stderr


def test_the_login_in_secrets_manager_gets_a_token_for_the_private_image(private_registry,
                                                                          private_registry_secret) -> None:
    arn = private_registry_secret("eu-west-1")
    assert private_registry_secret("eu-west-1") == arn and ":eu-west-1:" in arn
    client = boto3.client("secretsmanager", region_name="eu-west-1", endpoint_url=sandbox.endpoint())
    login = json.loads(client.get_secret_value(SecretId=arn)["SecretString"])
    repository, digest = _parts(private_registry.image)
    token = _token(private_registry, repository, (login["username"], login["password"])).json()["token"]
    assert _manifest(private_registry, repository, digest, token).status_code == 200
