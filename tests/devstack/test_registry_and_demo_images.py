"""Loopback registry, demo images and a private containerd, all real."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import volumes
from devstack.containerd import Containerd, write_config
from devstack.demo_images import DEMO_IMAGES, DemoImage, build_layout, default_cache_dir, seed_registry
from devstack.registry import Registry

MISSING = volumes.data_plane_missing()
pytestmark = [pytest.mark.root, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]
PINNED = re.compile(r"127\.0\.0\.1:\d+/ml-cache-demo/(small|large):1\.0@sha256:[0-9a-f]{64}")


def skopeo_inspect(ref: str) -> dict:
    """skopeo does not take "repo:tag@digest": ask for "repo@digest" (or "repo:tag")."""
    if "@" in ref:
        name, digest = ref.split("@")
        head, _, last = name.rpartition("/")
        ref = f"{head}/{last.split(':')[0]}@{digest}"
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mlc-d-", dir="/tmp"))
    try:
        yield path
    finally:
        volumes.cleanup_under(path)
        shutil.rmtree(path, ignore_errors=True)


def test_registry_answers_on_loopback_and_stops_by_pid(base: Path) -> None:
    registry = Registry(base / "storage").start()
    try:
        assert registry.address.startswith("127.0.0.1:") and registry.answers()
        assert f"127.0.0.1:{registry.port}" in registry.config_path.read_text()
    finally:
        registry.stop()
    assert not registry.answers()
    assert registry.process.poll() is not None


def test_seed_small_gives_refs_pinned_by_the_digest_the_registry_serves(base: Path) -> None:
    with Registry(base / "storage") as registry:
        refs = seed_registry(registry.address, base / "cache", include_large=False)
        assert set(refs) == {"small"}
        assert PINNED.fullmatch(refs["small"]) and refs["small"].startswith(registry.address)
        by_tag = refs["small"].split("@")[0]
        inspected = skopeo_inspect(by_tag)
        assert inspected["Digest"] == refs["small"].split("@")[1]
        assert inspected["Architecture"] == DEMO_IMAGES["small"].architecture and inspected["Os"] == "linux"
        assert skopeo_inspect(refs["small"])["Digest"] == inspected["Digest"]


def test_layouts_are_reproducible(base: Path) -> None:
    image = DemoImage("repro", data_layers=2, data_layer_mib=1, seed=7)
    first = build_layout(image, base / "one")
    second = build_layout(image, base / "two")
    assert first.name == second.name
    index = (first / "index.json").read_bytes()
    assert index == (second / "index.json").read_bytes()
    other_seed = build_layout(DemoImage("repro", data_layers=2, data_layer_mib=1, seed=8), base / "one")
    assert (other_seed / "index.json").read_bytes() != index
    assert not first.exists(), "the older recipe's layout is pruned from the cache"


def test_small_image_runs_in_a_private_containerd(base: Path) -> None:
    with Registry(base / "storage") as registry:
        ref = seed_registry(registry.address, default_cache_dir(), include_large=False)["small"]
        address = base / "run" / "c.sock"
        config = write_config(base / "root", base / "state", address, base / "containerd.toml")
        text = config.read_text()
        assert "/var/lib/containerd" not in text and "/run/containerd" not in text
        assert f'address = "{address}.ttrpc"' in text
        with Containerd(base / "root", base / "state", address, config) as containerd:
            assert containerd.pid is not None
            pull = containerd.ctr("images", "pull", "--plain-http", ref, timeout=120)
            assert pull.returncode == 0, pull.stderr
            run = containerd.ctr("run", "--rm", ref, "demo-small", timeout=60)
            assert run.returncode == 0 and run.stdout.strip() == "ready", run.stderr
            echo = containerd.ctr("run", "--rm", ref, "demo-echo", "/bin/echo", "hello", timeout=60)
            assert echo.stdout.strip() == "hello"
            pid = containerd.pid
        assert containerd.process.poll() is not None
        assert not Path(f"/proc/{pid}").exists() or "containerd" not in Path(f"/proc/{pid}/cmdline").read_text()


@pytest.mark.slow
def test_large_image_is_over_a_gib_in_several_layers_and_cached(base: Path) -> None:
    cache = default_cache_dir()
    with Registry(base / "storage") as registry:
        timings: dict[str, float] = {}
        refs = seed_registry(registry.address, cache, timings=timings)
        print(f"first seed: {timings}")
        assert set(refs) == {"small", "large"} and all(PINNED.fullmatch(ref) for ref in refs.values())
        inspected = skopeo_inspect(refs["large"])
        assert inspected["Digest"] == refs["large"].split("@")[1]
        assert len(inspected["Layers"]) >= 4
        layout = build_layout(DEMO_IMAGES["large"], cache)
        manifest_digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
        manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_text())
        assert sum(layer["size"] for layer in manifest["layers"]) >= 1024**3

        started = time.monotonic()
        again = seed_registry(registry.address, cache)
        assert again == refs
        assert time.monotonic() - started < 10, "the second seeding must reuse the cached layouts"


def test_stopping_containerd_kills_running_containers_first(base: Path) -> None:
    with Registry(base / "storage") as registry:
        ref = seed_registry(registry.address, default_cache_dir(), include_large=False)["small"]
        containerd = Containerd(base / "root", base / "state", base / "c.sock").start()
        try:
            assert containerd.ctr("images", "pull", "--plain-http", ref, timeout=120).returncode == 0
            started = containerd.ctr("run", "-d", ref, "sleeper", "/bin/sleep", "600", timeout=60)
            assert started.returncode == 0, started.stderr
            assert "sleeper" in containerd.ctr("tasks", "ls", "-q").stdout.split()
        finally:
            containerd.stop()
        deadline = time.monotonic() + 10  # a SIGKILLed process may take a moment to be reaped
        while (sleepers := _sleepers_under(base / "root")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sleepers == []


def _sleepers_under(root: Path) -> list[Path]:
    return [p for p in Path("/proc").glob("[0-9]*/cmdline")
            if _read(p) == "/bin/sleep 600" and root.as_posix() in _read(p.parent / "mountinfo")]


def _read(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
