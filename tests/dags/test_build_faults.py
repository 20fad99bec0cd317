"""The fault catalog's remaining entries through the whole build DAG on the local cloud, with the
production retries: SSM statuses (13), an instance lost mid-build (8), a snapshot stuck `pending`
(23) and two builds racing to publish (26). Each ends in a clean failure (conftest.assert_clean_failure):
FAILED naming the cause, no builder left, the parameter and the previous snapshot untouched.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml

from tests.dags.conftest import (
    METADATA_PARAMETER,
    PARAMETER,
    PIPELINE,
    REGION,
    assert_clean_failure,
    assert_failed_with,
    needs_data_plane,
    run_dag,
    run_snapshots,
)


def set_timeouts(cloud, **timeouts: int) -> None:
    config = yaml.safe_load(cloud.config_path.read_text())
    config["timeouts"].update(timeouts)
    cloud.config_path.write_text(yaml.safe_dump(config))


@pytest.mark.parametrize(("status", "reported"), [
    ("TimedOut", r"ended TimedOut: ExecutionTimedOut"),
    ("DeliveryTimedOut", r"ended TimedOut: DeliveryTimedOut"),
    ("Cancelled", r"ended Cancelled \(exit code"),
    ("Undeliverable", r"ended Failed: Undeliverable"),
    ("AccessDenied", r"ended Failed: AccessDenied"),
])
def test_build_command_ends_badly(cloud, build_dag, capfd, status, reported):
    """Unlike a script that failed (test_build_dag_runs.py: retried), none of these is cured by sending the
    command again: a timeout would wait its deadline twice. The run fails at the first try."""
    cloud.set_faults(ssm_command_status=status)
    run, states = run_dag(build_dag)
    assert_clean_failure(cloud, run, states, "run_build_script", reported, capfd, retried=False)
    assert states["terminate_builder"] == "success"
    assert run_snapshots(cloud, run.run_id) == []


@needs_data_plane
@pytest.mark.parametrize(("how", "code"), [("stopped", "Server.ScheduledStop"),
                                            ("terminated", "Client.InstanceInitiatedShutdown")])
def test_builder_lost_mid_build_fails_at_once_with_its_state_reason(cloud, build_dag, capfd, how, code):
    """The invocation would stay InProgress until the 600 s execution timeout: the wait reads the
    instance and fails within seconds, without retries; the teardown terminates a stopped builder."""
    cloud.set_faults(instance_lost_mid_command=how)
    started = time.monotonic()
    run, states = run_dag(build_dag)
    assert time.monotonic() - started < 300
    assert_clean_failure(cloud, run, states, "run_build_script", rf"is {how} \({code}: ", capfd, retried=False)
    assert states["terminate_builder"] == "success"
    builders = cloud.client("ec2").describe_instances(
        Filters=[{"Name": "tag:ml-cache:run-id", "Values": [run.run_id]}])["Reservations"]
    assert [i["State"]["Name"] for r in builders for i in r["Instances"]] == ["terminated"]


@needs_data_plane
def test_snapshot_pending_past_its_deadline_is_deleted(cloud, build_dag, capfd):
    set_timeouts(cloud, snapshot_seconds=3)
    cloud.set_faults(snapshot_seconds=600)
    run, states = run_dag(build_dag)
    assert_clean_failure(cloud, run, states, "create_snapshot", r"was pending .* after 3 s.*It was deleted", capfd,
                         retried=False)
    assert run_snapshots(cloud, run.run_id) == []
    assert states["terminate_builder"] == "success"


@needs_data_plane
def test_an_older_run_never_overwrites_a_newer_published_snapshot(cloud, build_dag, capfd):
    """While this run waits for FSR, another build publishes a snapshot taken after this run's: publish
    refuses at once (StalePublish), the newer one stays published, this run's snapshot loses FSR.
    FSR stays `enabling` until the racer has published and moved the cloud's clock past the hour it
    takes: the order is fixed, whatever the machine's load."""
    cloud.set_faults(fsr_enabling_seconds=3600)
    ec2, ssm = cloud.client("ec2"), cloud.client("ssm")
    newer: dict[str, str] = {}
    pipeline = [{"Name": "tag:ml-cache:pipeline", "Values": [PIPELINE]}]
    earlier = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=pipeline)["Snapshots"]}

    def enabling() -> list[str]:
        """This run's snapshot once FSR is enabling for it (the run then waits for `enabled`)."""
        ours = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=pipeline)["Snapshots"]
                if s["SnapshotId"] not in earlier and s["State"] == "completed"}
        states = ec2.describe_fast_snapshot_restores(
            Filters=[{"Name": "snapshot-id", "Values": sorted(ours)}])["FastSnapshotRestores"] if ours else []
        return [f["SnapshotId"] for f in states if f["State"] == "enabling"]

    def publish_a_newer_build() -> None:
        deadline = time.monotonic() + 240
        while not enabling():
            if time.monotonic() > deadline:
                return
            time.sleep(0.5)
        volume = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=1)["VolumeId"]
        snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
        started = ec2.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"][0]["StartTime"]
        newer.update(snapshot_id=snapshot, metadata=json.dumps(
            {"snapshot_id": snapshot, "snapshot_start_time": started.isoformat(), "run_id": "manual__racing"}))
        ssm.put_parameter(Name=PARAMETER, Value=snapshot, Type="String", Overwrite=True)
        ssm.put_parameter(Name=METADATA_PARAMETER, Value=newer["metadata"], Type="String", Overwrite=True)
        cloud.advance_clock(3600)  # FSR of this run's snapshot: enabled at the next poll

    racer = threading.Thread(target=publish_a_newer_build, daemon=True)
    racer.start()
    run, states = run_dag(build_dag)
    racer.join(timeout=5)
    assert newer, "the racing build never saw this run's snapshot"
    assert_failed_with(run, states, "publish_snapshot", rf"already holds {newer['snapshot_id']} .*not published",
                       capfd, retried=False)
    assert cloud.parameter() == newer["snapshot_id"] and cloud.parameter(METADATA_PARAMETER) == newer["metadata"]
    assert cloud.live_instances() == []
    assert states["retire_unpublished_fsr"] == "success"
    (mine,) = run_snapshots(cloud, run.run_id)
    assert "ml-cache:published" not in {t["Key"] for t in mine["Tags"]}
    entries = ec2.describe_fast_snapshot_restores(
        Filters=[{"Name": "snapshot-id", "Values": [mine["SnapshotId"]]}])["FastSnapshotRestores"]
    assert {entry["State"] for entry in entries} <= {"disabling", "disabled"}, entries
    ec2.delete_snapshot(SnapshotId=newer["snapshot_id"])
