"""Where the rollout's snapshot comes from, and the node group precheck."""

from __future__ import annotations

import json

import pytest

from ml_cache.rollout import RolloutPrecheckFailed, check_node_group, snapshot_from_event, snapshot_from_parameters

SNAP = "snap-0123456789abcdef0"
IMAGES = [{"ref": "nvcr.io/nvidia/pytorch:24.08-py3", "digest": "sha256:" + "a" * 64}]


def test_event_extra_is_the_build_contract():
    target = snapshot_from_event({"snapshot_id": SNAP, "images": IMAGES, "image_set": "sha256:x", "run_id": "r"})
    assert target["snapshot_id"] == SNAP and target["images"] == IMAGES


@pytest.mark.parametrize("value", [None, "", "snap-$(id)", "ami-0123456789abcdef0", "none"])
def test_event_without_a_snapshot_is_refused(value):
    with pytest.raises(ValueError, match="does not name a snapshot"):
        snapshot_from_event({"snapshot_id": value, "images": IMAGES})


def test_manual_run_reads_the_parameters():
    metadata = {"Value": json.dumps({"snapshot_id": SNAP, "images": IMAGES, "image_set": "sha256:x"})}
    target = snapshot_from_parameters({"Value": SNAP}, metadata)
    assert target["snapshot_id"] == SNAP and target["images"] == IMAGES


def test_metadata_of_another_snapshot_is_not_trusted():
    metadata = {"Value": json.dumps({"snapshot_id": "snap-0ffffffffffffffff", "images": IMAGES})}
    with pytest.raises(ValueError, match="No image list known"):
        snapshot_from_parameters({"Value": SNAP}, metadata)


def test_placeholder_parameter_is_not_a_snapshot():
    with pytest.raises(ValueError, match="does not name a snapshot"):
        snapshot_from_parameters({"Value": "none"}, None)


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
