"""The ECR-style registry front: Basic auth with tokens the local cloud's ECR issued, ECR's answers.

Real parts: the devstack server (moto + extension), a docker-registry backend, skopeo.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

import boto3
import pytest
import requests

from devstack import registries
from devstack.moto_ext.ecr import models

MANIFEST_TYPES = ", ".join(["application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
                            "application/vnd.docker.distribution.manifest.v2+json"])


def _token(cloud_endpoint: str, region: str, **credentials: str) -> str:
    ecr = boto3.client("ecr", region_name=region, endpoint_url=cloud_endpoint,
                       **(credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}))
    encoded = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    return base64.b64decode(encoded).decode().partition(":")[2]


def _manifest(ecr_registry, password: str | None, repository: str | None = None, reference: str | None = None
              ) -> requests.Response:
    repository = repository or ecr_registry.repository
    reference = reference or ecr_registry.image.rsplit("@", 1)[1]
    auth = ("AWS", password) if password is not None else None
    return requests.get(f"{ecr_registry.endpoint}/v2/{repository}/manifests/{reference}", auth=auth,
                        headers={"Accept": MANIFEST_TYPES}, timeout=10)


def _error(answer: requests.Response) -> dict:
    return answer.json()["errors"][0]


def test_without_credentials_it_challenges_for_basic_auth_like_ecr(ecr_registry) -> None:
    answer = requests.get(f"{ecr_registry.endpoint}/v2/", timeout=10)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == (
        f'Basic realm="https://{ecr_registry.host}/",service="ecr.amazonaws.com"')
    assert _manifest(ecr_registry, None).status_code == 401


def test_a_fresh_token_pulls_the_manifest_by_digest(ecr_registry) -> None:
    answer = _manifest(ecr_registry, _token(ecr_registry.cloud_endpoint, ecr_registry.region))
    assert answer.status_code == 200, answer.text
    assert answer.headers["Docker-Content-Digest"] == ecr_registry.image.rsplit("@", 1)[1]


def test_an_expired_token_gets_ecrs_expiry_message(ecr_registry, registry_faults) -> None:
    registry_faults(ecr_token_seconds=0.3)
    password = _token(ecr_registry.cloud_endpoint, ecr_registry.region)
    time.sleep(0.5)
    answer = _manifest(ecr_registry, password)
    assert answer.status_code == 403
    assert _error(answer) == {"code": "DENIED", "message": models.EXPIRED, "detail": None}


def test_a_token_from_another_region_is_refused(ecr_registry) -> None:
    answer = _manifest(ecr_registry, _token(ecr_registry.cloud_endpoint, "eu-west-1"))
    assert answer.status_code == 403 and _error(answer)["message"] == models.OTHER_REGION


def test_another_accounts_token_is_denied_until_the_repository_policy_allows_it(ecr_registry) -> None:
    sts = boto3.client("sts", region_name=ecr_registry.region, endpoint_url=ecr_registry.cloud_endpoint)
    credentials = sts.assume_role(RoleArn="arn:aws:iam::210987654321:role/puller",
                                  RoleSessionName="puller")["Credentials"]
    password = _token(ecr_registry.cloud_endpoint, ecr_registry.region,
                      aws_access_key_id=credentials["AccessKeyId"],
                      aws_secret_access_key=credentials["SecretAccessKey"],
                      aws_session_token=credentials["SessionToken"])
    answer = _manifest(ecr_registry, password)
    assert answer.status_code == 403
    assert "arn:aws:iam::210987654321:root is not authorized to perform: ecr:BatchGetImage" in _error(answer)["message"]
    ecr = boto3.client("ecr", region_name=ecr_registry.region, endpoint_url=ecr_registry.cloud_endpoint)
    ecr.set_repository_policy(repositoryName=ecr_registry.repository, policyText=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Sid": "pull", "Effect": "Allow",
                                                 "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
                                                 "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]}]}))
    try:
        assert _manifest(ecr_registry, password).status_code == 200
    finally:
        ecr.delete_repository_policy(repositoryName=ecr_registry.repository)


def test_a_repository_not_created_in_ecr_is_name_unknown(ecr_registry) -> None:
    answer = _manifest(ecr_registry, _token(ecr_registry.cloud_endpoint, ecr_registry.region),
                       repository="ml-cache-test/absent", reference="1.0")
    assert answer.status_code == 404
    assert _error(answer) == {"code": "NAME_UNKNOWN", "detail": None, "message": (
        "The repository with name 'ml-cache-test/absent' does not exist in the registry with id '123456789012'")}


def test_429_fault_answers_the_next_manifest_requests_with_retry_after(ecr_registry, registry_faults) -> None:
    password = _token(ecr_registry.cloud_endpoint, ecr_registry.region)
    registry_faults(registry_429_manifests=2, registry_retry_after_seconds=3)
    first, second = _manifest(ecr_registry, password), _manifest(ecr_registry, password)
    assert [first.status_code, second.status_code] == [429, 429]
    assert first.headers["Retry-After"] == "3" and _error(first)["code"] == "TOOMANYREQUESTS"
    assert _manifest(ecr_registry, password).status_code == 200


def test_pushes_are_refused_the_front_serves_pulls(ecr_registry) -> None:
    answer = requests.post(f"{ecr_registry.endpoint}/v2/{ecr_registry.repository}/blobs/uploads/",
                           auth=("AWS", _token(ecr_registry.cloud_endpoint, ecr_registry.region)), timeout=10)
    assert answer.status_code == 405 and _error(answer)["code"] == "UNSUPPORTED"


def test_skopeo_copies_the_image_through_the_endpoint_mapping(ecr_registry, tmp_path: Path) -> None:
    """The ECR host cannot resolve here: registries.conf maps it to the front, as hosts.toml does for containerd."""
    (tmp_path / "registries.conf").write_text(
        f'[[registry]]\nprefix = "{ecr_registry.host}"\nlocation = "{ecr_registry.host}"\n'
        f'[[registry.mirror]]\nlocation = "{ecr_registry.endpoint.removeprefix("http://")}"\ninsecure = true\n')
    auth = base64.b64encode(f"AWS:{_token(ecr_registry.cloud_endpoint, ecr_registry.region)}".encode()).decode()
    authfile = tmp_path / "auth.json"
    authfile.touch(mode=0o600)
    authfile.write_text(json.dumps({"auths": {ecr_registry.host: {"auth": auth},
                                              ecr_registry.endpoint.removeprefix("http://"): {"auth": auth}}}))
    name, digest = ecr_registry.image.split("@")
    proc = subprocess.run(["skopeo", "--registries-conf", str(tmp_path / "registries.conf"), "copy", "--quiet",
                           "--authfile", str(authfile), f"docker://{name.rsplit(':', 1)[0]}@{digest}",
                           f"oci:{tmp_path / 'copy'}:pulled"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    index = json.loads((tmp_path / "copy" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest


def test_the_local_cloud_starts_fronts_over_http_and_lists_them(ecr_registry, registry_backend) -> None:
    created = requests.post(f"{ecr_registry.cloud_endpoint}/_devstack/registries", timeout=10, json={
        "kind": "ecr", "account": "123456789012", "region": "ap-south-1", "backend": registry_backend})
    try:
        assert created.status_code == 200, created.text
        assert created.json()["host"] == "123456789012.dkr.ecr.ap-south-1.amazonaws.com"
        listed = requests.get(f"{ecr_registry.cloud_endpoint}/_devstack/registries", timeout=10).json()
        assert {f["host"] for f in listed} >= {ecr_registry.host, created.json()["host"]}
        again = requests.post(f"{ecr_registry.cloud_endpoint}/_devstack/registries", timeout=10, json={
            "kind": "ecr", "account": "123456789012", "region": "ap-south-1", "backend": registry_backend})
        assert again.status_code == 400 and "already runs" in again.json()["error"]
        bad = requests.post(f"{ecr_registry.cloud_endpoint}/_devstack/registries", timeout=10, json={
            "kind": "ecr", "account": "12", "region": "ap-south-1", "backend": registry_backend})
        assert bad.status_code == 400 and "not an ECR registry host" in bad.json()["error"]
    finally:
        registries.stop("123456789012.dkr.ecr.ap-south-1.amazonaws.com")
    assert registries.find("123456789012.dkr.ecr.ap-south-1.amazonaws.com") is None


@pytest.mark.parametrize("header", ["Basic !!!", "Basic " + base64.b64encode(b"admin:x").decode(), "Bearer x"])
def test_anything_but_user_aws_is_not_authorized(ecr_registry, header: str) -> None:
    answer = requests.get(f"{ecr_registry.endpoint}/v2/", headers={"Authorization": header}, timeout=10)
    assert answer.status_code == 401 and "WWW-Authenticate" in answer.headers
