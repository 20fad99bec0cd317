"""benchmarks/pull_phase.py runs end to end at a tiny scale, and its per-connection cap holds.

The timings are not asserted (they depend on the machine): the smoke run checks that every arm ran
against the real parts and that the output has its documented shape, the last line above all.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import volumes

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from pull_phase_net import CappedLink, htb_batch, link_missing  # noqa: E402

MISSING = volumes.data_plane_missing() or link_missing()
pytestmark = [pytest.mark.root, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]
RATIO = r"\d+\.\d\dx"


def test_tiny_loopback_run_prints_every_arm_and_the_headline_last(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "pull_phase.py"), "--scale", "0.01", "--reps", "1", "--modes", "loopback",
         "--json", str(results)],
        capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(rf"loopback reference/ours: A {RATIO} B {RATIO}; loopback ours/floor: A {RATIO} B {RATIO}",
                        lines[-1]), lines[-1]
    for image_set in ("A", "B"):
        for arm in ("reference", "ours", "floor"):
            assert any(re.match(rf"loopback\s+{image_set}\s+{arm}\s+\d+\.\d\d\s+\d+\.\d\d\s+(\d+|-)\s+(\d+|-)\s+\d",
                                line)
                       for line in lines), f"no row for {image_set} {arm}:\n{proc.stdout}"
        assert any(re.match(rf"loopback\s+{image_set}\s+{RATIO}\s+{RATIO}\s+{RATIO}", line) for line in lines)
    document = json.loads(results.read_text())
    assert set(document["runs"]) == {f"loopback/{s}/{a}" for s in "AB" for a in ("reference", "ours", "floor")}
    ours = document["runs"]["loopback/A/ours"][0]
    assert ours["seconds"] == ours["pull_seconds"] > 0  # the script's own figure, not our stopwatch
    assert document["image_sets"]["A"]["layers"] == 12 and document["image_sets"]["B"]["images"] == 4


def test_htb_batch_gives_each_client_port_its_own_capped_class() -> None:
    lines = htb_batch("dev0", 123, port_base=40000, ports=4).splitlines()
    classes = [line for line in lines if line.startswith("class add")]
    assert len(classes) == 4 and all("rate 123mbit ceil 123mbit" in line for line in classes)
    port_filters = [line for line in lines if "match ip dport" in line]
    assert [line.split("flowid ")[1] for line in port_filters] == ["1:1", "1:2", "1:3", "1:4"]
    assert "ht 100:40:" in port_filters[0]  # 40000 = 0x9c40: bucket of the low byte


def test_capped_link_caps_one_connection_and_not_two() -> None:
    with CappedLink(100, tag=f"t{os.getpid() % 100000}") as link:
        measured = link.measure(seconds=1.0)
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        assert link.server_ns in namespaces and link.client_ns in namespaces
    one, two = measured["one_connection_mbit"], measured["two_connections_mbit"]
    assert 50 <= one <= 115, measured  # ~the cap (100), not the veth's multi-Gbit/s
    assert two >= 1.5 * one, measured  # each connection has its own cap
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert link.server_ns not in namespaces and link.client_ns not in namespaces
