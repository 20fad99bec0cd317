"""resolve_images' result: the volume sized for the resolved images, per-host references for the builder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml_cache.images import InvalidInputs
from ml_cache.registry import ResolvedImage, volume_size_gib
from ml_cache.resolution import ImageResolution, image_resolution
from ml_cache.settings import load_config, resolve_build_settings

GIB = 1024**3
ECR = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
NGC_SECRET = "arn:aws:secretsmanager:us-west-2:111122223333:secret:ngc-api-key-AbCdEf"


def resolved(ref: str, n: int, compressed: int, source: str = "anonymous") -> ResolvedImage:
    return ResolvedImage(ref=ref, digest="sha256:" + f"{n:x}" * 64, platform_digest="sha256:" + f"{n + 1:x}" * 64,
                         platform="linux/amd64", compressed_bytes=compressed, authenticated=source)


def settings(**build):
    config = load_config(str(Path(__file__).resolve().parents[3] / "plugins/ml_cache/defaults/ml_container_cache.yaml"))
    config["aws"]["registry_credentials"] = {"*.dkr.ecr.*.amazonaws.com": {"source": "ecr"},
                                             "nvcr.io": {"source": "secretsmanager", "secret_arn": NGC_SECRET}}
    config["aws"]["registry_endpoints"] = {ECR: "http://127.0.0.1:5001"}
    config["aws"]["subnet_ids"] = ["subnet-0123456789abcdef0"]
    config["build"]["allowed_registries"].append(ECR)
    config["build"]["images"] = [f"{ECR}/team/trainer:1.0", "nvcr.io/nvidia/pytorch:24.08-py3",
                                 "public.ecr.aws/docker/library/busybox:1.37"]
    return resolve_build_settings(config, build, region="us-west-2")


IMAGES = [resolved(f"{ECR}/team/trainer:1.0", 1, 2 * GIB, "ecr"),
          resolved("nvcr.io/nvidia/pytorch:24.08-py3", 3, 9 * GIB, "secretsmanager"),
          resolved("public.ecr.aws/docker/library/busybox:1.37", 5, 2 * 1024**2)]


def test_the_builder_gets_references_per_exact_host_and_never_a_secret():
    resolution = image_resolution(settings(), IMAGES)
    assert resolution.registry_credentials == {ECR: {"source": "ecr"},
                                               "nvcr.io": {"source": "secretsmanager", "secret_arn": NGC_SECRET}}
    assert resolution.registry_endpoints == {ECR: "http://127.0.0.1:5001"}
    assert resolution.pinned_images == [f"{ECR}/team/trainer:1.0@{IMAGES[0].digest}",
                                        f"nvcr.io/nvidia/pytorch:24.08-py3@{IMAGES[1].digest}",
                                        f"public.ecr.aws/docker/library/busybox:1.37@{IMAGES[2].digest}"]
    assert resolution.configured_ref(resolution.pinned_images[1]) == "nvcr.io/nvidia/pytorch:24.08-py3"


def test_an_empty_size_is_computed_from_the_images():
    resolution = image_resolution(settings(), IMAGES)
    assert resolution.volume_size_gib == volume_size_gib(IMAGES)
    assert resolution.volume_size_gib * GIB > 11 * GIB * 2  # blobs and unpacked layers both stay on the volume


def test_a_size_that_is_enough_is_kept_and_one_too_small_is_refused():
    needed = volume_size_gib(IMAGES)
    assert image_resolution(settings(volume_size_gib=needed + 50), IMAGES).volume_size_gib == needed + 50
    with pytest.raises(InvalidInputs, match=rf"volume_size_gib {needed - 1} is too small for these images: "
                                            rf"11,813,257,216 compressed bytes need at least {needed} GiB"):
        image_resolution(settings(volume_size_gib=needed - 1), IMAGES)


def test_iops_are_checked_against_the_computed_size():
    small = [resolved("public.ecr.aws/docker/library/busybox:1.37", 5, 2 * 1024**2)]
    config_settings = settings(images=["public.ecr.aws/docker/library/busybox:1.37"], volume_iops=16000)
    size = volume_size_gib(small)
    assert 500 * size < 16000  # a tiny computed volume cannot carry 16,000 IOPS
    with pytest.raises(InvalidInputs, match=rf"volume_iops 16000 exceeds 500 IOPS per GiB of a {size} GiB volume"):
        image_resolution(config_settings, small)


def test_the_xcom_round_trips_into_the_model():
    resolution = image_resolution(settings(), IMAGES)
    again = ImageResolution.model_validate(json.loads(json.dumps(resolution.model_dump(mode="json"))))
    assert again == resolution


def test_the_published_images_are_the_configured_refs_at_the_resolved_digests():
    """The builder reports the pinned refs it pulled; the metadata names them as configured, with the
    digests resolve_images checked (the producers' real outputs, chained)."""
    from tests.plugins.ml_cache import producers

    resolved = producers.resolution()
    assert all("@sha256:" in ref for ref in resolved.pinned_images)
    published = producers.published_metadata()["images"]
    assert [(i["ref"], i["digest"]) for i in published] == [(i.ref, i.digest) for i in resolved.images]
    assert [i["ref"] for i in published] == producers.IMAGES
