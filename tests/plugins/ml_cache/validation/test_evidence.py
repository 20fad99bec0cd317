"""Cache hit or miss and pull durations, from recorded kubelet events (fixtures/)."""

from __future__ import annotations

import json

import pytest

from ml_cache.validation.evidence import cache_hit, parse_go_duration, parse_timestamp, pull_seconds
from ml_cache.validation.report import node_result
from tests.plugins.ml_cache.validation.recorded import recorded


@pytest.mark.parametrize(("name", "expected"), [
    ("cached_pod", True),            # 1.33 "... already present on machine and can be accessed by the pod"
    ("legacy_events_pod", True),     # <= 1.32 "... already present on machine"
    ("microtime_events_pod", True),  # events.k8s.io kubelet events
    ("failed_pod", True),            # the image was there, the container failed: still a hit
    ("uncached_pod", False),         # Pulling + "Successfully pulled image ... Image size"
    ("image_pull_backoff_pod", False),
])
def test_cache_hit_on_recorded_events(name, expected):
    _, events = recorded(name)
    assert cache_hit(events) is expected


def test_no_pull_event_is_unknown_not_a_hit():
    _, events = recorded("cached_pod")
    assert cache_hit([]) is None
    assert cache_hit([e for e in events if e["reason"] != "Pulled"]) is None


@pytest.mark.parametrize("message", [
    'Successfully pulled image "busybox:1.36" in 5.1s',
    'Successfully pulled image "busybox:1.36" in 5.123s (5.123s including waiting)',
    'Successfully pulled image "busybox:1.36" in 313ms (1.594s including waiting). Image size: 4269694 bytes.',
])
def test_every_kubelet_pulled_message_variant_is_a_miss(message):
    assert cache_hit([{"reason": "Pulled", "message": message, "source": {"component": "kubelet"}}]) is False


def test_never_pull_policy_and_a_pull_after_a_hit_are_misses():
    never = {"reason": "ErrImageNeverPull", "message": 'Container image "x:1" is not present with pull policy of Never'}
    assert cache_hit([never]) is False
    hit = {"reason": "Pulled", "message": 'Container image "x:1" already present on machine',
           "firstTimestamp": "2026-11-29T03:00:01Z"}
    pull = {"reason": "Pulling", "message": 'Pulling image "x:1"', "firstTimestamp": "2026-11-29T03:00:05Z"}
    assert cache_hit([hit, pull]) is False


def test_cache_hit_looks_at_the_asked_image_only():
    events = [
        {"reason": "Pulled", "message": 'Container image "docker.io/library/busybox:1.36" already present on machine'},
        {"reason": "Pulling", "message": 'Pulling image "127.0.0.1:5000/sidecar:2"'},
    ]
    assert cache_hit(events, "busybox:1.36") is True  # docker.io/library/ is implied
    assert cache_hit(events, "127.0.0.1:5000/sidecar:2") is False
    assert cache_hit(events, "nvcr.io/nvidia/pytorch:24.08-py3") is None
    assert cache_hit(events) is False


def test_events_from_other_components_do_not_count():
    event = {"reason": "Pulled", "message": 'Container image "x:1" already present on machine',
             "source": {"component": "some-controller"}, "reportingComponent": "some-controller"}
    assert cache_hit([event]) is None


@pytest.mark.parametrize(("text", "seconds"), [
    ("5.123s", 5.123), ("313ms", 0.313), ("5m33.927s", 333.927), ("1h2m3s", 3723.0), ("796.5µs", 0.000797),
    ("", None), ("5 s", None), ("abc", None),
])
def test_go_durations(text, seconds):
    assert parse_go_duration(text) == seconds


def test_pull_seconds_comes_from_the_kubelet_message():
    _, events = recorded("uncached_pod")
    assert pull_seconds(events) == 333.927
    assert pull_seconds(recorded("cached_pod")[1]) is None


# --------------------------------------------------------------------------- start-up stages


def test_events_of_an_earlier_pod_with_the_same_name_are_ignored():
    pod, events = recorded("cached_pod")
    stale = json.loads(json.dumps(recorded("image_pull_backoff_pod")[1]))
    for event in stale:
        event["involvedObject"].update(name=pod["metadata"]["name"], uid="00000000-old0-pod0-0000-000000000000")
    assert node_result(pod, stale + events).cache_hit is True


def test_parse_timestamp_precision():
    assert parse_timestamp("2026-11-29T02:40:10Z").digits == 0
    micro = parse_timestamp("2026-11-29T02:40:10.184322Z")
    assert micro.digits == 6 and micro.at.microsecond == 184322
    offset = parse_timestamp("2026-11-29T04:40:10.5+02:00")
    assert offset.at == parse_timestamp("2026-11-29T02:40:10.500Z").at
    assert parse_timestamp(None) is None and parse_timestamp("yesterday") is None


# --------------------------------------------------------------------------- verdict and report


def test_refs_compare_in_their_canonical_form():
    from ml_cache.images import canonical_reference

    assert canonical_reference("busybox") == canonical_reference("docker.io/library/busybox:latest")
    assert canonical_reference(" library/busybox:1.36") == "docker.io/library/busybox:1.36"
    assert canonical_reference("index.docker.io/acme/app:2") == "docker.io/acme/app:2"
    assert canonical_reference("Not A Ref") == "Not A Ref"  # compared as written
    event = {"reason": "Pulled", "message": 'Container image "library/busybox:1.36" already present on machine'}
    assert cache_hit([event], "docker.io/library/busybox:1.36") is True
    assert cache_hit([event], "busybox:1.37") is None
