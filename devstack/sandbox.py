"""Instance sandboxes: what an EC2 "instance" of the local cloud is on this machine.

Each instance gets a directory under $DEVSTACK_HOME/instances/<id>/ laid out like the paths the
builder script uses on AWS (dev/disk/by-id, var/lib/containerd, run/containerd, etc/containerd),
and each non-root EBS volume gets a sparse backing file under $DEVSTACK_HOME/volumes/. Commands
from the SSM agent run with the environment below, so the same script runs here and on AWS.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from devstack import process, volumes

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
EBS_BY_ID_PREFIX = "nvme-Amazon_Elastic_Block_Store_"
MAX_SOCKET_PATH = 98  # containerd refuses > 104 bytes and adds ".ttrpc" to the ttrpc socket


def short_socket_dir(instance_id: str) -> Path:
    return Path(tempfile.gettempdir()) / f"devstack-{os.getuid()}" / instance_id


_lock = threading.RLock()
_home: Path | None = None
_plain_http_registries: tuple[str, ...] = ()
_endpoint: str | None = None
_sandboxes: dict[str, Sandbox] = {}
_volume_paths: dict[str, Path] = {}
_snapshot_paths: dict[str, Path] = {}


def configure(home: Path | None = None, plain_http_registries: tuple[str, ...] | list[str] = ()) -> Path:
    """Set the state directory and the loopback registries builders may use over plain HTTP."""
    global _home, _plain_http_registries
    with _lock:
        _home = Path(home).resolve() if home else default_home()
        _plain_http_registries = tuple(plain_http_registries)
        for sub in ("instances", "volumes", "snapshots", "logs", "pids"):
            (_home / sub).mkdir(parents=True, exist_ok=True)
        return _home


def default_home() -> Path:
    return Path(os.environ.get("DEVSTACK_HOME") or REPO_ROOT / ".devstack").resolve()


def home() -> Path:
    return _home if _home is not None else configure()


def endpoint() -> str | None:
    """The local cloud's AWS endpoint (what nodes and builders talk to), once it listens."""
    return _endpoint


def set_endpoint(endpoint: str | None) -> None:
    """The local cloud's AWS endpoint, given to commands as AWS_ENDPOINT_URL (the instance's "AWS")."""
    global _endpoint
    _endpoint = endpoint


def plain_http_registries() -> tuple[str, ...]:
    env = os.environ.get("DEVSTACK_PLAIN_HTTP_REGISTRIES", "").split()
    return tuple(dict.fromkeys([*_plain_http_registries, *env]))


def volume_file(volume_id: str) -> Path:
    """Backing file of a volume: where it was created, else where it would be under the current home."""
    with _lock:
        return _volume_paths.get(volume_id) or home() / "volumes" / f"{volume_id}.img"


def snapshot_file(snapshot_id: str) -> Path:
    with _lock:
        return _snapshot_paths.get(snapshot_id) or home() / "snapshots" / f"{snapshot_id}.img"


def new_snapshot_file(snapshot_id: str) -> Path:
    """Choose (and remember) where a new snapshot's copy goes: a later home change does not move it."""
    path = home() / "snapshots" / f"{snapshot_id}.img"
    with _lock:
        _snapshot_paths[snapshot_id] = path
    return path


@dataclass
class SandboxVolume:
    """An EBS volume attached to a sandbox, with its backing file and (as root) loop device."""

    volume_id: str
    device_name: str
    size_gib: int
    delete_on_termination: bool
    path: Path
    loop_device: str | None = None


