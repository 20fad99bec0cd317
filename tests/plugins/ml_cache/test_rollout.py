"""Where the rollout's snapshot comes from, and the node group precheck."""

from __future__ import annotations

import pytest

from ml_cache.published import Published
from ml_cache.rollout import RolloutPrecheckFailed, check_node_group, snapshot_from_event, snapshot_from_published
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


class _Ec2:
    def describe_launch_template_version(self, template_id, version):
        return {"LaunchTemplateData": {"BlockDeviceMappings": [
            {"DeviceName": "/dev/xvdb", "Ebs": {"SnapshotId": SNAP}}]}}


SETTINGS = {"launch_template_id": "lt-0123456789abcdef0", "cache_device_name": "/dev/xvdb"}


def test_precheck_returns_what_the_nodes_run_now():
    nodegroup = {"nodegroupName": "gpu", "status": "ACTIVE", "scalingConfig": {"desiredSize": 2},
                 "launchTemplate": {"id": "lt-0123456789abcdef0", "version": "7"}}
    assert check_node_group(nodegroup, SETTINGS, _Ec2()) == {
        "launch_template_version": "7", "previous_snapshot_id": SNAP, "desired_size": 2}


@pytest.mark.parametrize(("nodegroup", "message"), [
    ({"nodegroupName": "gpu", "status": "DEGRADED", "launchTemplate": {"id": "lt-0123456789abcdef0"}}, "DEGRADED"),
    ({"nodegroupName": "gpu", "status": "ACTIVE"}, "not created from launch template"),
    ({"nodegroupName": "gpu", "status": "ACTIVE", "launchTemplate": {"id": "lt-0fffffffffffffff0", "version": "1"}},
     "lt-0fffffffffffffff0"),
])
def test_precheck_refuses_a_node_group_it_cannot_change(nodegroup, message):
    with pytest.raises(RolloutPrecheckFailed, match=message):
        check_node_group(nodegroup, SETTINGS, _Ec2())
