"""Cache hit/miss, start-up stages and the report, on recorded Kubernetes API shapes (fixtures/)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from ml_cache import validation
from ml_cache.validation import (
    NodeResult,
    ValidationInputError,
    ValidationReport,
    cache_hit,
    evaluate,
    node_result,
    pick_image,
    read_ready_event,
    report_markdown,
    report_table,
    speedup,
    startup_stages,
    validation_pod_manifest,
)

FIXTURES = Path(__file__).parent / "fixtures"
DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32


def recorded(name: str) -> tuple[dict, list[dict]]:
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    return data["pod"], data["events"]


def result(name: str, **kwargs) -> NodeResult:
    pod, events = recorded(name)
    return node_result(pod, events, **kwargs)


# --------------------------------------------------------------------------- cache hit or miss


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
    assert validation.parse_go_duration(text) == seconds


def test_pull_seconds_comes_from_the_kubelet_message():
    _, events = recorded("uncached_pod")
    assert validation.pull_seconds(events) == 333.927
    assert validation.pull_seconds(recorded("cached_pod")[1]) is None


# --------------------------------------------------------------------------- start-up stages


def test_cached_pod_stages_to_the_millisecond():
    stages = startup_stages(*recorded("cached_pod"))
    assert {k: stages[k] for k in validation.STAGES} == {
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
    assert [stages[k] for k in validation.STAGES] == [0.0, 1.0, 2.0, 3.0, 3.0]
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


def test_events_of_an_earlier_pod_with_the_same_name_are_ignored():
    pod, events = recorded("cached_pod")
    stale = json.loads(json.dumps(recorded("image_pull_backoff_pod")[1]))
    for event in stale:
        event["involvedObject"].update(name=pod["metadata"]["name"], uid="00000000-old0-pod0-0000-000000000000")
    assert node_result(pod, stale + events).cache_hit is True


def test_parse_timestamp_precision():
    assert validation.parse_timestamp("2026-11-29T02:40:10Z").digits == 0
    micro = validation.parse_timestamp("2026-11-29T02:40:10.184322Z")
    assert micro.digits == 6 and micro.at.microsecond == 184322
    offset = validation.parse_timestamp("2026-11-29T04:40:10.5+02:00")
    assert offset.at == validation.parse_timestamp("2026-11-29T02:40:10.500Z").at
    assert validation.parse_timestamp(None) is None and validation.parse_timestamp("yesterday") is None


# --------------------------------------------------------------------------- verdict and report


def test_node_result_reads_node_image_and_outcome():
    r = result("cached_pod", instance_id="i-0abc1234def567890")
    assert (r.node, r.image, r.pod_name) == ("ip-10-0-12-34.us-west-2.compute.internal",
                                             "127.0.0.1:5000/ml-cache-demo/large:1", "mlc-validate-3f9c2a7d1b04")
    assert r.cache_hit is True and r.succeeded and r.total_seconds == 2.0
    assert result("failed_pod").outcome == "container validate exited 1 (Error)"
    assert "ImagePullBackOff" in result("image_pull_backoff_pod").outcome


def test_evaluate_passes_cache_hits_within_the_threshold():
    report = evaluate([result("cached_pod"), result("microtime_events_pod")], max_startup_seconds=5)
    assert report.passed and report.failures == []
    assert [r.passed for r in report.results] == [True, True]
    assert report.results[0].reason == "cache hit, started in 2.000s"


@pytest.mark.parametrize(("name", "threshold", "reason"), [
    ("uncached_pod", 1000, "cache miss: the image was not on the node, the kubelet had to pull it, pulled in 333.927s"),
    ("image_pull_backoff_pod", 1000, "cache miss: the image was not on the node, the kubelet had to pull it"),
    ("failed_pod", 1000, "pod did not succeed: container validate exited 1 (Error)"),
    ("legacy_events_pod", 2.999, "start-up 3.000s over the 2.999s threshold"),
])
def test_evaluate_fails_with_the_cause(name, threshold, reason):
    report = evaluate([result("cached_pod"), result(name)], max_startup_seconds=threshold)
    assert not report.passed
    assert report.results[0].passed is True
    assert report.results[1].passed is False and report.results[1].reason == reason
    assert report.failures == [f"{report.results[1].node} {report.results[1].image}: {reason}"]


def test_threshold_is_inclusive():
    assert evaluate([result("legacy_events_pod")], max_startup_seconds=3.0).passed


def test_unknown_cache_status_and_no_pods_fail():
    pod, _ = recorded("cached_pod")
    unknown = evaluate([node_result(pod, [])], max_startup_seconds=60)
    assert not unknown.passed and "cache status unknown" in unknown.failures[0]
    empty = evaluate([], max_startup_seconds=60)
    assert not empty.passed and "no validation pods" in empty.failures[0]
    with pytest.raises(ValidationInputError):
        evaluate([], max_startup_seconds=0)


def test_every_expected_node_and_image_needs_a_result():
    cached = result("cached_pod")
    complete = evaluate([cached], max_startup_seconds=60, expected_nodes=[cached.node], expected_images=[cached.image])
    assert complete.passed
    partial = evaluate([cached], max_startup_seconds=60, expected_nodes=[cached.node, "gpu-node-1"],
                       expected_images=[cached.image, "busybox:1.36"])
    assert not partial.passed
    assert partial.failures == [  # sorted by node, then image
        f"gpu-node-1 {cached.image}: no validation result (pod never created or never read)",
        "gpu-node-1 busybox:1.36: no validation result (pod never created or never read)",
        f"{cached.node} busybox:1.36: no validation result (pod never created or never read)",
    ]


def test_speedup_ratio():
    assert speedup(2.0, 336.0) == 168.0
    assert speedup(0.0, 0.5) == 500.0  # a start inside the same second counts as 1 ms
    assert speedup(None, 3.0) is None and speedup(1.0, None) is None


def test_report_round_trips_through_json_with_baseline_speedup():
    cached = result("cached_pod")
    cached.image = "nvcr.io/nvidia/pytorch:24.08-py3"
    report = evaluate([cached.to_dict()], max_startup_seconds=10, baselines=[result("uncached_pod")])
    assert report.passed and report.speedups == {"nvcr.io/nvidia/pytorch:24.08-py3": 168.0}
    data = json.loads(json.dumps(report.to_dict()))
    assert data["nodes"] == ["ip-10-0-12-34.us-west-2.compute.internal"]
    assert ValidationReport.from_dict(data).to_dict() == data
    assert data["baselines"][0]["passed"] is None  # a baseline is never judged


def test_report_table_is_fixed_width_and_names_failures():
    report = evaluate([result("cached_pod", instance_id="i-0abc1234def567890"), result("uncached_pod")],
                      max_startup_seconds=30)
    table = report_table(report.to_dict())
    lines = table.splitlines()
    assert lines[0].split() == ["node", "instance", "image", "cache", "scheduled", "image_ready", "started",
                                "cont_ready", "ready", "result"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split() == ["ip-10-0-12-34.us-west-2.compute.internal", "i-0abc1234def567890",
                                "127.0.0.1:5000/ml-cache-demo/large:1", "hit", "0.184", "1.000", "2.000", "2.000",
                                "2.000", "PASS"]
    assert lines[3].split()[3:] == ["MISS", "0.512", "335.000", "336.000", "336.000", "336.000", "FAIL"]
    assert lines[0].index("result") == lines[2].index("PASS")  # columns line up
    assert lines[0].rindex("ready") + len("ready") == lines[2].index("2.000  PASS") + len("2.000")  # right-aligned
    assert "validation FAILED: 2 pod(s), threshold 30s" in table
    assert "failure: ip-10-0-44-9.us-west-2.compute.internal nvcr.io/nvidia/pytorch:24.08-py3: cache miss" in table


def test_report_markdown_summary():
    cached = result("cached_pod")
    report = evaluate([cached], max_startup_seconds=10,
                      baselines=[NodeResult.from_dict({**result("uncached_pod").to_dict(), "image": cached.image})])
    markdown = report_markdown(report)
    assert markdown.startswith("### Cache validation passed\n")
    assert "1/1 pods started from the cache; start-up threshold 10 s" in markdown
    assert ("| ip-10-0-12-34.us-west-2.compute.internal | - | `127.0.0.1:5000/ml-cache-demo/large:1` | hit | "
            "0.184 | 1.000 | 2.000 | 2.000 | 2.000 | PASS |") in markdown
    assert "(baseline) | - | `127.0.0.1:5000/ml-cache-demo/large:1` | MISS |" in markdown
    assert "cached start **168x** faster than uncached" in markdown
    assert "**Failures**" not in markdown
    failed = report_markdown(evaluate([result("failed_pod")], max_startup_seconds=10))
    assert "### Cache validation FAILED" in failed and "- ip-10-0-12-34" in failed and "exited 1 (Error)" in failed


# --------------------------------------------------------------------------- the validation pod


def test_validation_pod_manifest_sets_fields_on_the_template():
    pod = validation_pod_manifest(namespace="ml-cache", image="nvcr.io/nvidia/pytorch:24.08-py3",
                                  node_name="ip-10-0-12-34.us-west-2.compute.internal",
                                  active_deadline_seconds=900, run_id="manual__2026-11-29T02:36:21.123456+00:00")
    assert pod["metadata"]["name"] == validation.validation_pod_name(
        "ip-10-0-12-34.us-west-2.compute.internal", "nvcr.io/nvidia/pytorch:24.08-py3",
        "manual__2026-11-29T02:36:21.123456+00:00")
    assert pod["metadata"]["name"].startswith("mlc-validate-") and len(pod["metadata"]["name"]) == 25
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ml-container-cache"
    # the run id's ':' and '+' are not allowed in a label value: replaced, and a hash keeps it distinct
    assert re.fullmatch(r"manual__2026-11-29T02-36-21\.123456-00-00-[0-9a-f]{8}",
                        pod["metadata"]["labels"]["ml-cache/run-id"])
    assert pod["metadata"]["annotations"]["ml-cache/image"] == "nvcr.io/nvidia/pytorch:24.08-py3"
    spec = pod["spec"]
    assert spec["nodeName"] == "ip-10-0-12-34.us-west-2.compute.internal" and "nodeSelector" not in spec
    assert spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] == 900
    assert spec["automountServiceAccountToken"] is False
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    container = spec["containers"][0]
    assert container["image"] == "nvcr.io/nvidia/pytorch:24.08-py3"
    assert container["imagePullPolicy"] == "IfNotPresent" and "command" not in container
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_validation_pod_name_differs_per_node_image_and_run():
    names = {validation.validation_pod_name(node, image, run)
             for node in ("a", "b") for image in ("x:1", "y:1") for run in ("r1", "r2")}
    assert len(names) == 8
    assert all(validation._DNS1123_LABEL_RE.fullmatch(name) for name in names)


def test_hostile_values_stay_data():
    nasty = 'evil:1"\nspec: {hostNetwork: true}'
    pod = validation_pod_manifest(namespace="default", image=nasty, node_name="n1", active_deadline_seconds=60,
                                  command=["sh", "-c", "echo $(id) ready"], labels={"team": "a b/c"},
                                  toleration_key="example.com/accelerator")
    assert pod["spec"]["containers"][0]["image"] == nasty and "hostNetwork" not in pod["spec"]
    assert pod["spec"]["containers"][0]["command"] == ["sh", "-c", "echo $(id) ready"]
    assert pod["metadata"]["labels"]["team"].startswith("a-b-c")
    assert pod["spec"]["tolerations"][0]["key"] == "example.com/accelerator"
    for bad in ({"namespace": "Bad_NS"}, {"node_name": ""}, {"active_deadline_seconds": 0},
                {"name": "UPPER"}, {"command": []}):
        kwargs = {"namespace": "default", "image": "x:1", "node_name": "n1", "active_deadline_seconds": 60, **bad}
        with pytest.raises(ValidationInputError):
            validation_pod_manifest(**kwargs)


def test_template_path_override(tmp_path):
    template = yaml.safe_load(validation.DEFAULT_TEMPLATE.read_text())
    template["metadata"]["labels"]["team"] = "vision"
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(template))
    pod = validation_pod_manifest(namespace="default", image="x:1", node_name="n1", active_deadline_seconds=60,
                                  template_path=path)
    assert pod["metadata"]["labels"]["team"] == "vision"


def test_template_from_the_environment_and_a_clear_error_when_missing(tmp_path, monkeypatch):
    kwargs = {"namespace": "default", "image": "x:1", "node_name": "n1", "active_deadline_seconds": 60}
    monkeypatch.setenv(validation.TEMPLATE_ENV, str(tmp_path / "absent.yaml"))
    with pytest.raises(ValidationInputError, match=r"absent\.yaml not found"):
        validation_pod_manifest(**kwargs)
    (tmp_path / "pod.yaml").write_text(validation.DEFAULT_TEMPLATE.read_text())
    monkeypatch.setenv(validation.TEMPLATE_ENV, str(tmp_path / "pod.yaml"))
    assert validation_pod_manifest(**kwargs)["spec"]["nodeName"] == "n1"


@pytest.mark.parametrize(("text", "expected"), [
    ("abc", "abc"),
    ("scheduled__2026-11-29T03:00:00+00:00", "scheduled__2026-11-29T03-00-00-00-00-"),
    ("-x-", "x-"),
    ("a" * 80, "a" * 54 + "-"),
])
def test_label_values(text, expected):
    value = validation.label_value(text)
    assert value.startswith(expected) and len(value) <= 63
    assert validation._LABEL_VALUE_RE.fullmatch(value)


# --------------------------------------------------------------------------- the Asset event contract


def sample_extra() -> dict:
    return {
        "snapshot_id": "snap-0123456789abcdef0",
        "image_set": "sha256:" + "ee" * 32,
        "images": [{"ref": "nvcr.io/nvidia/pytorch:24.08-py3", "digest": DIGEST},
                   {"ref": "public.ecr.aws/docker/library/busybox:1.37", "digest": OTHER_DIGEST}],
        "arch": "x86_64",
        "validation": {"passed": True, "results": []},
        "run_id": "asset_triggered__2026-11-29T03:00:00+00:00",
    }


def test_read_ready_event_and_pick_an_image_by_name():
    event = read_ready_event(sample_extra())
    assert event["snapshot_id"] == "snap-0123456789abcdef0" and event["arch"] == "x86_64"
    assert pick_image(event["images"], "pytorch") == f"nvcr.io/nvidia/pytorch@{DIGEST}"
    assert pick_image(event["images"], "nvcr.io/nvidia/pytorch") == f"nvcr.io/nvidia/pytorch@{DIGEST}"
    busybox = pick_image(event["images"], "docker/library/busybox")
    assert busybox == f"public.ecr.aws/docker/library/busybox@{OTHER_DIGEST}"


def test_pick_image_refuses_missing_or_ambiguous_names():
    images = read_ready_event(sample_extra())["images"]
    with pytest.raises(ValidationInputError, match="no cached image named 'tensorflow'"):
        pick_image(images, "tensorflow")
    with pytest.raises(ValidationInputError, match="no cached image named 'torch'"):
        pick_image(images, "torch")  # a suffix of a path component is not a match
    twice = [*images, {"ref": "ghcr.io/acme/pytorch:2", "digest": DIGEST}]
    with pytest.raises(ValidationInputError, match="2 cached images named 'pytorch'"):
        pick_image(twice, "pytorch")


@pytest.mark.parametrize("change", [
    {"snapshot_id": "vol-123"},
    {"images": []},
    {"images": [{"ref": "x:1", "digest": "latest"}]},
    {"validation": {"passed": False}},
])
def test_read_ready_event_rejects_broken_contracts(change):
    with pytest.raises(ValidationInputError):
        read_ready_event({**sample_extra(), **change})
    with pytest.raises(ValidationInputError):
        read_ready_event(None)


# --------------------------------------------------------------------------- the Python client's shapes


@pytest.mark.parametrize("name", ["cached_pod", "uncached_pod", "microtime_events_pod", "legacy_events_pod"])
def test_same_result_through_the_kubernetes_client(name):
    """The DAG reads pods with the kubernetes client and `sanitize_for_serialization`: datetimes come
    back as isoformat with +00:00 (and no fraction when it is zero). The result must not change."""
    client = pytest.importorskip("kubernetes.client")
    api = client.ApiClient()
    pod, events = recorded(name)
    typed_pod = api._ApiClient__deserialize(pod, "V1Pod")
    typed_events = api._ApiClient__deserialize({"items": events, "metadata": {}}, "CoreV1EventList")
    sanitized_pod = api.sanitize_for_serialization(typed_pod)
    sanitized_events = api.sanitize_for_serialization(typed_events)["items"]
    assert sanitized_pod["metadata"]["creationTimestamp"].endswith("+00:00")
    expected, actual = node_result(pod, events).to_dict(), node_result(sanitized_pod, sanitized_events).to_dict()
    assert actual == expected