@dataclass
class Sandbox:
    instance_id: str
    root: Path
    region: str = "us-west-2"
    volumes: list[SandboxVolume] = field(default_factory=list)
    created_monotonic: float = field(default_factory=time.monotonic)
    terminated: bool = False
    agent_registered: bool = False
    last_ping: datetime | None = None

    @property
    def device_dir(self) -> Path:
        return self.root / "dev" / "disk" / "by-id"

    @property
    def containerd_socket(self) -> Path:
        """<sandbox>/run/containerd/containerd.sock, or a short path when that is too long for a socket."""
        socket = self.root / "run" / "containerd" / "containerd.sock"
        if len(str(socket)) <= MAX_SOCKET_PATH:
            return socket
        return short_socket_dir(self.instance_id) / "containerd.sock"

    def environment(self) -> dict[str, str]:
        """The builder script's variables (on AWS their defaults are the real system paths), and
        AWS_* settings so the AWS CLI/SDK inside a command reaches the local cloud like an
        instance profile would reach AWS."""
        aws = {
            "AWS_ENDPOINT_URL": _endpoint,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",  # moto accepts any credentials
        } if _endpoint else {}
        return {
            **aws,
            "ML_CACHE_DEVICE_DIR": str(self.device_dir),
            "ML_CACHE_CONTAINERD_ROOT": str(self.root / "var" / "lib" / "containerd"),
            "ML_CACHE_CONTAINERD_STATE": str(self.root / "run" / "containerd"),
            "ML_CACHE_CONTAINERD_SOCKET": str(self.containerd_socket),
            "ML_CACHE_CONTAINERD_CONFIG": str(self.root / "etc" / "containerd" / "config.toml"),
            "ML_CACHE_CONTAINERD_SERVICE": "process",
            "ML_CACHE_CONTAINERD_PIDFILE": str(self.root / "run" / "ml-cache-containerd.pid"),
            "ML_CACHE_PLAIN_HTTP_REGISTRIES": " ".join(plain_http_registries()),
            "DEVSTACK_INSTANCE_ID": self.instance_id,
        }

    def describe(self) -> dict[str, object]:
        return {
            "instance_id": self.instance_id,
            "root": str(self.root),
            "terminated": self.terminated,
            "volumes": [
                {
                    "volume_id": v.volume_id,
                    "device_name": v.device_name,
                    "size_gib": v.size_gib,
                    "path": str(v.path),
                    "loop_device": v.loop_device,
                }
                for v in self.volumes
            ],
        }


