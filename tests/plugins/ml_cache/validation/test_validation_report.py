"""The verdict, the speed-up and the report renderings, on recorded pods (fixtures/)."""

from __future__ import annotations

import json

import pytest

from ml_cache.validation.manifest import ValidationInputError
from ml_cache.validation.report import (
    NodeResult,
    ValidationReport,
    evaluate,
    is_cold,
    node_result,
    report_markdown,
    report_table,
    short_image,
    speedup,
)
from tests.plugins.ml_cache.validation.recorded import recorded, result


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


def test_a_warm_baseline_is_left_out_of_the_speedup():
    """A baseline node that had pulled the image before measured no pull: not an uncached start."""
    cached = result("cached_pod")
    cold = NodeResult.from_dict({**result("uncached_pod").to_dict(), "image": cached.image})
    warm = NodeResult.from_dict({**cached.to_dict(), "node": "ip-10-0-9-9.us-west-2.compute.internal"})
    assert is_cold(cold) and is_cold(cold.to_dict()) and not is_cold(warm) and not is_cold(warm.to_dict())
    only_warm = evaluate([cached], max_startup_seconds=10, baselines=[warm])
    assert only_warm.passed and only_warm.speedups == {}  # no cold start: no ratio, not 1x
    assert only_warm.baselines[0].cache_hit is True  # still reported, as measured
    assert "baseline, warm: not counted" in report_table(only_warm)
    both = evaluate([cached], max_startup_seconds=10, baselines=[warm, cold])
    assert both.speedups == {cached.image: 168.0}  # the cold one's 336 s, not the warm one's 2 s


def test_report_table_is_fixed_width_and_names_failures():
    report = evaluate([result("cached_pod", instance_id="i-0abc1234def567890"), result("uncached_pod")],
                      max_startup_seconds=30)
    table = report_table(report.to_dict())
    lines = table.splitlines()
    assert lines[0].split() == ["node", "instance", "image", "cache", "scheduled", "image_ready", "started",
                                "cont_ready", "ready", "result"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split() == ["ip-10-0-12-34", "i-0abc1234def567890", "large:1", "hit", "0.184", "1.000", "2.000",
                                "2.000", "2.000", "PASS"]
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
    assert ("| ip-10-0-12-34 | - | `large:1` | hit | "
            "0.184 | 1.000 | 2.000 | 2.000 | 2.000 | PASS |") in markdown
    assert "(baseline) | - | `large:1` | MISS |" in markdown
    assert "cached start **168x** faster than uncached" in markdown
    assert "**Failures**" not in markdown
    failed = report_markdown(evaluate([result("failed_pod")], max_startup_seconds=10))
    assert "### Cache validation FAILED" in failed and "- ip-10-0-12-34" in failed and "exited 1 (Error)" in failed


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


DIGEST = "sha256:" + "1234abcd" * 8


@pytest.mark.parametrize(("ref", "short"), [
    (f"nvcr.io/nvidia/pytorch:24.08-py3@{DIGEST}", "pytorch:24.08-py3@sha256:1234abcd…"),
    ("public.ecr.aws/docker/library/busybox:1.37", "busybox:1.37"),
    (f"127.0.0.1:5000/ml-cache-demo/small@{DIGEST}", "small@sha256:1234abcd…"),
    (f"not a ref@{DIGEST}", "not a ref@sha256:1234abcd…"),
])
def test_short_image_keeps_the_last_name_component_and_abbreviates_the_digest(ref, short):
    assert short_image(ref) == short


def test_a_pinned_image_table_fits_and_the_data_keeps_every_value():
    pinned = f"123456789012.dkr.ecr.us-west-2.amazonaws.com/ml-team/training-images/pytorch:24.08-py3@{DIGEST}"
    cached = NodeResult.from_dict({**result("cached_pod", instance_id="i-0abc1234def567890").to_dict(),
                                   "image": pinned})
    uncached = NodeResult.from_dict({**result("uncached_pod").to_dict(), "image": pinned})
    report = evaluate([cached, uncached], max_startup_seconds=30)
    table = report_table(report)
    assert DIGEST not in table and " pytorch:24.08-py3@sha256:1234abcd… " in table
    assert max(len(line) for line in table.splitlines()[:4]) <= 140  # fits the log view; the full refs made it 250
    assert "###" not in table and "|" not in table  # plain text, no Markdown in the log
    assert DIGEST not in report_markdown(report)
    data = report.to_dict()
    assert data["images"] == [pinned] and data["nodes"][0].endswith(".compute.internal")
    assert any(DIGEST in failure for failure in data["failures"])
