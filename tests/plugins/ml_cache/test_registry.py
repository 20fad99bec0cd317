"""The registry model and rules: ECR hosts, credential precedence, endpoints, pins, volume size, manifest checks."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from ml_cache.registry import (
    DOCKER_MANIFEST_LIST,
    GIB,
    OCI_MANIFEST,
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
    verified_digest,
    volume_size_gib,
)

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
ECR = {"source": "ecr"}
SECRET = {"source": "secretsmanager", "secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ngc-AbCdEf"}
PARAMETER = {"source": "ssm_secure_parameter", "parameter_name": "/ml-cache/registry/hub"}


def _image(ref: str = "nvcr.io/nvidia/pytorch:24.05-py3", digest: str = DIGEST, size: int = 0) -> ResolvedImage:
    return ResolvedImage(ref=ref, digest=digest, platform_digest=OTHER, platform="linux/amd64",
                         compressed_bytes=size, authenticated="anonymous")


# --- ECR host rule (https://docs.aws.amazon.com/AmazonECR/latest/userguide/Registries.html) ---------

@pytest.mark.parametrize(("host", "expected"), [
    ("123456789012.dkr.ecr.us-west-2.amazonaws.com", ("123456789012", "us-west-2")),
    ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", ("123456789012", "us-gov-west-1")),
    ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", ("123456789012", "cn-north-1")),
    ("123456789012.DKR.ECR.eu-west-1.AMAZONAWS.COM", ("123456789012", "eu-west-1")),
])
def test_ecr_hosts_name_their_account_and_region(host: str, expected: tuple[str, str]) -> None:
    assert ecr_registry(host) == expected


@pytest.mark.parametrize("host", [
    "12345678901.dkr.ecr.us-west-2.amazonaws.com",  # 11 digits
    "123456789012.dkr.ecr.us-west-2.amazonaws.com.evil.com",
    "123456789012.dkr.ecr.us-west-2.amazonaws.com:5000",
    "public.ecr.aws",
    "nvcr.io",
])
def test_other_hosts_are_not_ecr(host: str) -> None:
    assert ecr_registry(host) is None


# --- credential and endpoint choice -----------------------------------------------------------

def test_the_exact_host_wins_over_a_pattern_listed_before_it() -> None:
    credentials = {"*.dkr.ecr.*.amazonaws.com": ECR, "123456789012.dkr.ecr.us-east-1.amazonaws.com": PARAMETER}
    assert credential_for("123456789012.dkr.ecr.us-east-1.amazonaws.com", credentials) == PARAMETER
    assert credential_for("210987654321.dkr.ecr.eu-west-1.amazonaws.com", credentials) == ECR


def test_the_first_matching_pattern_in_order_wins() -> None:
    credentials = {"*.example.com": PARAMETER, "registry.*.com": SECRET}
    assert credential_for("registry.example.com", credentials) == PARAMETER
    assert credential_for("registry.other.com", credentials) == SECRET


def test_patterns_match_one_label_per_star_and_the_port() -> None:
    credentials = {"*.example.com": SECRET}
    assert credential_for("a.b.example.com", credentials) == {"source": "anonymous"}
    assert credential_for("a.example.com:5000", credentials) == {"source": "anonymous"}
    assert credential_for("A.Example.com", {"a.example.com": SECRET}) == SECRET


def test_no_entry_means_anonymous() -> None:
    assert credential_for("ghcr.io", {"nvcr.io": SECRET}) == {"source": "anonymous"}


def test_endpoints_map_hosts_else_https_and_docker_hub_api_host() -> None:
    endpoints = {"nvcr.io": "https://mirror.example.com", "127.0.0.1:5000": "http://127.0.0.1:5000"}
    assert endpoint_for("nvcr.io", endpoints) == "https://mirror.example.com"
    assert endpoint_for("127.0.0.1:5000", endpoints) == "http://127.0.0.1:5000"
    assert endpoint_for("ghcr.io", endpoints) == "https://ghcr.io"
    assert endpoint_for("docker.io", {}) == "https://registry-1.docker.io"


# --- ResolvedImage --------------------------------------------------------------------------

def test_pinned_keeps_the_tag_and_adds_the_digest() -> None:
    assert _image().pinned == f"nvcr.io/nvidia/pytorch:24.05-py3@{DIGEST}"
    assert _image("busybox").pinned == f"docker.io/library/busybox:latest@{DIGEST}"
    assert _image(f"ghcr.io/org/app@{DIGEST}").pinned == f"ghcr.io/org/app@{DIGEST}"


def test_a_ref_pinned_by_digest_must_resolve_to_that_digest() -> None:
    with pytest.raises(ValidationError, match="pinned by digest but resolved to"):
        _image(f"ghcr.io/org/app:1@{DIGEST}", digest=OTHER)
    assert _image(f"ghcr.io/org/app:1@{DIGEST}").pinned == f"ghcr.io/org/app:1@{DIGEST}"


def test_resolved_image_is_frozen_and_strict() -> None:
    image = _image()
    with pytest.raises(ValidationError):
        image.digest = OTHER  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        ResolvedImage(**image.model_dump(), note="x")
    with pytest.raises(ValidationError, match="authenticated"):
        ResolvedImage(**{**image.model_dump(), "authenticated": "password"})


# --- volume size ----------------------------------------------------------------------------

def test_volume_holds_pytorch_compressed_and_unpacked_with_headroom() -> None:
    pytorch = _image(size=9_500_000_000)  # 9.5 GB compressed, 20.4 GB on disk unpacked (README)
    measured_need_gib = (9.5e9 + 20.4e9) / GIB
    size = volume_size_gib([pytorch])
    assert size == 37
    assert size >= measured_need_gib * 1.2


def test_volume_size_adds_images_and_is_at_least_one_gib() -> None:
    assert volume_size_gib([]) == 1
    assert volume_size_gib([_image(size=1)]) == 2  # a byte still needs the filesystem's allowance
    one = volume_size_gib([_image(size=4 * GIB)])
    assert volume_size_gib([_image(size=4 * GIB), _image(size=4 * GIB)]) > one


# --- failures ------------------------------------------------------------------------------

def test_resolution_failure_names_every_image_and_reason() -> None:
    error = ImageResolutionFailed([("nvcr.io/nvidia/pytorch:1", "unauthorized", "HTTP 401: token expired"),
                                   ("ghcr.io/org/app:2", "no such platform", "")])
    assert error.failures[1] == ("ghcr.io/org/app:2", "no such platform", "")
    assert str(error) == ("2 image(s) could not be resolved: nvcr.io/nvidia/pytorch:1: unauthorized "
                          "(HTTP 401: token expired); ghcr.io/org/app:2: no such platform")


def test_resolution_failure_refuses_unknown_reasons_and_empty_lists() -> None:
    with pytest.raises(ValueError, match="'gone'"):
        ImageResolutionFailed([("a.io/b:1", "gone", "")])
    with pytest.raises(ValueError, match="needs failures"):
        ImageResolutionFailed([])


# --- manifest checks -----------------------------------------------------------------------

def test_digest_is_the_content_hash_checked_against_header_and_pin() -> None:
    body = b'{"schemaVersion":2}'
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    assert verified_digest(body, None, None) == digest == verified_digest(body, digest, digest)
    sha512 = "sha512:" + hashlib.sha512(body).hexdigest()
    assert verified_digest(body, digest, sha512) == sha512
    with pytest.raises(ResolutionError, match="the registry says") as lie:
        verified_digest(body, OTHER, None)
    with pytest.raises(ResolutionError, match=f"asked for {OTHER}") as mismatch:
        verified_digest(body, None, OTHER)
    assert lie.value.reason == mismatch.value.reason == "invalid manifest"


def test_manifest_kind_from_media_type_or_shape() -> None:
    assert manifest_kind({"mediaType": DOCKER_MANIFEST_LIST, "manifests": []}, "") == "index"
    assert manifest_kind({"manifests": []}, "") == "index"
    assert manifest_kind({"config": {}, "layers": []}, OCI_MANIFEST + "; charset=utf-8") == "manifest"
    with pytest.raises(ResolutionError, match="prettyjws"):
        manifest_kind({"schemaVersion": 1}, "application/vnd.docker.distribution.manifest.v1+prettyjws")
    with pytest.raises(ResolutionError, match="not a JSON object"):
        json_object(b"[]", "manifest")


@pytest.mark.parametrize(("wanted", "candidate", "matches"), [
    ("linux/amd64", {"os": "linux", "architecture": "amd64"}, True),
    ("linux/arm64", {"os": "linux", "architecture": "arm64", "variant": "v8"}, True),
    ("linux/arm64", {"os": "linux", "architecture": "arm64"}, True),
    ("linux/arm64/v8", {"os": "linux", "architecture": "arm64"}, True),
    ("linux/arm/v7", {"os": "linux", "architecture": "arm", "variant": "v6"}, False),
    ("linux/amd64", {"os": "windows", "architecture": "amd64"}, False),
    ("linux/amd64", {"os": "unknown", "architecture": "unknown"}, False),
])
def test_platform_matching_like_containerd(wanted: str, candidate: dict, matches: bool) -> None:
    assert platform_matches(wanted, candidate) is matches


def test_index_gives_the_first_entry_of_the_platform_else_says_what_it_offers() -> None:
    index = {"manifests": [
        {"digest": "sha256:att", "platform": {"os": "unknown", "architecture": "unknown"}},
        {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
    ]}
    assert platform_descriptor(index, "linux/arm64")["digest"] == "sha256:arm"
    with pytest.raises(ResolutionError, match="offers unknown/unknown, linux/arm64/v8, linux/amd64, not linux/s390x") \
            as error:
        platform_descriptor(index, "linux/s390x")
    assert error.value.reason == "no such platform"


def test_compressed_bytes_is_config_plus_layers() -> None:
    assert compressed_bytes({"config": {"size": 100}, "layers": [{"size": 1000}, {"size": 20}]}) == 1120
    with pytest.raises(ResolutionError, match="no valid size"):
        compressed_bytes({"config": {"size": 1}, "layers": [{"size": -1}]})


def test_only_failures_that_waiting_cannot_cure_are_permanent():
    from ml_cache.registry import FAILURE_REASONS, PERMANENT_REASONS

    assert ImageResolutionFailed([("a/b:1", "not found", ""), ("a/c:1", "unauthorized", "")]).permanent
    assert not ImageResolutionFailed([("a/b:1", "not found", ""), ("a/c:1", "rate-limited", "")]).permanent
    assert set(FAILURE_REASONS) - PERMANENT_REASONS == {"rate-limited", "unreachable"}
