"""EBS volumes of the local cloud: sparse files on loop devices, formatted and mounted for real.

A volume is a sparse file; attaching it is `losetup`; a snapshot is a (reflink or sparse) copy of
the file. Everything here shells out to util-linux/xfsprogs because that is what the builder
script does on a real instance, and the point of the local cloud is to exercise those paths.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

GIB = 1024**3

DATA_PLANE_TOOLS = {
    "losetup": "util-linux",
    "mkfs.xfs": "xfsprogs",
    "xfs_repair": "xfsprogs",
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "busybox": "busybox-static",
}


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing output, raising with its stderr when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def create_volume_file(path: Path, size_gib: int) -> Path:
    """Create a sparse file of `size_gib` GiB (no filesystem): the blank EBS volume."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.truncate(int(size_gib) * GIB)
    return path


def attach_loop(path: Path) -> str:
    """Attach the volume file to the first free loop device; return its path ("/dev/loopN")."""
    return _run("losetup", "--find", "--show", str(Path(path).resolve())).stdout.strip()


def detach_loop(device: str) -> None:
    """Detach a loop device; a device that is already gone or free is fine."""
    if device not in {item["name"] for item in _loop_devices()}:
        return
    _run("losetup", "--detach", device, check=False)


def make_xfs(device_or_file: str | Path) -> None:
    """Format with XFS (what the builder script does to a blank data volume)."""
    _run("mkfs.xfs", "-q", str(device_or_file))


def mount(device_or_file: str | Path, mountpoint: Path, *, nouuid: bool = False) -> None:
    """Mount a device, or a volume file through a loop device (`-o loop`).

    `nouuid` lets a copy of a mounted XFS volume (same UUID) be mounted next to its original.
    """
    source = Path(device_or_file)
    options = []
    if source.is_file():
        options.append("loop")
    if nouuid:
        options.append("nouuid")
    Path(mountpoint).mkdir(parents=True, exist_ok=True)
    argv = ["mount"]
    if options:
        argv += ["-o", ",".join(options)]
    _run(*argv, str(source), str(mountpoint))


def unmount(mountpoint: Path) -> None:
    """Unmount (idempotent). A lazy unmount is only tried after a normal one failed."""
    if not is_mounted(mountpoint):
        return
    target = str(Path(mountpoint).resolve())
    proc = _run("umount", target, check=False)
    if proc.returncode != 0 and is_mounted(target):
        _run("umount", "--lazy", target)


def is_mounted(mountpoint: Path | str) -> bool:
    """True when something is mounted exactly at `mountpoint`."""
    target = os.path.realpath(mountpoint)
    return any(entry["target"] == target for entry in _mounts())


def copy_volume_file(src: Path, dst: Path) -> None:
    """Copy a volume file the way a snapshot would: reflink when possible, else sparse copy."""
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    _run("cp", "--reflink=auto", "--sparse=always", str(src), str(dst))


def cleanup_under(root: Path) -> None:
    """Unmount everything below `root` and detach every loop device backed by a file below it.

    Also unmounts mounts elsewhere whose source is one of those loop devices, so that after an
    interrupted run nothing we created stays mounted or attached.
    """
    root_path = os.path.realpath(root)
    loops = [item["name"] for item in _loop_devices() if _is_below(item["back-file"], root_path)]
    for entry in sorted(_mounts(), key=lambda item: item["target"].count("/"), reverse=True):
        if _is_below(entry["target"], root_path) or entry["source"] in loops:
            unmount(Path(entry["target"]))
    for device in loops:
        detach_loop(device)


def data_plane_missing() -> str | None:
    """None when the real data plane can run here, else the reason (for `pytest.mark.skipif`)."""
    if os.geteuid() != 0:
        return "needs root for loop devices, mounts and containerd"
    if not Path("/dev/loop-control").exists():
        return "no /dev/loop-control: loop devices unavailable"
    for tool, package in DATA_PLANE_TOOLS.items():
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install {package})"
    busybox = shutil.which("busybox")
    if busybox is None or not is_static_elf(Path(busybox)):
        return "busybox is not statically linked (apt-get install busybox-static)"
    return None


def is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a program interpreter (runs in an empty image)."""
    with Path(path).resolve().open("rb") as handle:
        header = handle.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit ELF only
            return False
        order = "little" if header[5] == 1 else "big"
        phoff = int.from_bytes(header[32:40], order)
        phentsize = int.from_bytes(header[54:56], order)
        phnum = int.from_bytes(header[56:58], order)
        handle.seek(phoff)
        for _ in range(phnum):
            entry = handle.read(phentsize)
            if int.from_bytes(entry[0:4], order) == 3:  # PT_INTERP
                return False
    return True


def _is_below(path: str, root: str) -> bool:
    path = path.removesuffix(" (deleted)")
    return path == root or path.startswith(root.rstrip("/") + "/")


def _loop_devices() -> list[dict[str, str]]:
    proc = _run("losetup", "-J", "-l", check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    return [
        {"name": item["name"], "back-file": item.get("back-file") or ""}
        for item in json.loads(proc.stdout).get("loopdevices", [])
    ]


def mounts() -> list[dict[str, str]]:
    """Every mount as {"target", "source"}, from /proc/self/mountinfo (public for other helpers)."""
    return _mounts()


def _mounts() -> list[dict[str, str]]:
    """Mount points and sources from /proc/self/mountinfo (octal escapes decoded)."""
    entries = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        entries.append({"target": _unescape(fields[4]), "source": _unescape(fields[separator + 2])})
    return entries


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field
