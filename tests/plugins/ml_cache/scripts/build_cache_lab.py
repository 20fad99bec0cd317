"""Lab for build_cache.sh tests: loopback registry, loop-mounted volume, private containerd.

(A module with a unique name rather than conftest.py, so tests can import its helpers.)

A "builder" here is what the local cloud gives the script on an instance: a by-id directory with
the nvme-Amazon_Elastic_Block_Store_<vol> symlink to a loop device, and containerd paths in a
private directory (ML_CACHE_CONTAINERD_SERVICE=process).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devstack import volumes
from devstack.containerd import Containerd, write_config
from devstack.demo_images import default_cache_dir, seed_registry
from devstack.registry import Registry
from ml_cache.builder_spec import build_spec, encode_spec

REPO = Path(__file__).resolve().parents[4]
SCRIPT = REPO / "plugins" / "ml_cache" / "scripts" / "build_cache.sh"
MISSING = volumes.data_plane_missing()
VOLUME_ID = "vol-0123456789abcdef0"
PLATFORM = f"linux/{'arm64' if os.uname().machine in ('aarch64', 'arm64') else 'amd64'}"


def short_tmp(prefix: str) -> Path:
    """A short directory under /tmp: unix socket paths must stay under ~100 characters."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@dataclass
class Builder:
    """One builder "instance": a data volume on a loop device and containerd paths for the script."""

    base: Path
    volume_file: Path
    device: str
    plain_http: list[str]
    runs: list[subprocess.CompletedProcess[str]] = field(default_factory=list)

    @property
    def containerd_root(self) -> Path:
        return self.base / "var-lib-containerd"

    @property
    def socket(self) -> Path:
        return self.base / "run" / "containerd.sock"

    @property
    def pidfile(self) -> Path:
        return self.base / "run" / "ml-cache-containerd.pid"

    def env(self, **extra: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("ML_CACHE_", "SSM_"))}
        env.update({
            "ML_CACHE_DEVICE_DIR": str(self.base / "by-id"),
            "ML_CACHE_DEVICE_WAIT_SECONDS": "3",
            "ML_CACHE_CONTAINERD_ROOT": str(self.containerd_root),
            "ML_CACHE_CONTAINERD_STATE": str(self.base / "run" / "state"),
            "ML_CACHE_CONTAINERD_SOCKET": str(self.socket),
            "ML_CACHE_CONTAINERD_CONFIG": str(self.base / "containerd.toml"),
            "ML_CACHE_CONTAINERD_SERVICE": "process",
            "ML_CACHE_CONTAINERD_PIDFILE": str(self.pidfile),
            "ML_CACHE_PLAIN_HTTP_REGISTRIES": " ".join(self.plain_http),
            "ML_CACHE_PULL_BACKOFF_SECONDS": "0",
        })
        env.update(extra)
        return env

    def run(self, spec: dict, *, via: str = "file", timeout: float = 600, **extra_env: str
            ) -> subprocess.CompletedProcess[str]:
        """Run the script with `spec` passed as a file ($1) or as SSM would (base64 in SSM_spec)."""
        if via == "ssm":
            argv, env = [str(SCRIPT)], self.env(SSM_spec=encode_spec(spec), **extra_env)
        else:
            spec_file = self.base / f"spec-{len(self.runs)}.json"
            spec_file.write_text(json.dumps(spec))
            argv, env = [str(SCRIPT), str(spec_file)], self.env(**extra_env)
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
        self.runs.append(proc)
        return proc

    def build_spec(self, images: list[str], action: str = "build", **overrides: object) -> dict:
        """The spec as Airflow makes it: the product's build_spec, with this lab's defaults."""
        arguments = {"images": images, "platform": PLATFORM, "volume_id": VOLUME_ID, "parallel": 3,
                     "registry_credentials": {}}
        arguments.update(overrides)
        return build_spec(action, **arguments)

    def open_volume(self, volume_file: Path | None = None) -> Containerd:
        """Mount a volume file (nouuid: copies share the UUID) under a fresh containerd; caller stops it."""
        name = "restored" if volume_file else "reopened"
        mountpoint = self.base / name / "root"
        volumes.mount(volume_file or self.device, mountpoint, nouuid=volume_file is not None)
        address = self.base / name / "c.sock"
        write_config(mountpoint, self.base / name / "state", address, self.base / name / "config.toml")
        return Containerd(mountpoint, self.base / name / "state", address, self.base / name / "config.toml")


def _builder(plain_http: list[str], size_gib: int = 4) -> Iterator[Builder]:
    base = short_tmp("mlc-b-")
    try:
        volume_file = volumes.create_volume_file(base / "vol.img", size_gib)
        device = volumes.attach_loop(volume_file)
        (base / "by-id").mkdir()
        (base / "by-id" / f"nvme-Amazon_Elastic_Block_Store_{VOLUME_ID.replace('-', '')}").symlink_to(device)
        write_config(base / "var-lib-containerd", base / "run" / "state", base / "run" / "containerd.sock",
                     base / "containerd.toml")
        yield Builder(base, volume_file, device, plain_http)
    finally:
        volumes.cleanup_under(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def registry() -> Iterator[tuple[Registry, dict[str, str]]]:
    """A loopback registry seeded with the small demo image (module-wide)."""
    base = short_tmp("mlc-r-")
    try:
        with Registry(base / "storage") as running:
            refs = seed_registry(running.address, default_cache_dir(), include_large=False)
            yield running, refs
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def builder(registry: tuple[Registry, dict[str, str]]) -> Iterator[Builder]:
    yield from _builder([registry[0].address])


@pytest.fixture
def make_builder() -> Iterator:
    """Factory for builders against any registry (the slow tests bring their own)."""
    made: list[Iterator[Builder]] = []

    def make(plain_http: list[str], size_gib: int = 4) -> Builder:
        generator = _builder(plain_http, size_gib)
        made.append(generator)
        return next(generator)

    yield make
    for generator in made:
        generator.close()


@pytest.fixture
def containerd() -> Iterator[Containerd]:
    """A private containerd of its own (root, state, socket under a short /tmp directory)."""
    base = short_tmp("mlc-c-")
    running = Containerd(base / "root", base / "state", base / "c.sock")
    try:
        with running:
            yield running
    finally:
        subprocess.run(["umount", "-R", str(base / "state")], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)
