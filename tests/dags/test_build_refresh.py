"""The weekly refresh on the local cloud: an unchanged image set launches nothing, and a rebuild starts
from the published snapshot (a snapshot a run did not publish losing FSR: test_build_faults.py)."""

from __future__ import annotations

import json

from tests.dags.conftest import METADATA_PARAMETER, needs_data_plane, run_dag


def cache_events() -> int:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(select(func.count()).select_from(AssetEvent).join(
            AssetModel, AssetEvent.asset_id == AssetModel.id).where(AssetModel.name == "ml_container_cache"))


def fsr_states(cloud, snapshot_id: str) -> dict[str, str]:
    entries = cloud.client("ec2").describe_fast_snapshot_restores(
        Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}])["FastSnapshotRestores"]
    return {entry["AvailabilityZone"]: entry["State"] for entry in entries}


@needs_data_plane
def test_unchanged_weeks_launch_nothing_and_a_rebuild_starts_from_the_published_snapshot(cloud, build_dag):
    run, states = run_dag(build_dag)
    assert str(run.state) == "success", states
    first = cloud.parameter()
    metadata = json.loads(cloud.parameter(METADATA_PARAMETER))
    assert metadata["build"]["mode"] == "fresh"
    assert metadata["build"]["reason"] == f"the published snapshot {cloud.previous_snapshot} is not encrypted"
    assert states["up_to_date"] == "skipped"
    launched, events = cloud.instance_count(), cache_events()

    run, states = run_dag(build_dag)  # next week, nothing changed
    assert str(run.state) == "success", states
    assert states["up_to_date"] == "success"
    assert {states[t] for t in ("resolve_ami", "launch_builder", "create_snapshot", "publish_snapshot",
                                "terminate_builder", "retire_unpublished_fsr")} == {"skipped"}
    assert cloud.instance_count() == launched and cache_events() == events
    assert cloud.parameter() == first
    (summary,) = [ti.xcom_pull(task_ids="up_to_date") for ti in run.get_task_instances() if ti.task_id == "up_to_date"]
    assert summary["outcome"] == "up to date" and summary["snapshot_id"] == first
    assert summary["instances_launched"] == 0 and summary["decided_in_seconds"] < 30

    run, states = run_dag(build_dag, force_rebuild=True)
    assert str(run.state) == "success", states
    second = cloud.parameter()
    metadata = json.loads(cloud.parameter(METADATA_PARAMETER))
    assert second != first and cache_events() == events + 1
    assert metadata["build"] == {"mode": "incremental", "base_snapshot_id": first, "bytes_pulled": 0,
                                 "reason": f"the data volume starts from the published snapshot {first}"}
    cost = metadata["cost"]["snapshot"]  # the EBS direct APIs: only changed blocks are stored
    assert cost["parent_snapshot_id"] == first and 0 < cost["incremental_bytes"] < cost["full_bytes"]
    assert metadata["cost"]["running_total"]["runs"] == 2
    tags = {t["Key"]: t["Value"] for t in cloud.client("ec2").describe_snapshots(
        SnapshotIds=[second])["Snapshots"][0]["Tags"]}
    assert "ml-cache:published" in tags
    # the previous snapshot keeps FSR until a rollout validates the new one (its rollback target)
    assert set(fsr_states(cloud, first).values()) == {"enabled"} == set(fsr_states(cloud, second).values())
