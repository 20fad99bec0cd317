"""The local cloud's simulated clock: the rule itself, its route, and what follows it (moto's
timestamps, the Date header, FSR transitions, ECR token expiry)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest

from devstack import clock

WEEK = 7 * 24 * 3600


def _close(moment: datetime, expected: datetime, slack: float = 120) -> bool:
    return abs((moment - expected).total_seconds()) <= slack


def test_clock_moves_only_forward() -> None:
    before = clock.as_dict()["offset_seconds"]
    with pytest.raises(ValueError, match="advance_seconds must be a number >= 0, got -1"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="got 'soon'"):
        clock.advance("soon")  # type: ignore[arg-type]
    assert clock.as_dict()["offset_seconds"] == before


def test_clock_route_advances_and_shows_but_never_goes_back(cloud, helpers, advance_clock) -> None:
    status, body = helpers.devstack_call(cloud, "GET", "/_devstack/clock")
    assert status == 200
    before = body["offset_seconds"]  # earlier tests may have moved it
    shown = advance_clock(WEEK)
    assert shown["offset_seconds"] == before + WEEK
    assert _close(datetime.fromisoformat(shown["now"]), datetime.now(UTC) + timedelta(seconds=before + WEEK))
    status, body = helpers.devstack_call(cloud, "POST", "/_devstack/clock", {"advance_seconds": -5})
    assert status == 400 and "advance_seconds must be a number >= 0" in body["error"]
    status, _ = helpers.devstack_call(cloud, "DELETE", "/_devstack/clock")
    assert status == 405  # FSR records, launch times and tokens stamped on it would be in the future
    assert helpers.devstack_call(cloud, "GET", "/_devstack/clock")[1]["offset_seconds"] == before + WEEK


def test_a_week_later_launch_time_snapshot_time_and_date_header_follow(ec2, ssm, launch, advance_clock) -> None:
    advance_clock(WEEK)
    week_later = clock.now()
    answer = ec2.describe_regions()
    assert _close(parsedate_to_datetime(answer["ResponseMetadata"]["HTTPHeaders"]["date"]), week_later)
    instance_id = launch()
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert _close(instance["LaunchTime"], week_later)
    volume = ec2.create_volume(AvailabilityZone="us-west-2a", Size=1)
    assert _close(volume["CreateTime"], week_later)
    snapshot = ec2.create_snapshot(VolumeId=volume["VolumeId"])
    assert _close(snapshot["StartTime"], week_later)
    ec2.delete_snapshot(SnapshotId=snapshot["SnapshotId"])
    ssm.put_parameter(Name="/devstack-test/clock", Value="snap-0", Type="String", Overwrite=True)
    parameter = ssm.get_parameter(Name="/devstack-test/clock")["Parameter"]
    assert _close(parameter["LastModifiedDate"], week_later)
    ec2.terminate_instances(InstanceIds=[instance_id])
    reason = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0][
        "StateTransitionReason"]
    assert reason.startswith(f"User initiated ({week_later:%Y-%m-%d}")


def test_fsr_transitions_follow_the_simulated_clock(ec2, set_faults, advance_clock) -> None:
    set_faults(fsr_enabling_seconds=3600, fsr_optimizing_seconds=7200, fsr_disabling_seconds=600)
    volume = ec2.create_volume(AvailabilityZone="us-west-2a", Size=1)
    snapshot_id = ec2.create_snapshot(VolumeId=volume["VolumeId"])["SnapshotId"]

    def state() -> str:
        return ec2.describe_fast_snapshot_restores(Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}])[
            "FastSnapshotRestores"][0]["State"]

    try:
        ec2.enable_fast_snapshot_restores(AvailabilityZones=["us-west-2a"], SourceSnapshotIds=[snapshot_id])
        assert state() == "enabling"
        advance_clock(3600)
        assert state() == "optimizing"
        advance_clock(7200)
        assert state() == "enabled"
        ec2.disable_fast_snapshot_restores(AvailabilityZones=["us-west-2a"], SourceSnapshotIds=[snapshot_id])
        assert state() == "disabling"
        advance_clock(600)
        assert state() == "disabled"
    finally:
        ec2.delete_snapshot(SnapshotId=snapshot_id)


def test_ecr_token_expires_on_the_simulated_clock(aws, advance_clock) -> None:
    """ECR tokens last 12 h (https://docs.aws.amazon.com/AmazonECR/latest/userguide/registry_auth.html):
    13 simulated hours later the token is refused."""
    from devstack.moto_ext.ecr import models as ecr_tokens

    data = aws("ecr").get_authorization_token()["authorizationData"][0]
    assert _close(data["expiresAt"], clock.now() + timedelta(hours=12))
    password = ecr_tokens.issue("123456789012", "us-west-2").password
    host = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
    assert ecr_tokens.check_pull(password, host, None).password == password
    advance_clock(13 * 3600)
    with pytest.raises(ecr_tokens.Denied, match="expired"):
        ecr_tokens.check_pull(password, host, None)