def create(instance_id: str, data_volumes: list[dict[str, object]], region: str = "us-west-2") -> Sandbox:
    """Make the sandbox directory and a backing file per data volume.

    `data_volumes` items: volume_id, device_name, size_gib, delete_on_termination and optionally
    snapshot_id (the file then starts as a copy of that snapshot's file, when one exists).
    """
    root = home() / "instances" / instance_id
    sandbox = Sandbox(instance_id=instance_id, root=root, region=region)
    for sub in ("dev/disk/by-id", "var/lib/containerd", "run/containerd", "etc/containerd", "ssm"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _write_containerd_config(sandbox)
    for spec in data_volumes:
        _add_volume(sandbox, spec)
    with _lock:
        _sandboxes[instance_id] = sandbox
    return sandbox


def attach_volume(instance_id: str, spec: dict[str, object]) -> SandboxVolume | None:
    """AttachVolume after launch: the volume appears in the instance's device dir.

    Its backing file is kept if it exists (a volume moves between instances with its data).
    """
    sandbox = get(instance_id)
    if sandbox is None or sandbox.terminated:
        return None
    if any(v.volume_id == spec["volume_id"] for v in sandbox.volumes):
        return None
    return _add_volume(sandbox, spec)


def detach_volume(instance_id: str, volume_id: str) -> None:
    """DetachVolume: unmount what uses it, detach its loop, drop its device link; keep the file."""
    sandbox = get(instance_id)
    if sandbox is None or sandbox.terminated:
        return
    volume = next((v for v in sandbox.volumes if v.volume_id == volume_id), None)
    if volume is None:
        return
    if volume.loop_device and volumes.data_plane_missing() is None:
        _unmount_sources({volume.loop_device})
        volumes.detach_loop(volume.loop_device)
    (sandbox.device_dir / (EBS_BY_ID_PREFIX + volume_id.replace("-", ""))).unlink(missing_ok=True)
    sandbox.volumes.remove(volume)


def _add_volume(sandbox: Sandbox, spec: dict[str, object]) -> SandboxVolume:
    volume = SandboxVolume(
        volume_id=str(spec["volume_id"]),
        device_name=str(spec["device_name"]),
        size_gib=int(spec["size_gib"]),  # type: ignore[call-overload]
        delete_on_termination=bool(spec["delete_on_termination"]),
        path=volume_file(str(spec["volume_id"])),
    )
    with _lock:
        _volume_paths[volume.volume_id] = volume.path
    if not volume.path.exists():
        _create_backing_file(volume, spec.get("snapshot_id"))
    if volumes.data_plane_missing() is None:
        try:
            volume.loop_device = volumes.attach_loop(volume.path)
            link = sandbox.device_dir / (EBS_BY_ID_PREFIX + volume.volume_id.replace("-", ""))
            link.symlink_to(volume.loop_device)
        except (RuntimeError, OSError) as error:
            log.warning("could not attach %s: %s", volume.volume_id, error)
    sandbox.volumes.append(volume)
    return volume


def _unmount_sources(sources: set[str], below: Path | None = None) -> None:
    """Unmount (deepest first) mounts whose source is one of `sources` or whose target is below `below`."""
    for entry in sorted(volumes._mounts(), key=lambda e: e["target"].count("/"), reverse=True):
        if entry["source"] in sources or (below is not None and _is_below(entry["target"], below)):
            try:
                volumes.unmount(Path(entry["target"]))
            except RuntimeError as error:
                log.warning("unmount %s failed: %s", entry["target"], error)


def get(instance_id: str) -> Sandbox | None:
    with _lock:
        return _sandboxes.get(instance_id)


def all_sandboxes() -> list[Sandbox]:
    with _lock:
        return list(_sandboxes.values())


def teardown(instance_id: str) -> None:
    """Unmount, detach loops, stop leftover processes, delete DeleteOnTermination volume files.

    The agent stops the instance's commands first; this handles what they left behind (a
    containerd started by the build script, mounts of the data volume).
    """
    with _lock:
        sandbox = _sandboxes.get(instance_id)
        if sandbox is None or sandbox.terminated:
            return
        sandbox.terminated = True
    process.kill_using(sandbox.root)
    if volumes.data_plane_missing() is None:
        _unmount_sources({v.loop_device for v in sandbox.volumes if v.loop_device}, below=sandbox.root)
        for volume in sandbox.volumes:
            if volume.loop_device:
                volumes.detach_loop(volume.loop_device)
                volume.loop_device = None
    for volume in sandbox.volumes:
        if volume.delete_on_termination:
            volume.path.unlink(missing_ok=True)
    shutil.rmtree(sandbox.root / "dev", ignore_errors=True)
    shutil.rmtree(short_socket_dir(instance_id), ignore_errors=True)


def teardown_all(under: Path | None = None) -> None:
    """Tear down every sandbox (or those whose directory is below `under`)."""
    for sandbox in all_sandboxes():
        if under is None or _is_below(sandbox.root, Path(under).resolve()):
            teardown(sandbox.instance_id)


def forget_all(under: Path | None = None) -> None:
    """Drop torn-down sandboxes from the registry (all, or those below `under`)."""
    with _lock:
        for instance_id, sandbox in list(_sandboxes.items()):
            if under is None or _is_below(sandbox.root, Path(under).resolve()):
                del _sandboxes[instance_id]


def _create_backing_file(volume: SandboxVolume, snapshot_id: object) -> None:
    source = snapshot_file(str(snapshot_id)) if snapshot_id else None
    if source is not None and source.exists():
        volumes.copy_volume_file(source, volume.path)
        wanted = volume.size_gib * volumes.GIB
        if volume.path.stat().st_size < wanted:
            os.truncate(volume.path, wanted)
    else:
        volumes.create_volume_file(volume.path, volume.size_gib)


def _write_containerd_config(sandbox: Sandbox) -> None:
    from devstack import containerd

    env = sandbox.environment()
    try:
        containerd.write_config(
            Path(env["ML_CACHE_CONTAINERD_ROOT"]),
            Path(env["ML_CACHE_CONTAINERD_STATE"]),
            Path(env["ML_CACHE_CONTAINERD_SOCKET"]),
            Path(env["ML_CACHE_CONTAINERD_CONFIG"]),
        )
    except ValueError as error:  # should not happen: containerd_socket stays short
        log.warning("no containerd config for %s: %s", sandbox.instance_id, error)


def _is_below(path: str | Path, root: Path) -> bool:
    path, base = str(path), str(root).rstrip("/")
    return path == base or path.startswith(base + "/")
