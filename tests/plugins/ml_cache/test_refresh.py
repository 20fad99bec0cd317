"""decide_build's rules: up to date only when nothing that shapes the snapshot changed and the
published snapshot is usable as is; otherwise a build, incremental from the published snapshot
whenever EBS would store the new one incrementally."""

from __future__ import annotations

import pytest

from ml_cache.published import Published
from tests.plugins.ml_cache import producers
from tests.plugins.ml_cache.producers import SNAPSHOT_ID, build_settings, resolution

KEY = "arn:aws:kms:us-west-2:123456789012:key/k"


def published() -> Published:
    return Published(snapshot_id=SNAPSHOT_ID, metadata=producers.published_metadata())


def decide(snapshot: dict | None = None, fsr: dict | None = None, builder_sha256: str = producers.BUILDER_SHA256,
           resolved=None, current: Published | None = None, **build):
    from ml_cache.refresh import decide as decide_build

    snapshot = {"SnapshotId": SNAPSHOT_ID, "State": "completed", "VolumeSize": 60, "Encrypted": True,
                "KmsKeyId": KEY} if snapshot is None else snapshot
    fsr = {f"us-west-2{z}": "enabled" for z in "abc"} if fsr is None else fsr
    return decide_build(build_settings(**build), resolved or resolution(), builder_sha256=builder_sha256,
                        published=current or published(), snapshot=snapshot or None, fsr_states=fsr)


def test_the_published_build_is_up_to_date_for_the_same_inputs():
    """The producer's real metadata (publish_snapshot) read back by the consumer (decide_build)."""
    decision = decide()
    assert decision["up_to_date"] is True
    assert decision["fingerprint"] == producers.published_metadata()["fingerprint"]
    assert "already holds these 2 image(s)" in decision["reasons"][0]


@pytest.mark.parametrize(("change", "reason"), [
    ({"builder_sha256": "ff" * 32}, "the builder script changed"),
    ({"architecture": "arm64"}, "platform linux/amd64 -> linux/arm64"),
    ({"force_rebuild": True}, "force_rebuild is on"),
    ({"volume_size_gib": 80}, "data volume 60 GiB -> 80 GiB"),
])
def test_anything_that_shapes_the_snapshot_makes_a_build(change, reason):
    if "volume_size_gib" in change:
        resolved = resolution().model_copy(update={"volume_size_gib": 80})
        decision = decide(resolved=resolved)
    else:
        decision = decide(**change)
    assert decision["up_to_date"] is False
    assert reason in decision["reasons"]


def test_a_moved_tag_is_named_with_both_digests():
    images = [image.model_copy(update={"digest": "sha256:" + "99" * 32}) if image.ref.startswith("nvcr") else image
              for image in resolution().images]
    decision = decide(resolved=resolution().model_copy(update={"images": images}))
    assert decision["up_to_date"] is False
    assert decision["reasons"] == ["nvcr.io/nvidia/pytorch:24.08-py3: sha256:abababababab… -> sha256:999999999999…"]


@pytest.mark.parametrize(("snapshot", "fsr", "reason"), [
    ({}, None, f"the published snapshot {SNAPSHOT_ID} no longer exists"),
    ({"SnapshotId": SNAPSHOT_ID, "State": "error"}, None,
     f"the published snapshot {SNAPSHOT_ID} is error, not completed"),
    (None, {"us-west-2a": "enabled", "us-west-2b": "disabled"}, f"Fast Snapshot Restore of {SNAPSHOT_ID} is not on "
                                                                "in us-west-2b, us-west-2c"),
])
def test_a_published_snapshot_that_cannot_serve_as_is_makes_a_build(snapshot, fsr, reason):
    decision = decide(snapshot=snapshot, fsr=fsr)
    assert decision["up_to_date"] is False
    assert any(r.startswith(reason) for r in decision["reasons"]), decision["reasons"]


def test_fsr_on_its_way_to_enabled_is_as_configured():
    assert decide(fsr={f"us-west-2{z}": "optimizing" for z in "abc"})["up_to_date"] is True


def test_fsr_off_in_the_settings_does_not_look_at_fsr():
    decision = decide(fsr={}, enable_fast_snapshot_restore=False)
    assert decision["up_to_date"] is True  # no FSR anywhere, and FSR is not in the fingerprint


