"""Benchmark: container start from a restored cache volume vs. pull-then-start, side by side.

Real parts only (root, Debian packages): a loopback registry seeded with the demo images, the
builder script filling an XFS volume on a loop device, a copy of that volume as the "snapshot",
and two fresh containerds: one on the restored copy (cached), one on an empty volume (pulls).

    sudo .venv/bin/python benchmarks/cached_vs_pulled_start.py [--image large|small] [--runs 3]

Prints one JSON object: seconds per run for each side, medians and the ratio. Not a test: the
numbers depend on the machine (loopback registry: no network latency, so the real gap is larger).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins"))  # the product's spec builder

from devstack import volumes
from devstack.containerd import Containerd, write_config
from devstack.demo_images import default_cache_dir, machine_architecture, seed_registry
from devstack.registry import Registry
from ml_cache.builder_spec import build_spec

SCRIPT = Path(__file__).resolve().parent.parent / "plugins" / "ml_cache" / "scripts" / "build_cache.sh"
VOLUME_ID = "vol-0be0c4bea4c4be0c4"


def build_cache_volume(base: Path, registry: str, ref: str) -> Path:
    """Run the builder script onto a fresh volume file; return the quiesced volume file."""
    volume = volumes.create_volume_file(base / "builder.img", 4)
    device = volumes.attach_loop(volume)
    by_id = base / "by-id"
    by_id.mkdir()
    (by_id / f"nvme-Amazon_Elastic_Block_Store_{VOLUME_ID.replace('-', '')}").symlink_to(device)
    root, state, sock, config = base / "b-root", base / "b-state", base / "b.sock", base / "b.toml"
    write_config(root, state, sock, config)
    spec = base / "spec.json"
    spec.write_text(json.dumps(build_spec("build", images=[ref], platform=f"linux/{machine_architecture()}",
                                          volume_id=VOLUME_ID, parallel=1, registry_credentials={})))
    env = {**os.environ, "ML_CACHE_DEVICE_DIR": str(by_id), "ML_CACHE_CONTAINERD_ROOT": str(root),
           "ML_CACHE_CONTAINERD_STATE": str(state), "ML_CACHE_CONTAINERD_SOCKET": str(sock),
           "ML_CACHE_CONTAINERD_CONFIG": str(config), "ML_CACHE_CONTAINERD_SERVICE": "process",
           "ML_CACHE_CONTAINERD_PIDFILE": str(base / "b.pid"), "ML_CACHE_PLAIN_HTTP_REGISTRIES": registry}
    subprocess.run([str(SCRIPT), str(spec)], env=env, check=True, stdout=subprocess.DEVNULL)
    volumes.detach_loop(device)
    return volume


def node(base: Path, name: str, volume: Path, *, nouuid: bool) -> Containerd:
    """A fresh 'node': the volume mounted as containerd's root, containerd started."""
    mountpoint = base / name / "root"
    volumes.mount(volume, mountpoint, nouuid=nouuid)
    sock = base / f"{name}.sock"
    write_config(mountpoint, base / name / "state", sock, base / name / "config.toml")
    return Containerd(mountpoint, base / name / "state", sock, base / name / "config.toml").start()


def timed(containerd: Containerd, *steps: list[str]) -> float:
    started = time.monotonic()
    for step in steps:
        proc = containerd.ctr(*step, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(step)}: {proc.stderr.strip()}")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", choices=["small", "large"], default="large")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    missing = volumes.data_plane_missing()
    if missing:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="mlc-bench-", dir="/tmp"))
    results: dict[str, list[float]] = {"cached_start_seconds": [], "pull_and_start_seconds": []}
    try:
        with Registry(base / "registry") as registry:
            ref = seed_registry(registry.address, default_cache_dir(), include_large=args.image == "large")[args.image]
            snapshot = build_cache_volume(base, registry.address, ref)
            for run in range(args.runs):
                restored = base / f"restored-{run}.img"
                volumes.copy_volume_file(snapshot, restored)
                cached = node(base, f"cached-{run}", restored, nouuid=True)
                try:
                    results["cached_start_seconds"].append(timed(cached, ["run", "--rm", ref, f"c{run}"]))
                finally:
                    cached.stop()
                empty = volumes.create_volume_file(base / f"empty-{run}.img", 4)
                volumes.make_xfs(empty)
                pulling = node(base, f"pull-{run}", empty, nouuid=False)
                try:
                    results["pull_and_start_seconds"].append(timed(
                        pulling, ["images", "pull", "--plain-http", ref], ["run", "--rm", ref, f"p{run}"]))
                finally:
                    pulling.stop()
                volumes.cleanup_under(base / f"cached-{run}")
                volumes.cleanup_under(base / f"pull-{run}")
                restored.unlink()
                empty.unlink()
    finally:
        volumes.cleanup_under(base)
        shutil.rmtree(base, ignore_errors=True)
    cached, pulled = (statistics.median(results[key]) for key in results)
    print(json.dumps({"image": args.image, "runs": args.runs,
                      **{key: [round(value, 3) for value in values] for key, values in results.items()},
                      "median_cached_seconds": round(cached, 3), "median_pull_and_start_seconds": round(pulled, 3),
                      "ratio": round(pulled / cached, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
