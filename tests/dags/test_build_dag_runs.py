"""The build DAG end to end on the local cloud: the happy path and the fault catalog's clean failures.

A clean failure: the run is FAILED naming the cause, no builder is left running, the SSM
parameter keeps its previous value, the previous snapshot (a real one, published by the `cloud`
fixture) still exists, `completed`, with its size and tags.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.dags.conftest import (
    METADATA_PARAMETER,
    assert_clean_failure,
    assert_failed_with,
    needs_data_plane,
    run_dag,
    run_snapshots,
)


def test_invalid_image_fails_before_any_aws_call(cloud, build_dag, capfd):
    before = cloud.instance_count()
    run, states = run_dag(build_dag, images=["busybox;rm -rf /"])
    assert_clean_failure(cloud, run, states, "validate_inputs", r"busybox;rm -rf /", capfd)
    assert states["launch_builder"] == "upstream_failed"
    assert cloud.instance_count() == before


def test_unknown_availability_zone_fails_before_any_aws_call(cloud, build_dag, capfd):
    before = cloud.instance_count()
    run, states = run_dag(build_dag, fsr_availability_zones=["us-east-1a"])
    assert_clean_failure(cloud, run, states, "validate_inputs", r"\['us-east-1a'\] are not availability zones",
                         capfd)
    assert cloud.instance_count() == before


def test_no_capacity_for_any_instance_type(cloud, build_dag, capfd):
    cloud.set_faults(insufficient_capacity_instance_types=["c6i.2xlarge", "m6i.2xlarge"])
    run, states = run_dag(build_dag)
    assert_clean_failure(cloud, run, states, "launch_builder", r"No capacity for any candidate", capfd)


def test_agent_never_online_terminates_the_builder(cloud, build_dag, capfd):
    cloud.write_config()
    config = cloud.config_path.read_text().replace("agent_online_seconds: 20", "agent_online_seconds: 3")
    cloud.config_path.write_text(config)
    cloud.set_faults(agent_offline=True)
    run, states = run_dag(build_dag)
    assert_clean_failure(cloud, run, states, "wait_for_builder", r"not Online within 3 s", capfd,
                         retried=False)  # a deadline is not retried
    assert states["terminate_builder"] == "success"
    builders = cloud.client("ec2").describe_instances(  # the local cloud is shared: this run's builders only
        Filters=[{"Name": "tag:ml-cache:run-id", "Values": [run.run_id]}])["Reservations"]
    assert [i["State"]["Name"] for r in builders for i in r["Instances"]] == ["terminated"]


def test_build_command_failed(cloud, build_dag, capfd):
    cloud.set_faults(ssm_command_status="Failed")
    run, states = run_dag(build_dag)
    assert_clean_failure(cloud, run, states, "run_build_script", r"ended Failed \(exit code", capfd)
    assert states["terminate_builder"] == "success"


@needs_data_plane
def test_happy_path_publishes_after_fsr(cloud, build_dag):
    cloud.set_faults(insufficient_capacity_instance_types=["c6i.2xlarge"])  # falls back to the next type
    run, states = run_dag(build_dag)
    assert str(run.state) == "success", states
    ec2 = cloud.client("ec2")
    snapshot_id = cloud.parameter()
    assert snapshot_id.startswith("snap-") and snapshot_id != cloud.previous_snapshot
    snapshot = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    tags = {t["Key"]: t["Value"] for t in snapshot["Tags"]}
    assert snapshot["State"] == "completed"
    assert tags["ml-cache:pipeline"] == "ml-container-cache" and tags["ml-cache:run-id"] == run.run_id
    fsr = ec2.describe_fast_snapshot_restores(Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}])
    assert {e["AvailabilityZone"]: e["State"] for e in fsr["FastSnapshotRestores"]} == {
        "us-west-2a": "enabled", "us-west-2b": "enabled"}
    metadata = json.loads(cloud.parameter(METADATA_PARAMETER))
    assert metadata["snapshot_id"] == snapshot_id
    assert [image["ref"] for image in metadata["images"]] == [cloud.images["small"]]
    assert metadata["images"][0]["digest"] == cloud.images["small"].split("@")[1]
    assert cloud.live_instances() == []
    instance = ec2.describe_instances()["Reservations"][-1]["Instances"][0]
    assert instance["InstanceType"] == "m6i.2xlarge"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"


@needs_data_plane
def test_missing_image_fails_with_its_name_before_any_instance(cloud, build_dag, capfd):
    """resolve_images asks the registry first: a missing image launches nothing (fault catalog 17/19)."""
    missing = f"{cloud.registry}/ml-cache-demo/does-not-exist:1.0"
    run, states = run_dag(build_dag, images=[missing])
    assert_failed_with(run, states, "resolve_images", rf"{missing}: not found", capfd, retried=False)
    assert states["launch_builder"] == "upstream_failed"
    assert cloud.live_instances() == [] and cloud.parameter() == cloud.previous_snapshot
    cloud.assert_previous_intact()


@needs_data_plane
def test_snapshot_error_is_deleted(cloud, build_dag, capfd):
    cloud.set_faults(snapshot_error=True)
    run, states = run_dag(build_dag)
    assert_clean_failure(cloud, run, states, "create_snapshot", r"It was deleted", capfd)
    assert run_snapshots(cloud, run.run_id) == []


@needs_data_plane
def test_fsr_unsuccessful_fails_the_run(cloud, build_dag, capfd):
    cloud.set_faults(fsr_unsuccessful_azs=["us-west-2b"])
    run, states = run_dag(build_dag)
    assert_clean_failure(cloud, run, states, "enable_fast_snapshot_restore", r"unsuccessful: us-west-2b",
                         capfd)


@needs_data_plane
@pytest.mark.parametrize("stuck", ["fsr_enabling_seconds", "fsr_optimizing_seconds"])
def test_fsr_past_its_deadline_ends_disabled(cloud, build_dag, capfd, stuck):
    """FSR is billed from `enabling` on: a run that gives up on it takes it off before failing, at once
    (a wait past its deadline is not retried), and it ends `disabled` (fault catalog 25)."""
    cloud.write_config()
    cloud.config_path.write_text(cloud.config_path.read_text().replace("fsr_seconds: 60", "fsr_seconds: 3"))
    cloud.set_faults(**{stuck: 600})
    run, states = run_dag(build_dag)
    assert_clean_failure(cloud, run, states, "enable_fast_snapshot_restore",
                         r"not enabled in \['us-west-2a', 'us-west-2b'\] within 3 s.*disabled again in", capfd,
                         retried=False)
    assert states["retire_unpublished_fsr"] == "success"
    (snapshot,) = run_snapshots(cloud, run.run_id)
    ec2 = cloud.client("ec2")

    def fsr_states() -> set[str]:
        return {entry["State"] for entry in ec2.describe_fast_snapshot_restores(
            Filters=[{"Name": "snapshot-id", "Values": [snapshot["SnapshotId"]]}])["FastSnapshotRestores"]}

    deadline = time.monotonic() + 15
    while fsr_states() != {"disabled"} and time.monotonic() < deadline:
        time.sleep(0.5)
    assert fsr_states() == {"disabled"}


def test_empty_fsr_zone_list_rejected(cloud, build_dag, capfd):
    run, states = run_dag(build_dag, fsr_availability_zones=[])
    assert_clean_failure(cloud, run, states, "validate_inputs", r"fsr_availability_zones must not be empty", capfd)


def test_the_trigger_form_refuses_what_the_settings_refuse(cloud, build_dag):
    """The form's Params come from the settings schema: a malformed zone never even starts a run."""
    from airflow.sdk.exceptions import ParamValidationError

    launched = len(cloud.client("ec2").describe_instances()["Reservations"])
    with pytest.raises(ParamValidationError, match="fsr_availability_zones"):
        run_dag(build_dag, fsr_availability_zones=[""])
    assert len(cloud.client("ec2").describe_instances()["Reservations"]) == launched


@needs_data_plane
def test_the_task_log_shows_the_builders_progress(cloud, build_dag, capfd):
    """The agent streams the script's stderr to the build log group; the trigger logs its progress lines
    (the image, its bytes) and the script's own log lines. This build takes seconds, so most arrive at the
    last read; that they arrive while a command runs: test_builder_command_trigger.py."""
    run, states = run_dag(build_dag)
    assert str(run.state) == "success", states
    out = capfd.readouterr().out
    image = cloud.images["small"]
    assert f"builder progress: image {image} pulled" in out, out[-3000:]
    assert re.search(rf"builder progress: image {re.escape(image)} fetched: [0-9.]+ [KM]?B", out), out[-3000:]
    assert re.search(r"builder: \S+ build_cache: build: ok, 1 image\(s\), volume quiesced", out)
    assert "ml-cache-progress" not in out  # formatted, never raw
    groups = cloud.client("logs").describe_log_groups(logGroupNamePrefix="/ml-container-cache/build")["logGroups"]
    assert [group["logGroupName"] for group in groups] == ["/ml-container-cache/build"]
