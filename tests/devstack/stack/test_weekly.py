"""`run`'s weekly ticks: what a moved tag costs a puller, read through a real docker-registry."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests

from devstack.demo_images import ECR_DEMO_IMAGE, ECR_DEMO_IMAGE_NEXT_WEEK, DemoImage, build_layout, push_layout
from devstack.stack.weekly import MANIFEST_ACCEPT, new_blobs
from tests.conftest import registry_tools_missing

MISSING = registry_tools_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


def _blob_size(registry: str, repository: str, digest: str) -> int:
    answer = requests.head(f"http://{registry}/v2/{repository}/blobs/{digest}", timeout=30)
    answer.raise_for_status()
    return int(answer.headers["Content-Length"])


def test_next_weeks_tools_image_moves_the_tag_and_a_puller_fetches_one_layer_config_and_manifest(
        registry_backend: str, tmp_path: Path) -> None:
    repository = "weekly/tools"
    old = push_layout(build_layout(ECR_DEMO_IMAGE, tmp_path), ECR_DEMO_IMAGE, registry_backend, repository)
    new = push_layout(build_layout(ECR_DEMO_IMAGE_NEXT_WEEK, tmp_path), ECR_DEMO_IMAGE_NEXT_WEEK, registry_backend,
                      repository)
    assert ECR_DEMO_IMAGE_NEXT_WEEK.tag == ECR_DEMO_IMAGE.tag and new != old
    tagged = requests.get(f"http://{registry_backend}/v2/{repository}/manifests/{ECR_DEMO_IMAGE.tag}",
                          headers={"Accept": MANIFEST_ACCEPT}, timeout=30)
    assert "sha256:" + hashlib.sha256(tagged.content).hexdigest() == new  # the tag moved
    new_manifest = tagged.json()
    blobs = new_blobs(registry_backend, repository, old, new)
    # the busybox layer is shared: only the changed data layer, the config and the manifest are new
    assert set(blobs) == {new, new_manifest["config"]["digest"], new_manifest["layers"][1]["digest"]}
    assert new_manifest["layers"][0]["digest"] not in blobs
    assert blobs[new] == len(tagged.content)
    for digest in set(blobs) - {new}:
        assert blobs[digest] == _blob_size(registry_backend, repository, digest)
    assert blobs[new_manifest["layers"][1]["digest"]] > ECR_DEMO_IMAGE.data_layer_mib * 1024**2  # random: no gain
    assert new_blobs(registry_backend, repository, new, new) == {new: len(tagged.content)}


def test_an_image_index_is_refused_with_the_reason(registry_backend: str, tmp_path: Path) -> None:
    image = DemoImage("weekly-index", extra_architectures=("arm64",))
    index = push_layout(build_layout(image, tmp_path), image, registry_backend, "weekly/index")
    with pytest.raises(ValueError, match=r"weekly/index@sha256:[0-9a-f]{64} is an image index, not an image manifest"):
        new_blobs(registry_backend, "weekly/index", index, index)
