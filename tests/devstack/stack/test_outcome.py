"""What `run` prints: phases of a run, and the validation report through its own Markdown."""

from __future__ import annotations

from devstack.stack.outcome import print_phases, print_validation

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
