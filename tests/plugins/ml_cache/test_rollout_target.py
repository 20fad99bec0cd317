"""Where the rollout's snapshot comes from: the build's event, or the published state."""

from __future__ import annotations

import pytest

from ml_cache.published import Published
from ml_cache.rollout_target import snapshot_from_event, snapshot_from_published
from tests.plugins.ml_cache import producers

SNAP = "snap-0123456789abcdef0"
IMAGES = [{"ref": "nvcr.io/nvidia/pytorch:24.08-py3", "digest": "sha256:" + "a" * 64}]


def test_event_names_the_target_with_its_arch():
    from ml_cache.assets import read_cache_event

    target = snapshot_from_event(read_cache_event(producers.cache_extra()))
    assert target["snapshot_id"] == producers.SNAPSHOT_ID and target["arch"] == "x86_64"
    assert [image["ref"] for image in target["images"]] == producers.IMAGES


def test_manual_run_reads_the_published_metadata():
    metadata = producers.published_metadata(SNAP)
    target = snapshot_from_published(Published(SNAP, metadata))
    images = [{"ref": image["ref"], "digest": image["digest"]} for image in metadata["images"]]
    assert target == {"snapshot_id": SNAP, "images": images, "image_set": metadata["image_set"], "arch": "x86_64",
                      "source": "SSM parameter"}
    requested = snapshot_from_published(Published("snap-0ffffffffffffffff", metadata), requested=SNAP)
    assert requested["source"] == "requested"


def test_metadata_without_arch_still_names_the_target():
    target = snapshot_from_published(Published(SNAP, {"snapshot_id": SNAP, "images": IMAGES}))
    assert target["images"] == IMAGES and target["arch"] is None and target["image_set"] is None


def test_metadata_of_another_snapshot_is_not_trusted():
    published = Published(SNAP, {"snapshot_id": "snap-0ffffffffffffffff", "images": IMAGES})
    with pytest.raises(ValueError, match="No image list known"):
        snapshot_from_published(published)


@pytest.mark.parametrize(("published", "requested", "source"), [
    (Published(None), None, "the snapshot parameter"),  # absent, or Terraform's placeholder "none"
    (Published("snap-$(id)"), None, "the snapshot parameter"),
    (Published(SNAP), "ami-0123456789abcdef0", "the snapshot_id param"),
])
def test_no_snapshot_is_refused(published, requested, source):
    with pytest.raises(ValueError, match=f"{source} does not name a snapshot"):
        snapshot_from_published(published, requested)
