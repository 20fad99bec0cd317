"""Start-up stages to the millisecond, from recorded pods and events (fixtures/)."""

from __future__ import annotations

from datetime import UTC, datetime

from ml_cache.validation.report import node_result
from ml_cache.validation.timing import STAGES, startup_stages
from tests.plugins.ml_cache.validation.recorded import recorded


def test_cached_pod_stages_to_the_millisecond():
    stages = startup_stages(*recorded("cached_pod"))
    assert {k: stages[k] for k in STAGES} == {
        "scheduled": 0.184, "image_ready": 1.0, "container_started": 2.0, "containers_ready": 2.0, "ready": 2.0}
    assert stages["total_seconds"] == 2.0
    assert stages["sources"] == {
        "scheduled": "event Scheduled eventTime",  # MicroTime beats the whole-second PodScheduled condition
        "image_ready": "event Pulled firstTimestamp",
        "container_started": "containerStatuses[validate].state.terminated.startedAt",
        # a completed pod's Ready/ContainersReady read False (PodCompleted); without a readiness
        # probe the container was ready once started
        "containers_ready": "containerStatuses[validate].state.terminated.startedAt (no readiness probe)",
        "ready": "containerStatuses[validate].state.terminated.startedAt (no readiness probe)",
        "created": "metadata.creationTimestamp",
    }


def test_uncached_running_pod_uses_the_ready_conditions():
    stages = startup_stages(*recorded("uncached_pod"))
    assert (stages["scheduled"], stages["image_ready"], stages["container_started"]) == (0.512, 335.0, 336.0)
    assert stages["ready"] == stages["containers_ready"] == stages["total_seconds"] == 336.0
    assert stages["sources"]["ready"] == "condition Ready"
    assert stages["sources"]["container_started"] == "containerStatuses[example].state.running.startedAt"


def test_null_event_time_falls_back_to_first_timestamp_and_order_does_not_matter():
    pod, events = recorded("legacy_events_pod")
    assert all(event["eventTime"] is None for event in events)
    stages = startup_stages(pod, events)
    assert [stages[k] for k in STAGES] == [0.0, 1.0, 2.0, 3.0, 3.0]
    assert stages["sources"]["scheduled"] == "event Scheduled firstTimestamp"
    # it has a readiness probe: a completed pod's ready time is the container's finish
    assert stages["sources"]["ready"] == "containerStatuses[validate].state.terminated.finishedAt"
    assert startup_stages(pod, list(reversed(events)))["image_ready"] == 1.0


def test_microtime_events_beat_whole_second_statuses():
    stages = startup_stages(*recorded("microtime_events_pod"))
    # no scheduler event for a nodeName pod: PodScheduled (set by the kubelet) is used
    assert stages["scheduled"] == 0.0 and stages["sources"]["scheduled"] == "condition PodScheduled"
    assert stages["image_ready"] == 0.735  # 03:10:00.734512 - 03:10:00
    assert stages["container_started"] == 0.913 and stages["sources"]["container_started"] == "event Started eventTime"
    # no readiness probe: ready once started, to the microsecond rather than the whole second
    assert stages["total_seconds"] == stages["ready"] == stages["containers_ready"] == 0.913
    assert stages["sources"]["ready"] == "event Started eventTime (no readiness probe)"


def test_the_client_create_time_removes_the_whole_second_truncation():
    pod, events = recorded("microtime_events_pod")  # created 03:10:00Z, started 03:10:00.912774Z
    stages = startup_stages(pod, events, created_at="2026-11-29T03:10:00.600000Z")
    assert stages["sources"]["created"] == "client create time"
    assert (stages["image_ready"], stages["container_started"], stages["ready"]) == (0.135, 0.313, 0.313)
    # the whole-second PodScheduled (03:10:00Z) lies before the precise origin only by truncation
    assert stages["scheduled"] == 0.0
    assert stages["sources"]["scheduled"] == "condition PodScheduled (whole second, clamped to the origin)"
    as_datetime = startup_stages(pod, events, created_at=datetime(2026, 11, 29, 3, 10, 0, 600000, tzinfo=UTC))
    assert as_datetime["ready"] == 0.313
    # a client clock that disagrees with the server by more than the tolerance is not trusted
    skewed = startup_stages(pod, events, created_at="2026-11-29T03:09:50.600000Z")
    assert skewed["sources"]["created"] == "metadata.creationTimestamp" and skewed["ready"] == 0.913
    assert node_result(pod, events, created_at="2026-11-29T03:10:00.600000Z").total_seconds == 0.313


def test_failed_and_pending_pods_never_reach_ready():
    failed = startup_stages(*recorded("failed_pod"))
    assert failed["container_started"] == 2.0
    assert failed["ready"] is None and failed["total_seconds"] is None  # exit 1 is not "ready"
    pending = startup_stages(*recorded("image_pull_backoff_pod"))
    assert pending["image_ready"] is None and pending["container_started"] is None and pending["ready"] is None


def test_missing_events_leave_only_status_stages():
    pod, _ = recorded("cached_pod")
    stages = startup_stages(pod, [])
    assert stages["image_ready"] is None and stages["sources"]["image_ready"] is None
    assert stages["scheduled"] == 0.0 and stages["ready"] == 2.0
