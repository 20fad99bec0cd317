"""The cache's metrics reach a StatsD server through Airflow's own metrics configuration: a UDP listener on
127.0.0.1 plays the server, a fresh interpreter configured by AIRFLOW__METRICS__* plays a worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from tests.conftest import REPO

REPORT = {"timings": {"pull_seconds": 12.5}}
METADATA = {"arch": "x86_64", "images": [{"ref": "r/a:1@sha256:1", "digest": "sha256:1", "bytes": 300},
                                         {"ref": "r/b:2@sha256:2", "digest": "sha256:2", "bytes": 700}],
            "fsr_availability_zones": ["us-west-2a", "us-west-2b"], "totals": {"filesystem_used_bytes": 4096},
            "build": {"mode": "incremental", "bytes_pulled": 1234}}
PYTORCH = "nvcr.io/nvidia/pytorch:24.05-py3@sha256:9"
VALIDATION = {"passed": True, "speedups": {PYTORCH: 80.0},
              "results": [{"image": PYTORCH, "cache_hit": True, "total_seconds": 1.5},
                          {"image": PYTORCH, "cache_hit": True, "total_seconds": 2.0}],
              "baselines": [{"image": PYTORCH, "cache_hit": False, "total_seconds": 160.0}]}
WORKER = """
import json, sys
from airflow.sdk.configuration import conf
from airflow.sdk.observability import stats
from airflow.sdk.observability.metrics import stats_utils
from ml_cache import metrics
# what the task runner does before a task runs (airflow.sdk.execution_time.task_runner)
stats.initialize(factory=stats_utils.get_stats_factory(),
                 export_legacy_names=conf.getboolean("metrics", "legacy_names_on"))
metadata, report, validation = (json.loads(arg) for arg in sys.argv[1:4])
metrics.build_published(metadata, report, pipeline="ml-cache")
metrics.build_up_to_date(pipeline="ml-cache", arch="x86_64")
metrics.rollout_validated(validation, arch="x86_64")
"""


def received(environment: dict[str, str], metadata: dict = METADATA, report: dict = REPORT,
             validation: dict = VALIDATION) -> list[str]:
    """StatsD lines a worker process sends with this [metrics] environment for these inputs."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.5)
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'plugins'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1", "AIRFLOW__METRICS__STATSD_PORT": str(server.getsockname()[1]),
           **environment}
    proc = subprocess.run([sys.executable, "-c", WORKER, json.dumps(metadata), json.dumps(report),
                           json.dumps(validation)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    lines, deadline = [], time.monotonic() + 5
    try:
        while time.monotonic() < deadline:
            try:
                lines.extend(server.recv(65536).decode().splitlines())
            except TimeoutError:
                break
    finally:
        server.close()
    return lines


def test_a_build_and_a_rollout_send_their_metrics_to_statsd() -> None:
    lines = received({"AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_PREFIX": "airflow"})
    assert "airflow.ml_cache.build.published:1|c" in lines
    assert "airflow.ml_cache.build.up_to_date:1|c" in lines
    assert "airflow.ml_cache.build.bytes_pulled:1234|g" in lines
    assert "airflow.ml_cache.snapshot.image_bytes:1000|g" in lines
    assert "airflow.ml_cache.fsr.availability_zones:2|g" in lines
    assert "airflow.ml_cache.build.pull:12500.000000|ms" in lines
    assert "airflow.ml_cache.validation.passed:1|c" in lines
    assert "airflow.ml_cache.validation.cache_hits:2|g" in lines
    assert "airflow.ml_cache.validation.cached_start:1500.000000|ms" in lines
    assert "airflow.ml_cache.validation.uncached_start:160000.000000|ms" in lines
    assert "airflow.ml_cache.validation.speedup:80.0|g" in lines


def test_image_tags_survive_a_tag_aware_statsd() -> None:
    lines = received({"AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
                      "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True"})
    speedup = [line for line in lines if line.startswith("airflow.ml_cache.validation.speedup")]
    assert speedup and "image=pytorch_24.05-py3" in speedup[0], lines


def test_metrics_off_sends_nothing_and_fails_nothing() -> None:
    assert received({"AIRFLOW__METRICS__STATSD_ON": "False"}) == []


def test_the_producers_real_outputs_become_metrics() -> None:
    """publish_snapshot's metadata, verify_build_report's report and validate_nodes' report as they are."""
    from tests.plugins.ml_cache import producers

    resolved = producers.resolution()
    report = resolved.named_as_configured(producers.parse_build_report(
        producers.build_report_line(), resolved.pinned_images, volume_id="vol-0123456789abcdef0",
        platform="linux/amd64"))
    validation = producers.validation_report()
    lines = received({"AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_PREFIX": "airflow"},
                     producers.published_metadata(), producers._json(report), validation)
    assert "airflow.ml_cache.snapshot.image_bytes:2001|g" in lines  # 1000 + 1001, the report's image sizes
    assert "airflow.ml_cache.snapshot.filesystem_used_bytes:9000|g" in lines
    assert "airflow.ml_cache.fsr.availability_zones:2|g" in lines
    assert "airflow.ml_cache.build.pull:20000.000000|ms" in lines
    (cached,) = [r["total_seconds"] for r in validation["results"]]
    assert f"airflow.ml_cache.validation.cached_start:{cached * 1000:f}|ms" in lines
    assert "airflow.ml_cache.validation.cache_hits:1|g" in lines
