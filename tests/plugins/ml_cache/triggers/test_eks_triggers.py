"""EKS trigger: a node group version update ending Successful, Failed or Cancelled."""

from __future__ import annotations

from ml_cache.hooks.eks import CacheEksHook
from ml_cache.triggers.eks import NodegroupUpdateTrigger


def _update(cloud_conn, nodegroup, token: str) -> str:
    return CacheEksHook(aws_conn_id=cloud_conn.conn_id).update_nodegroup_version(
        nodegroup.cluster, nodegroup.name, {"id": nodegroup.template_id, "version": "2"}, force=False, token=token,
    )["id"]


def _trigger(cloud_conn, nodegroup, update_id: str, attempts: int = 10) -> NodegroupUpdateTrigger:
    return NodegroupUpdateTrigger(cluster=nodegroup.cluster, nodegroup=nodegroup.name, update_id=update_id,
                                  waiter_delay=1, waiter_max_attempts=attempts, aws_conn_id=cloud_conn.conn_id)


def test_serialize_round_trips_and_names_a_known_waiter(cloud_conn, trigger_tools) -> None:
    trigger = NodegroupUpdateTrigger(cluster="c", nodegroup="gpu", update_id="u-1", waiter_delay=5,
                                     waiter_max_attempts=7, aws_conn_id=cloud_conn.conn_id, region_name="ca-central-1")
    trigger_tools.assert_round_trip(trigger, "nodegroup_update_successful")


def test_update_successful_is_a_success_with_the_update_id(cloud_conn, cloud_nodegroup, trigger_tools) -> None:
    cloud_conn.set_faults(nodegroup_update_seconds=1.5)
    update_id = _update(cloud_conn, cloud_nodegroup, "ok")
    event = trigger_tools.first_event(_trigger(cloud_conn, cloud_nodegroup, update_id))
    assert event == {"status": "success", "update_id": update_id}


def test_update_failed_is_a_failure_naming_update_and_nodegroup(cloud_conn, cloud_nodegroup, trigger_tools) -> None:
    cloud_conn.set_faults(nodegroup_update_seconds=0.5, nodegroup_update_failed="NodeCreationFailure")
    update_id = _update(cloud_conn, cloud_nodegroup, "bad")
    event = trigger_tools.first_event(_trigger(cloud_conn, cloud_nodegroup, update_id))
    assert (event["status"], event["update_id"]) == ("error", update_id)
    assert f"Update {update_id} of node group {cloud_nodegroup.name} did not succeed" in event["message"]
    assert "NodeCreationFailure" in event["message"]


def test_update_still_running_runs_out_of_attempts(cloud_conn, cloud_nodegroup, trigger_tools) -> None:
    cloud_conn.set_faults(nodegroup_update_seconds=60)
    update_id = _update(cloud_conn, cloud_nodegroup, "slow")
    event = trigger_tools.first_event(_trigger(cloud_conn, cloud_nodegroup, update_id, attempts=2))
    assert (event["status"], event["update_id"]) == ("error", update_id)
    assert "max attempts" in event["message"]


def test_unknown_update_is_an_error_not_a_retry(cloud_conn, cloud_nodegroup, trigger_tools) -> None:
    event = trigger_tools.first_event(
        _trigger(cloud_conn, cloud_nodegroup, "00000000-0000-0000-0000-000000000000", attempts=30))
    assert event["status"] == "error"
    assert "ResourceNotFoundException" in event["message"]
