"""Volumes of the local cloud: sparse files on real loop devices, real XFS, real mounts."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import volumes

MISSING = volumes.data_plane_missing()
pytestmark = [pytest.mark.root, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]


def loops_backed_by(path: Path) -> list[str]:
    listing = subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"], capture_output=True,
                             text=True, check=True).stdout
    return [line.split()[0] for line in listing.splitlines()
            if len(line.split()) > 1 and line.split()[1].startswith(str(path))]


def mounts_below(path: Path) -> list[str]:
    root = os.path.realpath(path)
    targets = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [target for target in targets if target == root or target.startswith(root + "/")]


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mlc-v-", dir="/tmp"))
    try:
        yield path
    finally:
        volumes.cleanup_under(path)
        shutil.rmtree(path, ignore_errors=True)


def test_data_plane_is_complete_here() -> None:
    assert MISSING is None


def test_busybox_is_static_and_bash_is_not() -> None:
    assert volumes.is_static_elf(Path(shutil.which("busybox")))
    assert not volumes.is_static_elf(Path(shutil.which("bash")))


def test_volume_file_is_sparse(base: Path) -> None:
    path = volumes.create_volume_file(base / "vol.img", 2)
    stat = path.stat()
    assert stat.st_size == 2 * 1024**3
    assert stat.st_blocks * 512 < 1024**2  # nothing allocated yet


def test_attach_format_mount_write_unmount_detach(base: Path) -> None:
    path = volumes.create_volume_file(base / "vol.img", 1)
    device = volumes.attach_loop(path)
    assert device.startswith("/dev/loop") and loops_backed_by(base) == [device]
    volumes.make_xfs(device)
    fstype = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", device], capture_output=True,
                            text=True, check=True).stdout.strip()
    assert fstype == "xfs"

    mountpoint = base / "mnt"
    volumes.mount(device, mountpoint)
    assert volumes.is_mounted(mountpoint)
    (mountpoint / "hello.txt").write_text("cached\n")
    volumes.unmount(mountpoint)
    volumes.unmount(mountpoint)  # idempotent
    assert not volumes.is_mounted(mountpoint)
    assert not (mountpoint / "hello.txt").exists()

    volumes.detach_loop(device)
    volumes.detach_loop(device)  # idempotent
    assert loops_backed_by(base) == []

    # The data survived on the file: mount the file itself (loop option) and read it back.
    volumes.mount(path, mountpoint)
    assert (mountpoint / "hello.txt").read_text() == "cached\n"
    volumes.unmount(mountpoint)
    assert loops_backed_by(base) == []  # `mount -o loop` auto-clears its device


def test_copy_is_an_independent_snapshot_mountable_next_to_the_original(base: Path) -> None:
    original = volumes.create_volume_file(base / "vol.img", 1)
    volumes.make_xfs(original)
    volumes.mount(original, base / "a")
    (base / "a" / "before.txt").write_text("before snapshot\n")
    volumes.unmount(base / "a")

    snapshot = base / "snap.img"
    volumes.copy_volume_file(original, snapshot)
    assert snapshot.stat().st_size == original.stat().st_size
    assert snapshot.stat().st_blocks <= original.stat().st_blocks + 8  # stayed sparse

    volumes.mount(original, base / "a")
    (base / "a" / "after.txt").write_text("written after the snapshot\n")
    volumes.mount(snapshot, base / "b", nouuid=True)  # same XFS UUID as the mounted original
    assert (base / "b" / "before.txt").read_text() == "before snapshot\n"
    assert not (base / "b" / "after.txt").exists()


def test_cleanup_under_leaves_nothing_mounted_or_attached(base: Path) -> None:
    first = volumes.create_volume_file(base / "one.img", 1)
    second = volumes.create_volume_file(base / "two.img", 1)
    volumes.make_xfs(first)
    volumes.make_xfs(second)
    device = volumes.attach_loop(first)
    volumes.attach_loop(second)  # attached, never mounted
    volumes.mount(device, base / "outer")
    volumes.mount(second, base / "outer" / "nested", nouuid=True)  # a mount inside a mount
    # A busy mount (open file) still goes: the lazy fallback.
    busy = (base / "outer" / "nested" / "busy.txt").open("w")
    # And a mount outside `base` of a device backed under it (an interrupted restore, say).
    outside = Path(tempfile.mkdtemp(prefix="mlc-o-", dir="/tmp"))
    try:
        copy = base / "copy.img"
        volumes.copy_volume_file(first, copy)
        volumes.mount(copy, outside, nouuid=True)
        assert len(mounts_below(base)) == 2 and volumes.is_mounted(outside)

        volumes.cleanup_under(base)

        assert mounts_below(base) == []
        assert not volumes.is_mounted(outside)
        busy.close()  # the lazily unmounted filesystem lets its loop device go with the last user
        deadline = time.monotonic() + 5
        while loops_backed_by(base) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert loops_backed_by(base) == []
        volumes.cleanup_under(base)  # idempotent
    finally:
        busy.close()
        volumes.unmount(outside)
        shutil.rmtree(outside, ignore_errors=True)
