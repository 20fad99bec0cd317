"""The new launch template version changes the cache snapshot and nothing else."""

from __future__ import annotations

import copy

import pytest

from ml_cache.launch_template import LaunchTemplateError, cache_snapshot, version_description, with_cache_snapshot

DATA = {
    "InstanceType": "g6e.xlarge",
    "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 2},
    "UserData": "TUlNRS1WZXJzaW9u",
    "BlockDeviceMappings": [
        {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 100, "VolumeType": "gp3"}},
        {"DeviceName": "/dev/xvdb", "Ebs": {"SnapshotId": "snap-0aaaaaaaaaaaaaaaa", "VolumeSize": 100}},
    ],
}


def test_only_the_cache_snapshot_changes():
    original = copy.deepcopy(DATA)
    new = with_cache_snapshot(DATA, "/dev/xvdb", "snap-0bbbbbbbbbbbbbbbb", 50)
    assert original == DATA  # the input is not modified
    assert cache_snapshot(new, "/dev/xvdb") == "snap-0bbbbbbbbbbbbbbbb"
    new["BlockDeviceMappings"][1]["Ebs"]["SnapshotId"] = original["BlockDeviceMappings"][1]["Ebs"]["SnapshotId"]
    assert new == original


def test_volume_grows_to_a_larger_snapshot_only():
    assert with_cache_snapshot(DATA, "/dev/xvdb", "snap-0bbbbbbbbbbbbbbbb", 200)[
        "BlockDeviceMappings"][1]["Ebs"]["VolumeSize"] == 200
    assert with_cache_snapshot(DATA, "/dev/xvdb", "snap-0bbbbbbbbbbbbbbbb", 8)[
        "BlockDeviceMappings"][1]["Ebs"]["VolumeSize"] == 100


def test_missing_cache_device_is_named():
    with pytest.raises(LaunchTemplateError, match="/dev/xvdc"):
        with_cache_snapshot(DATA, "/dev/xvdc", "snap-0bbbbbbbbbbbbbbbb")


def test_placeholder_template_has_no_cache_snapshot():
    data = {"BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 100}}]}
    assert cache_snapshot(data, "/dev/xvdb") is None


def test_version_description_identifies_the_run_and_fits():
    description = version_description("manual__" + "x" * 300, "snap-0bbbbbbbbbbbbbbbb")
    assert description.startswith("ml-container-cache snap-0bbbbbbbbbbbbbbbb manual__")
    assert len(description) <= 255
