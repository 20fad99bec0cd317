"""The path `make run` takes, end to end: local cloud, Airflow standalone, one build, the outcome."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _missing() -> str | None:
    from devstack.volumes import data_plane_missing

    return data_plane_missing()


@pytest.mark.slow
@pytest.mark.skipif(bool(_missing()), reason=f"make run needs the data plane: {_missing()}")
def test_make_run_builds_publishes_rolls_out_and_refreshes_weekly(tmp_path):
    """Three images: anonymous (127.0.0.1:5077), ECR-style (repository in the local cloud's ECR) and
    the Docker Hub/NGC-style registry (127.0.0.1:5080, login in Secrets Manager); then two weekly
    ticks: one image changed (incremental build and rollout), nothing changed (up to date)."""
    env = {
        **os.environ,
        "DEVSTACK_HOME": str(tmp_path / "devstack"),
        "DEVSTACK_PORT": "4577",
        "DEVSTACK_REGISTRY_PORT": "5077",
        "AIRFLOW_PORT": "8097",
    }
    for key in [k for k in env if k.startswith(("AIRFLOW__", "AIRFLOW_CONN", "ML_CACHE"))] + ["AIRFLOW_HOME"]:
        env.pop(key, None)  # the pytest session's Airflow settings are not make run's
    result = subprocess.run([sys.executable, "-m", "devstack", "run"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=1500)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert re.search(r"Snapshot: snap-[0-9a-f]+ +\(SSM /ml-container-cache/snapshot-id version \d+\)", output)
    zones = re.findall(r"FSR (us-west-2[a-z]): (\w+)", output)
    assert zones and all(state == "enabled" for _, state in zones), output[-3000:]
    assert len(re.findall(r"sha256:[0-9a-f]{64}", output)) >= 3
    assert "publish_snapshot" in output
    # every image resolved before launch says how it authenticated (the resolve_images XCom)
    assert re.search(r"^  127\.0\.0\.1:5077/ml-cache-demo/small:1\.0 .*  anonymous$", output, re.M), output[-4000:]
    assert re.search(r"^  123456789012\.dkr\.ecr\.us-west-2\.amazonaws\.com/ml-cache-demo/tools:1\.0 .*"
                     r"  authenticated: ecr$", output, re.M), output[-4000:]
    assert re.search(r"^  127\.0\.0\.1:5080/private/ml-cache-demo/large:1\.0 .*  authenticated: secretsmanager$",
                     output, re.M), output[-4000:]
    assert re.search(r"^Data volume: \d+ GiB \(computed from the resolved image sizes\)$", output, re.M)
    # the rollout the build's Asset event started: every new node had every image (a cache hit)
    assert re.search(r"ml_container_cache_rollout run \S+: SUCCESS", output), output[-4000:]
    assert "### Cache validation passed" in output  # the validate_nodes report's own Markdown
    rows = [line for line in output.splitlines() if "ml-cache-demo/" in line and " PASS" in line]
    assert len(rows) >= 3 and all(" hit " in row for row in rows), rows
    # the large (private) image: cached start versus the uncached baseline, which pulled it through
    # the bearer registry with the node's credentials, on the same instance type
    ratios = re.findall(r"127\.0\.0\.1:5080/private/ml-cache-demo/large:1.0: cached start .* (\d+)x faster", output)
    assert ratios and int(ratios[0]) >= 30, output[-3000:]
    # week 2 (clock +7 days): the tools image's tag moved to a version with one layer changed
    first = re.search(r"^Snapshot: (snap-[0-9a-f]+) ", output, re.M).group(1)
    assert re.search(rf"^Week 2 build: incremental from {first} ", output, re.M), output[-4000:]
    pulled, changed = (int(n.replace(",", "")) for n in re.search(
        r"^Bytes pulled: ([\d,]+) vs the changed layers' ([\d,]+) ", output, re.M).groups())
    assert changed / 1.1 <= pulled <= changed * 1.1, (pulled, changed, output[-6000:])
    second, incremental, full = re.search(r"^Snapshot (snap-[0-9a-f]+): ([\d,]+) bytes incremental of ([\d,]+) full",
                                          output, re.M).groups()
    assert second != first and 0 < int(incremental.replace(",", "")) < int(full.replace(",", ""))
    assert len(re.findall(r"ml_container_cache_rollout run \S+: SUCCESS", output)) == 2, output[-4000:]
    assert re.search(rf"^FSR on the superseded snapshot {first}: retired \(", output, re.M), output[-4000:]
    # week 3 (clock +7 days again): nothing changed
    assert re.search(rf"^Week 3 build: up to date: {second} ", output, re.M), output[-3000:]
    assert re.search(r"^Instances launched: 0$", output, re.M) and "Asset events: 0 (no rollout)" in output
    decided = float(re.search(r"^Decided in ([\d.]+) s", output, re.M).group(1))
    assert decided < 30, output[-2000:]
    # make run stops what it started: nothing of ours stays mounted
    mounts = Path("/proc/self/mounts").read_text()
    assert str(tmp_path) not in mounts
