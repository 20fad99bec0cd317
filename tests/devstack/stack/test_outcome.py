"""What `run` prints: phases of a run, and the validation report through its own Markdown."""

from __future__ import annotations

from devstack.stack.outcome import print_phases, print_validation, print_week_baseline

MARKDOWN = (
    "### Cache validation passed\n\n"
    "| Node | Instance | Image | Cache | Scheduled | Image ready | Started | Containers ready | Ready | Result |\n"
    "|---|---|---|---|--:|--:|--:|--:|--:|---|\n"
    "| ip-10-0-0-1 | i-1 | `127.0.0.1:5000/ml-cache-demo/large:1.0@sha256:ab` | hit "
    "| 0.1 | 0.2 | 0.3 | 0.4 | 0.5 | PASS |\n"
)


def test_validation_prints_the_reports_markdown_and_the_cached_versus_uncached_start(capsys) -> None:
    image = "127.0.0.1:5000/ml-cache-demo/large:1.0@sha256:ab"
    report = {
        "passed": True, "max_startup_seconds": 60, "failures": [], "markdown": MARKDOWN,
        "results": [{"image": image, "node": "ip-10-0-0-1", "total_seconds": 0.5}],
        "baselines": [{"image": image, "node": "ip-10-0-0-2", "total_seconds": 25.0}],
        "speedups": {image: 50.0},
    }
    print_validation(report)
    out = capsys.readouterr().out
    assert MARKDOWN in out
    assert ("  127.0.0.1:5000/ml-cache-demo/large:1.0: cached start 0.500 s vs uncached 25.000 s "
            "on the same instance type: 50x faster") in out


def test_validation_without_a_baseline_prints_only_the_markdown(capsys) -> None:
    print_validation({"markdown": "### Cache validation passed\n", "results": [], "speedups": {}})
    assert capsys.readouterr().out == "\n### Cache validation passed\n\n"


def test_phases_list_each_task_with_its_seconds_and_the_failed_ones(capsys) -> None:
    run = {"dag_id": "ml_container_cache_build", "dag_run_id": "manual__1", "state": "failed"}
    tis = [
        {"task_id": "launch_builder", "start_date": "2026-01-01T00:00:02", "duration": 3.5, "state": "success"},
        {"task_id": "validate_inputs", "start_date": "2026-01-01T00:00:01", "duration": 0.5, "state": "success"},
        {"task_id": "run_build_script", "start_date": None, "duration": None, "state": "failed"},
    ]
    print_phases(run, tis)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "ml_container_cache_build run manual__1: FAILED"
    assert [line.split()[0] for line in lines[3:6]] == ["validate_inputs", "launch_builder", "run_build_script"]
    assert lines[4].split()[1:] == ["3.5", "success"]
    assert lines[5].split()[1] == "-"
    assert lines[6] == "Failed tasks: ['run_build_script']"


def test_each_image_line_says_how_resolve_images_authenticated(capsys) -> None:
    from devstack.stack.outcome import print_images

    small = "127.0.0.1:5000/ml-cache-demo/small:1.0@sha256:" + "1" * 64
    tools = "123456789012.dkr.ecr.us-west-2.amazonaws.com/ml-cache-demo/tools:1.0@sha256:" + "2" * 64
    large = "127.0.0.1:5003/private/ml-cache-demo/large:1.0@sha256:" + "3" * 64
    images = [{"ref": ref, "digest": ref.split("@")[1], "bytes": 10} for ref in (small, tools, large)]
    resolved = {"volume_size_gib": 4, "images": [
        {"ref": small, "digest": small.split("@")[1], "authenticated": "anonymous"},
        {"ref": tools, "digest": tools.split("@")[1], "authenticated": "ecr"},
        {"ref": large, "digest": large.split("@")[1], "authenticated": "secretsmanager"}]}
    print_images(images, resolved)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Data volume: 4 GiB (computed from the resolved image sizes)"
    assert lines[1].startswith("  127.0.0.1:5000/ml-cache-demo/small:1.0 ") and lines[1].endswith("  anonymous")
    assert "ml-cache-demo/tools:1.0" in lines[2] and lines[2].endswith("  authenticated: ecr")
    assert "private/ml-cache-demo/large:1.0" in lines[3] and lines[3].endswith("  authenticated: secretsmanager")


def test_an_image_resolve_images_did_not_report_is_marked_so(capsys) -> None:
    from devstack.stack.outcome import how_authenticated, print_images

    print_images([{"ref": "h:1/r:1@sha256:" + "4" * 64, "digest": "sha256:" + "4" * 64}], None)
    assert capsys.readouterr().out.rstrip().endswith("0 bytes  not resolved")
    assert [how_authenticated(v) for v in (None, "", "anonymous", "ssm_secure_parameter")] == [
        "anonymous", "anonymous", "anonymous", "authenticated: ssm_secure_parameter"]


def _week_two_cost(full: int, incremental: int) -> dict:
    from datetime import UTC, datetime

    from ml_cache.cost import run_cost_report
    from ml_cache.settings.models import Prices

    return run_cost_report(Prices(), now=datetime(2026, 12, 10, tzinfo=UTC), instance_id="i-2",
                           instance_type="c6i.2xlarge", builder_hours=0.05, snapshot_id="snap-new",
                           parent_snapshot_id="snap-old", full_bytes=full, incremental_bytes=incremental,
                           fsr_zones=["us-west-2a", "us-west-2b"], fsr_az_hours_so_far=2.0, previous_cost=None,
                           carried_fsr_az_hours=336.0, fsr_accruing_snapshot_ids=["snap-new"])


