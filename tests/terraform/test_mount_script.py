"""The GPU node's mount logic, run for real: loop-device volumes found through by-id links.

terraform/templates/mount-containerd-cache.sh is the script the launch template's user data
carries. Here its by-id directory, mount point, fstab and systemd directory point into a temp
dir; the volumes are sparse files on loop devices (XFS, as the builder leaves them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tf_runner import TERRAFORM_DIR

SCRIPT = TERRAFORM_DIR / "templates" / "mount-containerd-cache.sh"
EBS_LINK = "nvme-Amazon_Elastic_Block_Store_vol"
TOOLS = ("losetup", "mkfs.xfs", "mount", "umount", "blkid", "lsblk", "mountpoint", "xfs_growfs")
_missing = [tool for tool in TOOLS if shutil.which(tool) is None]
needs_loop_devices = pytest.mark.skipif(
    os.geteuid() != 0 or _missing or not Path("/dev/loop-control").exists(),
    reason=f"needs root, /dev/loop-control and {', '.join(TOOLS)} (missing: {', '.join(_missing) or 'none'})",
)


def _run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class Node:
    """A fake node's paths: the by-id directory, containerd's root, fstab and systemd units."""

    root: Path

    @property
    def by_id(self) -> Path:
        return self.root / "dev-disk-by-id"

    @property
    def containerd(self) -> Path:
        return self.root / "var-lib-containerd"

    @property
    def fstab(self) -> Path:
        return self.root / "fstab"

    @property
    def dropin(self) -> Path:
        return self.root / "systemd" / "containerd.service.d" / "10-ml-container-cache.conf"

    def link(self, name: str, device: str) -> None:
        self.by_id.mkdir(exist_ok=True)
        (self.by_id / name).symlink_to(device)

    def run_script(self, wait_seconds: int = 3) -> subprocess.CompletedProcess[str]:
        env = dict(
            os.environ,
            CACHE_BY_ID_DIR=str(self.by_id),
            CACHE_MOUNT_POINT=str(self.containerd),
            CACHE_SYSTEMD_DIR=str(self.root / "systemd"),
            CACHE_FSTAB=str(self.fstab),
            CACHE_DEVICE_WAIT_SECONDS=str(wait_seconds),
            CACHE_MANAGE_SYSTEMD="0",
        )
        return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120,
                              check=False)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path)
    node.by_id.mkdir()
    node.fstab.write_text("# fake fstab\n")
    yield node
    if subprocess.run(["mountpoint", "-q", str(node.containerd)], check=False).returncode == 0:
        _run("umount", str(node.containerd))


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Factory: a 512 MiB sparse file on a loop device; every device and mount is removed after."""
    devices: list[str] = []
    mounts: list[Path] = []

    def make(name: str, *, xfs: bool = False, marker: str | None = None, mounted: bool = False) -> str:
        image = tmp_path / f"{name}.img"
        with image.open("wb") as handle:
            handle.truncate(512 * 1024 * 1024)
        device = _run("losetup", "--find", "--show", str(image))
        devices.append(device)
        if xfs:
            _run("mkfs.xfs", "-q", device)
        if marker is not None or mounted:
            target = tmp_path / f"{name}-mnt"
            target.mkdir()
            _run("mount", device, str(target))
            mounts.append(target)
            if marker is not None:
                (target / "marker").write_text(marker)
            if not mounted:
                _run("umount", str(target))
                mounts.remove(target)
        return device

    yield make
    for target in mounts:
        subprocess.run(["umount", str(target)], check=False)
    for device in devices:
        subprocess.run(["losetup", "--detach", device], check=False)


def _source_of(mount_point: Path) -> str:
    return _run("findmnt", "--noheadings", "--output", "SOURCE", "--mountpoint", str(mount_point))


@needs_loop_devices
def test_restored_volume_is_mounted_by_its_by_id_link(node: Node, loop_device: Callable[..., str]) -> None:
    root_disk = loop_device("root", xfs=True, mounted=True)
    cache = loop_device("cache", xfs=True, marker="images from the snapshot")
    instance_store = loop_device("instance-store")
    node.link(f"{EBS_LINK}0root0000000000000", root_disk)
    node.link(f"{EBS_LINK}0cache000000000000", cache)
    node.link(f"{EBS_LINK}0cache000000000000-ns-1", cache)
    node.link("nvme-Amazon_EC2_NVMe_Instance_Storage_AWS0123456789", instance_store)

    result = node.run_script()

    assert result.returncode == 0, result.stderr
    assert _source_of(node.containerd) == cache
    assert (node.containerd / "marker").read_text() == "images from the snapshot"
    uuid = _run("blkid", "--probe", "--output", "value", "--match-tag", "UUID", cache)
    assert f"UUID={uuid} {node.containerd} xfs " in node.fstab.read_text()
    assert f"ExecStartPre=/usr/bin/mountpoint -q {node.containerd}" in node.dropin.read_text()
    assert f"vol0cache000000000000 ({cache}, xfs)" in result.stderr


@needs_loop_devices
def test_blank_volume_before_the_first_build_is_formatted(node: Node, loop_device: Callable[..., str]) -> None:
    blank = loop_device("blank")
    node.link(f"{EBS_LINK}0blank000000000000", blank)

    result = node.run_script()

    assert result.returncode == 0, result.stderr
    assert _source_of(node.containerd) == blank
    assert _run("blkid", "--probe", "--output", "value", "--match-tag", "LABEL", blank) == "ml-cache"
    assert "blank" in result.stderr


@needs_loop_devices
def test_second_run_is_a_no_op(node: Node, loop_device: Callable[..., str]) -> None:
    node.link(f"{EBS_LINK}0cache000000000000", loop_device("cache", xfs=True))
    assert node.run_script().returncode == 0
    fstab = node.fstab.read_text()

    again = node.run_script()

    assert again.returncode == 0, again.stderr
    assert "already a mount point" in again.stderr
    assert node.fstab.read_text() == fstab


@needs_loop_devices
def test_two_unused_volumes_fail_loudly(node: Node, loop_device: Callable[..., str]) -> None:
    node.link(f"{EBS_LINK}0one00000000000000", loop_device("one", xfs=True))
    node.link(f"{EBS_LINK}0two00000000000000", loop_device("two", xfs=True))

    result = node.run_script()

    assert result.returncode != 0
    assert "FATAL: cannot tell which EBS volume is the cache volume" in result.stderr
    assert subprocess.run(["mountpoint", "-q", str(node.containerd)], check=False).returncode != 0


def test_missing_volume_fails_loudly_and_keeps_containerd_from_starting(node: Node) -> None:
    """No cache volume attached: non-zero exit, a FATAL line, and containerd guarded anyway."""
    result = node.run_script(wait_seconds=1)

    assert result.returncode != 0
    assert "FATAL: no unused EBS volume" in result.stderr
    assert node.dropin.read_text().splitlines()[-1] == f"ExecStartPre=/usr/bin/mountpoint -q {node.containerd}"
    assert not node.containerd.exists() or not os.path.ismount(node.containerd)


def test_script_is_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
