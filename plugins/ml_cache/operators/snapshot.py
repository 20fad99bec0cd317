"""The cache snapshot: create (or find again) by tag, wait; then Fast Snapshot Restore in every AZ."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.amazon.aws.utils import validate_execute_complete_event
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowFailException

from ml_cache.errors import DeadlinePassed
from ml_cache.fsr_lifecycle import BILLED_FSR_STATES, FsrQuotaExceeded, check_fsr_quota, disable_fsr
from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.links import SnapshotLink
from ml_cache.operators.base import CacheAwsOperator
from ml_cache.settings.models import LifecycleConfig
from ml_cache.tags import run_tags
from ml_cache.triggers.ec2 import FastSnapshotRestoreEnabledTrigger, SnapshotCompletedTrigger


class SnapshotFailed(RuntimeError):
    """The snapshot went `error` or missed its deadline; it has been deleted."""


class FastSnapshotRestoreFailed(RuntimeError):
    """FSR could not be enabled in every requested AZ."""


def deadline_passed(event: dict[str, Any]) -> bool:
    """The trigger gave up at its deadline (the provider's waiter: max attempts), not on a failure state."""
    return event["status"] != "success" and "max attempts reached" in str(event.get("message", ""))


class CreateCacheSnapshotOperator(CacheAwsOperator[CacheEc2Hook]):
    """Snapshot the builder's data volume (chosen by device name upstream), tagged with the run.

    CreateSnapshot takes no ClientToken: a retry first looks for this run's snapshot by tag and
    reuses it. Waits deferrably until `completed`; `error` or the deadline deletes it and fails (a
    snapshot still `pending` at the deadline fails at once: a retry would wait a second deadline).
    """

    aws_hook_class = CacheEc2Hook
    operator_extra_links = (SnapshotLink(),)
    template_fields: Sequence[str] = aws_template_fields(
        "pipeline", "volume_id", "name", "description", "timeout_seconds", "poll_seconds")

    def __init__(self, *, pipeline: str, volume_id: str, name: str, description: str, timeout_seconds: int,
                 poll_seconds: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.volume_id = volume_id
        self.name = name
        self.description = description
        self.timeout_seconds = timeout_seconds
        self.poll_seconds = poll_seconds

    def execute(self, context: Any) -> str:
        tags = run_tags(self.pipeline, context["ti"].run_id, role="cache")
        reusable = [s for s in self.hook.find_snapshots(tags) if s["State"] != "error"]
        if reusable:
            snapshot = max(reusable, key=lambda s: s["StartTime"])
            self.log.info("Reusing snapshot %s of this run (%s)", snapshot["SnapshotId"], snapshot["State"])
        else:
            snapshot = self.hook.create_snapshot(self.volume_id, self.description, {**tags, "Name": self.name})
            self.log.info("Created snapshot %s of %s", snapshot["SnapshotId"], self.volume_id)
        snapshot_id = snapshot["SnapshotId"]
        self.persist_link(context, SnapshotLink, snapshot_id=snapshot_id)
        if snapshot["State"] == "completed" or self.holds_soon(
                lambda: self.hook.describe_snapshot(snapshot_id).get("State") == "completed",
                poll_seconds=self.poll_seconds, timeout_seconds=self.timeout_seconds):
            return snapshot_id
        self.defer_until(SnapshotCompletedTrigger, method_name="execute_complete", snapshot_id=snapshot_id,
                         timeout_seconds=self.timeout_seconds, poll_seconds=self.poll_seconds)
        return snapshot_id  # not reached: defer raises

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> str:
        event = validate_execute_complete_event(event)
        snapshot_id = event["snapshot_id"]
        if event["status"] == "success":
            return snapshot_id
        state = self.hook.describe_snapshot(snapshot_id)
        if state.get("State") == "completed":  # completed between the trigger's last poll and now
            return snapshot_id
        self.hook.delete_snapshot(snapshot_id)
        failure = SnapshotFailed if state.get("State") == "error" else DeadlinePassed
        raise failure(
            f"Snapshot {snapshot_id} was {state.get('State')} ({state.get('StateMessage', 'no message')}, "
            f"progress {state.get('Progress')}) after {self.timeout_seconds} s: {event.get('message')}. "
            f"It was deleted."
        )


class EnableFastSnapshotRestoreOperator(CacheAwsOperator[CacheEc2Hook]):
    """Check the FSR limits, enable FSR in the chosen AZs and wait until `enabled` in all of them
    (a few seconds in the task, then deferred: operators.base.SETTLE_SECONDS).

    Over the Region's quota or the pipeline's limit the task fails at once, naming the snapshots
    that hold FSR. EnableFastSnapshotRestores answers 200 with an `Unsuccessful` list: any entry
    there fails the run (after disabling what did succeed, so a failed run costs nothing).
    """

    aws_hook_class = CacheEc2Hook
    template_fields: Sequence[str] = aws_template_fields(
        "snapshot_id", "enabled", "availability_zones", "pipeline", "lifecycle", "timeout_seconds", "poll_seconds")

    def __init__(self, *, snapshot_id: str, enabled: bool, availability_zones: list[str], pipeline: str,
                 lifecycle: LifecycleConfig, timeout_seconds: int, poll_seconds: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.lifecycle = lifecycle
        self.snapshot_id = snapshot_id
        self.enabled = enabled
        self.availability_zones = availability_zones
        self.timeout_seconds = timeout_seconds
        self.poll_seconds = poll_seconds

    def execute(self, context: Any) -> dict[str, str]:
        if not self.enabled:
            self.log.info("Fast Snapshot Restore disabled for this run")
            return {}
        try:
            check_fsr_quota(self.hook, snapshot_id=self.snapshot_id, pipeline=self.pipeline, lifecycle=self.lifecycle)
        except FsrQuotaExceeded as error:
            raise AirflowFailException(str(error)) from None  # waiting does not free a slot
        response = self.hook.enable_fast_snapshot_restores(self.snapshot_id, list(self.availability_zones))
        unsuccessful = response.get("Unsuccessful", [])
        if unsuccessful:
            succeeded = sorted({entry["AvailabilityZone"] for entry in response.get("Successful", [])})
            if succeeded:
                self.hook.disable_fast_snapshot_restores(self.snapshot_id, succeeded)
            raise FastSnapshotRestoreFailed(
                f"Fast Snapshot Restore for {self.snapshot_id} unsuccessful: {describe_unsuccessful(unsuccessful)}"
            )
        if self.holds_soon(self._enabled_everywhere, poll_seconds=self.poll_seconds,
                           timeout_seconds=self.timeout_seconds):  # no deferral: no #71580
            return self.execute_complete(context, {"status": "success", "snapshot_id": self.snapshot_id})
        self.defer_until(FastSnapshotRestoreEnabledTrigger, method_name="execute_complete",
                         snapshot_id=self.snapshot_id, timeout_seconds=self.timeout_seconds,
                         poll_seconds=self.poll_seconds)
        return {}  # not reached: defer raises

    def _enabled_everywhere(self) -> bool:
        states = {entry["AvailabilityZone"]: entry["State"]
                  for entry in self.hook.describe_fast_snapshot_restores(self.snapshot_id)}
        return all(states.get(zone) == "enabled" for zone in self.availability_zones)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, str]:
        event = validate_execute_complete_event(event)
        states = {entry["AvailabilityZone"]: entry["State"]
                  for entry in self.hook.describe_fast_snapshot_restores(self.snapshot_id)}
        missing = [zone for zone in self.availability_zones if states.get(zone) != "enabled"]
        if event["status"] != "success" or missing:
            # a failed run costs nothing: FSR still on its way to `enabled` would be billed per AZ-hour once there
            billed = sorted(zone for zone, state in states.items() if state in BILLED_FSR_STATES)
            if billed:
                disable_fsr(self.hook, self.snapshot_id, billed)
            failure = DeadlinePassed if deadline_passed(event) else FastSnapshotRestoreFailed
            raise failure(
                f"Fast Snapshot Restore for {self.snapshot_id} not enabled in {missing or 'every AZ'} within "
                f"{self.timeout_seconds} s: states {states}; {event.get('message', '')}; disabled again in "
                f"{billed or 'no AZ'}".strip()
            )
        self.log.info("Fast Snapshot Restore enabled for %s in %s", self.snapshot_id, sorted(states))
        return states


def describe_unsuccessful(entries: list[dict[str, Any]]) -> str:
    """`us-west-2c: Client.InvalidParameterValue (message)` for each failed AZ."""
    parts = []
    for entry in entries:
        for item in entry.get("FastSnapshotRestoreStateErrors", []):
            error = item.get("Error", {})
            parts.append(f"{item.get('AvailabilityZone')}: {error.get('Code')} ({error.get('Message')})")
    return "; ".join(parts) or str(entries)
