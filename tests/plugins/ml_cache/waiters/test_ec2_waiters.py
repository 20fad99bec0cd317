"""waiters/ec2.json `fast_snapshot_restores_enabled`: every AZ entry enabled; disabling/disabled end the wait."""

from __future__ import annotations

import pytest

SNAPSHOT = "snap-0123456789abcdef0"
FILTERS = [{"Name": "snapshot-id", "Values": [SNAPSHOT]}]


def _answer(*states: str) -> dict:
    zones = ["us-west-2a", "us-west-2b", "us-west-2c"]
    return {"FastSnapshotRestores": [{"SnapshotId": SNAPSHOT, "AvailabilityZone": zone, "State": state}
                                     for zone, state in zip(zones, states, strict=False)]}


@pytest.mark.parametrize(("responses", "expected"), [
    ([_answer("enabled", "enabled")], "success"),
    ([_answer("enabling", "optimizing"), _answer("optimizing", "enabled"), _answer("enabled", "enabled")], "success"),
    ([_answer("enabled", "optimizing")], "retry"),
    ([_answer()], "retry"),  # no entry (every AZ Unsuccessful, or not enabled yet) is not success
    ([_answer("enabled", "disabling")], "failure"),
    ([_answer("optimizing", "disabled")], "failure"),
    (["InvalidParameterValue"], "error"),
], ids=["enabled", "enabling-optimizing-enabled", "one-az-optimizing", "no-entries", "disabling", "disabled",
        "error-response"])
def test_fast_snapshot_restores_enabled(waiter_outcome, responses, expected) -> None:
    assert waiter_outcome("ec2", "fast_snapshot_restores_enabled", responses, Filters=FILTERS) == expected
