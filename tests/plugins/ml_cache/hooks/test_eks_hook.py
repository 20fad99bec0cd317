"""CacheEksHook on the local cloud: moto lacks UpdateNodegroupVersion and DescribeUpdate."""

from __future__ import annotations

import time

import pytest

from ml_cache.hooks.eks import CacheEksHook


def _until_finished(hook: CacheEksHook, nodegroup, update_id: str) -> dict:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        update = hook.describe_update(nodegroup.cluster, nodegroup.name, update_id)
        if update["status"] != "InProgress":
            return update
        time.sleep(0.1)
    raise AssertionError(f"update {update_id} never finished")


def test_update_nodegroup_version_starts_an_update_and_a_retry_gets_the_same(cloud_conn, cloud_nodegroup) -> None:
    cloud_conn.set_faults(nodegroup_update_seconds=0.3)
    hook = CacheEksHook(aws_conn_id=cloud_conn.conn_id)
    target = {"id": cloud_nodegroup.template_id, "version": "2"}
    update = hook.update_nodegroup_version(cloud_nodegroup.cluster, cloud_nodegroup.name, target,
                                           force=False, token="run-1")
    assert (update["status"], update["type"]) == ("InProgress", "VersionUpdate")
    assert {"type": "LaunchTemplateVersion", "value": "2"} in update["params"]
    again = hook.update_nodegroup_version(cloud_nodegroup.cluster, cloud_nodegroup.name, target,
                                          force=False, token="run-1")
    assert again["id"] == update["id"]
    assert hook.describe_update(cloud_nodegroup.cluster, cloud_nodegroup.name, update["id"])["id"] == update["id"]
    assert _until_finished(hook, cloud_nodegroup, update["id"])["status"] == "Successful"
    group = hook.describe_nodegroup(clusterName=cloud_nodegroup.cluster, nodegroupName=cloud_nodegroup.name)
    assert group["nodegroup"]["launchTemplate"]["version"] == "2"


def test_a_second_update_while_one_runs_is_refused(cloud_conn, cloud_nodegroup) -> None:
    cloud_conn.set_faults(nodegroup_update_seconds=30)
    hook = CacheEksHook(aws_conn_id=cloud_conn.conn_id)
    target = {"id": cloud_nodegroup.template_id, "version": "2"}
    hook.update_nodegroup_version(cloud_nodegroup.cluster, cloud_nodegroup.name, target, force=True, token="a")
    with pytest.raises(hook.conn.exceptions.ResourceInUseException):
        hook.update_nodegroup_version(cloud_nodegroup.cluster, cloud_nodegroup.name, target, force=True, token="b")


def test_failed_update_reports_its_errors(cloud_conn, cloud_nodegroup) -> None:
    cloud_conn.set_faults(nodegroup_update_seconds=0.2, nodegroup_update_failed="NodeCreationFailure")
    hook = CacheEksHook(aws_conn_id=cloud_conn.conn_id)
    update = hook.update_nodegroup_version(cloud_nodegroup.cluster, cloud_nodegroup.name,
                                           {"id": cloud_nodegroup.template_id, "version": "2"}, force=False, token="t")
    finished = _until_finished(hook, cloud_nodegroup, update["id"])
    assert finished["status"] == "Failed"
    assert [e["errorCode"] for e in finished["errors"]] == ["NodeCreationFailure"]


def test_describe_update_of_an_unknown_id_raises(cloud_conn, cloud_nodegroup) -> None:
    hook = CacheEksHook(aws_conn_id=cloud_conn.conn_id)
    with pytest.raises(hook.conn.exceptions.ResourceNotFoundException):
        hook.describe_update(cloud_nodegroup.cluster, cloud_nodegroup.name, "00000000-0000-0000-0000-000000000000")


def test_nodegroup_update_waiter_is_ours(cloud_conn) -> None:
    assert "nodegroup_update_successful" in CacheEksHook(aws_conn_id=cloud_conn.conn_id).list_waiters()
