"""build_cache.sh on a volume restored from the last cache: grown, pruned, only new layers pulled;
an unreadable restored filesystem is reformatted. Real containerd, registry and loop-mounted XFS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from build_cache_lab import MISSING, Builder, short_tmp

from devstack import volumes
from devstack.demo_images import DemoImage, build_layout, push_layout
from devstack.registry import Registry
from ml_cache.scripts.build_cache_helpers import image_names

pytestmark = [pytest.mark.root, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]

GIB = 1024**3
# A2 is A plus one layer (same name and seed: the busybox layer and A's two data layers are the same
# blobs); B and C share only the busybox layer with them.
IMAGES = {
    "a": DemoImage("incr-app", tag="1", data_layers=2, data_layer_mib=4, seed=7),
    "b": DemoImage("incr-gone", data_layers=1, data_layer_mib=4, seed=8),
    "a2": DemoImage("incr-app", tag="2", data_layers=3, data_layer_mib=4, seed=7),
    "c": DemoImage("incr-new", data_layers=1, data_layer_mib=4, seed=9),
}


@pytest.fixture
def served() -> Iterator[tuple[Registry, dict[str, str], dict[str, dict[str, int]]]]:
    """A registry (this test's: one test stops it) with the four images; each image's blobs by digest."""
    base = short_tmp("mlc-ir-")
    try:
        with Registry(base / "storage") as running:
            refs, blobs = {}, {}
            for key, image in IMAGES.items():
                layout = build_layout(image, base / "layouts")  # A2's build prunes A's layout: read it first
                blobs[key] = {f"sha256:{blob.name}": blob.stat().st_size
                              for blob in (layout / "blobs" / "sha256").iterdir()}
                digest = push_layout(layout, image, running.address)
                refs[key] = f"{running.address}/{image.repository}:{image.tag}@{digest}"
            yield running, refs, blobs
    finally:
        shutil.rmtree(base, ignore_errors=True)


def report_of(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def restore(builder: Builder, snapshot: Path, size_gib: int) -> None:
    """Give the builder a volume "created from the snapshot", larger than it (as EC2 allows)."""
    volumes.detach_loop(builder.device)
    volumes.copy_volume_file(snapshot, builder.volume_file)
    os.truncate(builder.volume_file, size_gib * GIB)
    builder.device = volumes.attach_loop(builder.volume_file)
    link = next((builder.base / "by-id").iterdir())
    link.unlink()
    link.symlink_to(builder.device)


def names_of(ref: str) -> set[str]:
    return set(image_names(ref, ref.rpartition("@")[2]))


def test_restored_volume_is_grown_pruned_and_pulls_only_the_new_layers(served, make_builder) -> None:
    reg, refs, blobs = served
    first = make_builder([reg.address], size_gib=1)
    volume = report_of(first.run(first.build_spec([refs["a"], refs["b"]])))["volume"]
    assert (volume["restored"], volume["reformatted_reason"], volume["removed_images"]) == (False, None, [])
    assert volume["bytes_pulled"] == sum((blobs["a"] | blobs["b"]).values())

    second = make_builder([reg.address], size_gib=1)
    restore(second, first.volume_file, size_gib=2)
    report = report_of(second.run(second.build_spec([refs["a2"], refs["c"]])))
    volume = report["volume"]
    print(f"incremental: {json.dumps(volume)}, timings {report['timings']}")
    assert volume["restored"] is True and volume["reformatted_reason"] is None
    assert volume["grown"] is True and volume["filesystem_bytes_after"] - volume["filesystem_bytes_before"] > GIB * 0.9
    assert set(volume["removed_images"]) == names_of(refs["a"]) | names_of(refs["b"])
    assert volume["removed_images_total"] == len(volume["removed_images"])
    assert (volume["reused_images"], volume["reused_images_total"]) == ([], 0)
    kept = blobs["a2"] | blobs["c"]
    # Exact, no tolerance: sizes are the content store's files, and what is new is known blob by blob
    # (A2's new layer, its manifest and config, and C's blobs but the busybox layer A already had).
    new = {digest: size for digest, size in kept.items() if digest not in blobs["a"]}
    assert len(new) == 3 + len(blobs["c"]) - 1
    assert volume["bytes_pulled"] == sum(new.values())
    gone = {digest: size for digest, size in (blobs["a"] | blobs["b"]).items() if digest not in kept}
    assert volume["bytes_pruned"] == sum(gone.values())
    assert volume["trimmed"] is True
    assert [image["digest"] for image in report["images"]] == [refs["a2"].split("@")[1], refs["c"].split("@")[1]]
    assert all(image["unpacked"] for image in report["images"])

    reg.stop()  # from here on, no registry
    with second.open_volume() as containerd:
        content = containerd.ctr("content", "ls", "-q", check=True).stdout.split()
        assert sorted(content) == sorted(kept)  # B's and A's own blobs collected, nothing else left
        listed = {line.split()[0] for line in containerd.ctr("images", "ls", check=True).stdout.splitlines()[1:]}
        assert listed == names_of(refs["a2"]) | names_of(refs["c"])
        # one snapshot per layer chain: A2's four layers, C's data layer on the shared busybox one
        snapshots = containerd.ctr("snapshots", "ls", check=True).stdout.splitlines()[1:]
        assert len(snapshots) == (len(blobs["a2"]) - 2) + (len(blobs["c"]) - 3)
        run = containerd.ctr("run", "--rm", refs["a2"], "a2-check", timeout=60)
        assert run.returncode == 0 and run.stdout.strip() == "ready", run.stderr
    volumes.unmount(second.base / "reopened" / "root")


def test_restored_volume_failing_xfs_repair_is_reformatted_and_built_fresh(served, make_builder) -> None:
    reg, refs, blobs = served
    builder = make_builder([reg.address], size_gib=1)
    volumes.make_xfs(builder.device)
    with open(builder.device, "r+b") as device:  # AG 0's free-space and inode headers (sectors 1, 2)
        device.seek(512)
        device.write(b"\xff" * 1024)
    probe = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", builder.device],
                           capture_output=True, text=True, check=False)
    assert probe.stdout.strip() == "xfs"  # still found as an XFS: a restored volume

    report = report_of(builder.run(builder.build_spec([refs["c"]])))
    volume = report["volume"]
    print(f"reformatted: {json.dumps(volume)}")
    assert volume["restored"] is False
    assert volume["reformatted_reason"].startswith(("mount failed: ", "xfs_repair -n found problems: "))
    assert "reformatting" in builder.runs[-1].stderr
    assert volume["bytes_pulled"] == sum(blobs["c"].values())
    assert report["images"][0]["unpacked"] is True
    repair = subprocess.run(["xfs_repair", "-n", builder.device], capture_output=True, text=True, check=False)
    assert repair.returncode == 0, repair.stdout
