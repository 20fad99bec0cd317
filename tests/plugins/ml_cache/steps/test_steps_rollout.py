"""The rollout precheck: only an ACTIVE node group on our launch template is changed; a group scaled
to 0 gets one validation node and its own scaling back."""

from __future__ import annotations

import pytest

from ml_cache.steps.rollout import RolloutPrecheckFailed, check_node_group, validation_scaling

TEMPLATE = "lt-0123456789abcdef0"


def test_precheck_returns_the_version_the_nodes_run_now():
    nodegroup = {"nodegroupName": "gpu", "status": "ACTIVE", "launchTemplate": {"id": TEMPLATE, "version": 7}}
    assert check_node_group(nodegroup, TEMPLATE) == "7"
    assert check_node_group({**nodegroup, "status": "UPDATING"}, TEMPLATE) == "7"  # ours waits for the other


@pytest.mark.parametrize(("nodegroup", "message"), [
    ({"nodegroupName": "gpu", "status": "DEGRADED", "launchTemplate": {"id": TEMPLATE}}, "DEGRADED"),
    ({"nodegroupName": "gpu", "status": "ACTIVE"}, "not created from launch template"),
    ({"nodegroupName": "gpu", "status": "ACTIVE", "launchTemplate": {"id": "lt-0fffffffffffffff0", "version": "1"}},
     "lt-0fffffffffffffff0"),
])
def test_precheck_refuses_a_node_group_it_cannot_change(nodegroup, message):
    with pytest.raises(RolloutPrecheckFailed, match=message):
        check_node_group(nodegroup, TEMPLATE)


def test_a_group_scaled_to_zero_gets_one_validation_node_and_its_scaling_back():
    assert validation_scaling({"scalingConfig": {"minSize": 0, "maxSize": 4, "desiredSize": 0}}) == {
        "validation_scaling": {"minSize": 1, "maxSize": 4, "desiredSize": 1},
        "restore_scaling": {"minSize": 0, "maxSize": 4, "desiredSize": 0}}
    assert validation_scaling({"scalingConfig": {"minSize": 0, "maxSize": 0, "desiredSize": 0}})[
        "validation_scaling"] == {"minSize": 1, "maxSize": 1, "desiredSize": 1}


def test_a_group_with_nodes_keeps_its_scaling():
    assert validation_scaling({"scalingConfig": {"minSize": 1, "maxSize": 2, "desiredSize": 2}}) == {
        "validation_scaling": None, "restore_scaling": None}


def test_the_baseline_group_gets_its_own_keys():
    """One rule for both groups: the baseline's scaling travels beside the GPU group's in precheck's XCom."""
    assert validation_scaling({"scalingConfig": {"minSize": 0, "maxSize": 1, "desiredSize": 0}}, "baseline_") == {
        "baseline_validation_scaling": {"minSize": 1, "maxSize": 1, "desiredSize": 1},
        "baseline_restore_scaling": {"minSize": 0, "maxSize": 1, "desiredSize": 0}}
