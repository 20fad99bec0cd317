"""The Asset event contracts: each writer's real output read back by its consumer's reader."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ml_cache.assets import (
    ML_CONTAINER_CACHE,
    ML_CONTAINER_CACHE_READY,
    AssetEventError,
    CacheEvent,
    latest_event,
    pick_image,
    read_cache_event,
    read_ready_event,
)
from ml_cache.images import image_set_digest
from tests.plugins.ml_cache import producers
from tests.plugins.ml_cache.producers import BUSYBOX_DIGEST, PYTORCH_DIGEST, SNAPSHOT_ID

DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32


def sample_extra() -> dict:
    return {
        "snapshot_id": "snap-0123456789abcdef0",
        "image_set": "sha256:" + "ee" * 32,
        "images": [{"ref": "nvcr.io/nvidia/pytorch:24.08-py3", "digest": DIGEST},
                   {"ref": "public.ecr.aws/docker/library/busybox:1.37", "digest": OTHER_DIGEST}],
        "arch": "x86_64",
        "validation": {"passed": True, "results": []},
        "run_id": "asset_triggered__2026-11-29T03:00:00+00:00",
    }


# --------------------------------------------------------------------------- build -> rollout


def test_build_event_round_trips_into_the_rollout_target():
    metadata = producers.published_metadata()
    event = read_cache_event(producers.cache_extra())
    assert event == CacheEvent(
        snapshot_id=SNAPSHOT_ID, image_set=image_set_digest([PYTORCH_DIGEST, BUSYBOX_DIGEST]),
        images=({"ref": "nvcr.io/nvidia/pytorch:24.08-py3", "digest": PYTORCH_DIGEST},
                {"ref": "public.ecr.aws/docker/library/busybox:1.37", "digest": BUSYBOX_DIGEST}),
        arch="x86_64", fsr_availability_zones=("us-west-2a", "us-west-2b"), run_id=producers.BUILD_RUN_ID)
    assert event.image_set == metadata["image_set"]
    target = producers.rollout_target()
    assert target == {"snapshot_id": SNAPSHOT_ID, "images": list(event.images), "image_set": event.image_set,
                      "arch": "x86_64", "source": f"asset event of run {producers.BUILD_RUN_ID}"}


def test_build_event_carries_no_sizes_or_platform():
    """The event is the contract's six keys plus how it was built and what it cost; sizes and totals
    stay in the metadata parameter."""
    assert set(producers.cache_extra()) == {"snapshot_id", "image_set", "images", "arch",
                                            "fsr_availability_zones", "run_id", "fingerprint", "build", "cost"}
    assert all(set(image) == {"ref", "digest"} for image in producers.cache_extra()["images"])


@pytest.mark.parametrize("value", [None, "", "snap-$(id)", "ami-0123456789abcdef0", "none"])
def test_build_event_without_a_snapshot_is_refused(value):
    with pytest.raises(ValueError, match="is not a snap-… id"):
        read_cache_event({**producers.cache_extra(), "snapshot_id": value})


@pytest.mark.parametrize("change", [{"images": []}, {"images": [{"ref": "x:1", "digest": "latest"}]}])
def test_build_event_without_pinned_images_is_refused(change):
    with pytest.raises(AssetEventError):
        read_cache_event({**producers.cache_extra(), **change})


# --------------------------------------------------------------------------- rollout -> data teams


def test_ready_event_round_trips_with_arch_and_the_report():
    extra = producers.ready_extra()
    event = read_ready_event(extra)
    target = producers.rollout_target()
    assert event.snapshot_id == SNAPSHOT_ID and event.arch == "x86_64"
    assert event.image_set == target["image_set"] and list(event.images) == target["images"]
    assert event.run_id == producers.ROLLOUT_RUN_ID
    assert event.validation == producers.validation_report()
    assert event.validation["passed"] is True and event.validation["markdown"].startswith("###")
    assert set(extra) == {"snapshot_id", "image_set", "images", "arch", "validation", "run_id"}
    assert pick_image(event.images, "pytorch") == f"nvcr.io/nvidia/pytorch@{PYTORCH_DIGEST}"


def test_read_ready_event_and_pick_an_image_by_name():
    event = read_ready_event(sample_extra())
    assert event.snapshot_id == "snap-0123456789abcdef0" and event.arch == "x86_64"
    assert pick_image(event.images, "pytorch") == f"nvcr.io/nvidia/pytorch@{DIGEST}"
    assert pick_image(event.images, "nvcr.io/nvidia/pytorch") == f"nvcr.io/nvidia/pytorch@{DIGEST}"
    busybox = pick_image(event.images, "docker/library/busybox")
    assert busybox == f"public.ecr.aws/docker/library/busybox@{OTHER_DIGEST}"


def test_pick_image_refuses_missing_or_ambiguous_names():
    images = list(read_ready_event(sample_extra()).images)
    with pytest.raises(AssetEventError, match="no cached image named 'tensorflow'"):
        pick_image(images, "tensorflow")
    with pytest.raises(AssetEventError, match="no cached image named 'torch'"):
        pick_image(images, "torch")  # a suffix of a path component is not a match
    twice = [*images, {"ref": "ghcr.io/acme/pytorch:2", "digest": DIGEST}]
    with pytest.raises(AssetEventError, match="2 cached images named 'pytorch'"):
        pick_image(twice, "pytorch")


@pytest.mark.parametrize(("change", "message"), [
    ({"snapshot_id": "vol-123"}, "is not a snap-… id"),
    ({"images": []}, "carries no images"),
    ({"images": [{"digest": DIGEST}]}, "has no ref"),
    ({"images": [{"ref": "x:1", "digest": "latest"}]}, "has no sha256 digest"),
    ({"validation": {"passed": False}}, "validation failed"),
])
def test_read_ready_event_rejects_broken_contracts(change, message):
    with pytest.raises(AssetEventError, match=message):
        read_ready_event({**sample_extra(), **change})
    with pytest.raises(AssetEventError, match="has no extra"):
        read_ready_event(None)


# --------------------------------------------------------------------------- the latest event


def _event(snapshot_id: str) -> SimpleNamespace:
    return SimpleNamespace(extra={"snapshot_id": snapshot_id})


def test_latest_event_prefers_the_triggering_event():
    triggered, older, newest = _event("snap-0000000000000000a"), _event("snap-0000000000000000b"), _event("c")
    found = latest_event(ML_CONTAINER_CACHE_READY, triggering_asset_events={ML_CONTAINER_CACHE_READY: [triggered]},
                         inlet_events={ML_CONTAINER_CACHE_READY: [older, newest]})
    assert found is triggered


def test_latest_event_falls_back_to_the_newest_inlet_event():
    older, newest = _event("a"), _event("b")
    assert latest_event(ML_CONTAINER_CACHE_READY, triggering_asset_events={},
                        inlet_events={ML_CONTAINER_CACHE_READY: [older, newest]}) is newest
    # triggered by another asset only: still the inlet's newest
    assert latest_event(ML_CONTAINER_CACHE_READY, triggering_asset_events={ML_CONTAINER_CACHE: [older]},
                        inlet_events={ML_CONTAINER_CACHE_READY: [newest]}) is newest


def test_latest_event_is_none_without_events():
    assert latest_event(ML_CONTAINER_CACHE_READY, triggering_asset_events={},
                        inlet_events={ML_CONTAINER_CACHE_READY: []}) is None
    assert latest_event(ML_CONTAINER_CACHE, triggering_asset_events=None) is None
    assert latest_event(ML_CONTAINER_CACHE, triggering_asset_events={ML_CONTAINER_CACHE_READY: [_event("a")]}) is None