def test_a_changed_week_prints_incremental_bytes_pulled_against_the_changed_blobs_and_the_retired_fsr(capsys) -> None:
    from devstack.stack.outcome import print_changed_week

    metadata = {"snapshot_id": "snap-new", "cost": _week_two_cost(2_000_000_000, 20_000_000),
                "build": {"mode": "incremental", "base_snapshot_id": "snap-old", "reason": "restored",
                          "bytes_pulled": 8_400_000}}
    restores = [{"AvailabilityZone": "us-west-2b", "State": "disabled"},
                {"AvailabilityZone": "us-west-2a", "State": "disabling"}]
    print_changed_week(metadata, {"sha256:m": 400, "sha256:c": 600, "sha256:l": 8_399_000}, "snap-old", restores)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "Week 2 build: incremental from snap-old (restored)"
    assert lines[2] == ("Bytes pulled: 8,400,000 vs the changed layers' 8,400,000 (3 new blobs incl. manifest and "
                        "config): 1.00x")
    assert lines[3] == "Snapshot snap-new: 20,000,000 bytes incremental of 2,000,000,000 full (1.0%)"
    assert lines[4] == ("FSR on the superseded snapshot snap-old: retired (us-west-2a disabling, "
                        "us-west-2b disabled)")
    assert lines[5].startswith("**Cost of this run: $") and "running total" in lines[-1]


def test_a_fresh_build_and_fsr_left_enabled_are_said_plainly(capsys) -> None:
    from devstack.stack.outcome import print_changed_week

    metadata = {"snapshot_id": "snap-new", "cost": None,
                "build": {"mode": "fresh", "base_snapshot_id": None, "reason": "incremental is off",
                          "bytes_pulled": None}}
    print_changed_week(metadata, {"sha256:m": 10}, "snap-old",
                       [{"AvailabilityZone": "us-west-2a", "State": "enabled"}])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "Week 2 build: fresh, not incremental (incremental is off)"
    assert lines[2].startswith("Bytes pulled: unknown vs the changed layers' 10 ") and lines[2].endswith(": n/a")
    assert lines[3] == "FSR on the superseded snapshot snap-old: NOT retired (us-west-2a enabled)"
    print_changed_week(metadata, {"sha256:m": 10}, "snap-old", [])
    assert "NOT retired (no FSR entry)" in capsys.readouterr().out


def test_an_unchanged_week_prints_up_to_date_no_instance_no_event_and_the_seconds_to_decide(capsys) -> None:
    from datetime import UTC, datetime

    from devstack.stack.outcome import print_unchanged_week, run_seconds
    from ml_cache.cost import up_to_date_cost_report
    from ml_cache.settings.models import Prices

    published = {"snapshot_id": "snap-new", "fsr_availability_zones": ["us-west-2a"],
                 "cost": _week_two_cost(2_000_000_000, 20_000_000)}
    summary = {"outcome": "up to date", "snapshot_id": "snap-new", "reasons": ["snap-new already holds them"],
               "instances_launched": 0, "decided_in_seconds": 4.2,
               "cost": up_to_date_cost_report(Prices(), now=datetime(2026, 12, 17, tzinfo=UTC),
                                              published_metadata=published)}
    seconds = run_seconds({"start_date": "2026-12-17T03:00:00.5+00:00", "end_date": "2026-12-17T03:00:09+00:00"})
    print_unchanged_week(summary, [], 0, seconds)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:5] == ["Week 3 build: up to date: snap-new already holds them", "Instances launched: 0",
                          "Asset events: 0 (no rollout)", "Decided in 4.2 s (the whole run: 8.5 s)"]
    assert lines[5] == "**Cost of this run: $0.00**"
    print_unchanged_week(summary, ["i-1"], 1, run_seconds({"start_date": None, "end_date": None}))
    assert capsys.readouterr().out.splitlines()[2:5] == ["Instances launched: 1 i-1", "Asset events: 1",
                                                         "Decided in 4.2 s"]


def test_a_later_weeks_baseline_names_its_fresh_node_and_the_images_it_pulled(capsys) -> None:
    """Fed the validation report the sensor makes (evaluate's real output), week 1's beside week 2's."""
    from ml_cache.validation.report import evaluate
    from tests.plugins.ml_cache.validation.recorded import result

    def week(instance_id: str, pod: str) -> dict:
        return evaluate([result("cached_pod")], max_startup_seconds=30,
                        baselines=[result(pod, instance_id=instance_id)]).to_dict()

    print_week_baseline(2, week("i-0fresh", "uncached_pod"), week("i-0week1", "uncached_pod"))
    print_week_baseline(2, week("i-0week1", "cached_pod"), None)  # a node that kept its images: a hit
    assert capsys.readouterr().out.splitlines() == [
        "Week 2 baseline: node i-0fresh (week 1's: i-0week1), 1/1 images pulled",
        "Week 2 baseline: node i-0week1 (week 1's: none), 0/1 images pulled",
    ]