def test_nothing_published_builds_fresh():
    decision = decide(current=Published(snapshot_id=None), snapshot={})
    assert decision["up_to_date"] is False
    assert decision["reasons"] == ["the published snapshot has no fingerprint (built before fingerprints, "
                                   "restored, or none yet)"]
    assert decision["base"] == {"mode": "fresh", "snapshot_id": None, "reason": "nothing is published yet",
                                "volume_size_gib": 60}


def test_a_changed_set_builds_from_the_published_snapshot_grown_when_it_needs_more():
    resolved = resolution().model_copy(update={"volume_size_gib": 75})
    base = decide(resolved=resolved)["base"]
    assert base == {"mode": "incremental", "snapshot_id": SNAPSHOT_ID, "volume_size_gib": 75,
                    "reason": f"the data volume starts from the published snapshot {SNAPSHOT_ID}, "
                              "grown from 60 to 75 GiB"}


def test_the_volume_is_never_smaller_than_its_base_snapshot():
    resolved = resolution().model_copy(update={"volume_size_gib": 20})
    assert decide(resolved=resolved)["base"]["volume_size_gib"] == 60


@pytest.mark.parametrize(("snapshot", "build", "reason"), [
    (None, {"incremental": False}, "incremental is off"),
    ({}, {}, f"the published snapshot {SNAPSHOT_ID} is gone"),
    (None, {"architecture": "arm64"}, f"the published snapshot {SNAPSHOT_ID} is for linux/amd64, this build for "
                                      "linux/arm64"),
    ({"SnapshotId": SNAPSHOT_ID, "State": "completed", "VolumeSize": 60, "Encrypted": False}, {},
     f"the published snapshot {SNAPSHOT_ID} is not encrypted"),
])
def test_the_volume_starts_blank_when_the_published_snapshot_cannot_be_its_base(snapshot, build, reason):
    base = decide(snapshot=snapshot, **build)["base"]
    assert (base["mode"], base["snapshot_id"], base["reason"]) == ("fresh", None, reason)


def test_another_kms_key_starts_blank_because_the_snapshot_would_be_full():
    from ml_cache.refresh import same_kms_key

    assert same_kms_key(None, KEY) and same_kms_key(KEY, KEY) and same_kms_key("k", KEY)
    assert not same_kms_key("other", KEY) and not same_kms_key("alias/ml-cache", KEY) and not same_kms_key("k", None)


def test_metadata_that_describes_another_snapshot_gives_no_base():
    current = Published(snapshot_id="snap-0fedcba9876543210", metadata=producers.published_metadata())
    snapshot = {"SnapshotId": "snap-0fedcba9876543210", "State": "completed", "VolumeSize": 60, "Encrypted": True}
    decision = decide(snapshot=snapshot, current=current)
    assert decision["up_to_date"] is False
    assert decision["base"]["reason"] == "no metadata describes snap-0fedcba9876543210: its platform is unknown"


def test_an_incremental_volume_holds_the_old_set_and_the_new_images_at_once():
    """Old versions are removed only after the new ones are pulled: the peak is what the restored volume
    holds plus the images it does not hold yet (sized like a fresh volume: blobs + unpacked + margin)."""
    from ml_cache.registry import GIB

    metadata = {**producers.published_metadata(), "totals": {"filesystem_used_bytes": 58 * GIB}}
    images = [image.model_copy(update={"digest": "sha256:" + "99" * 32, "compressed_bytes": 5 * GIB})
              if image.ref.startswith("nvcr") else image for image in resolution().images]
    changed = resolution().model_copy(update={"images": images})
    base = decide(resolved=changed, current=Published(snapshot_id=SNAPSHOT_ID, metadata=metadata))["base"]
    assert base["mode"] == "incremental"
    assert base["volume_size_gib"] == 58 + 21  # 5 GiB x (1 + 2.2 unpacked) x 1.25 + 1 GiB, rounded up
    unchanged = decide(current=Published(snapshot_id=SNAPSHOT_ID, metadata=metadata))["base"]
    assert unchanged["volume_size_gib"] == 60  # nothing new: the snapshot's size
