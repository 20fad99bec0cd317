"""Benchmark: the builder's pull phase against the reference's sequential `ctr images pull` loop and the floor.

Real parts only (root, Debian packages): docker-registry serving two image sets built here
(benchmarks/pull_phase_images.py: A, one 2.3 GB image in 12 layers; B, four 0.44 GB images sharing a
base), and per arm and repetition a fresh XFS volume on a loop device. Three arms, side by side:

- reference: a fresh containerd on the volume, then `ctr -n k8s.io images pull --platform P REF` for
  one image after the other (what the AWS reference's builder does); timed from the first pull's start
  to the last one's end.
- ours: the real plugins/ml_cache/scripts/build_cache.sh of this checkout, driven through its interface
  (spec file + ML_CACHE_* environment, its own containerd); its report's `timings.pull_seconds`
  (the `pulled` minus `prepared` marks) is the figure.
- floor: no containerd: manifests fetched, then every blob at once, each layer streamed
  `curl | pigz -d | tar -x` into its own directory on the volume, all in parallel. One connection per
  blob, like the other arms: behind the cap, a fetcher splitting a big blob over several can beat it.

Two network modes: `loopback` (127.0.0.1) and `capped`: the registry in one network namespace, the
pullers (containerd, ctr, the script, curl) in another, each TCP connection capped at --cap-mbit by
htb (benchmarks/pull_phase_net.py; checked first: one connection, then two). Arms run interleaved
within each repetition (A-reference, A-ours, A-floor, B-reference, ...).

    sudo .venv/bin/python benchmarks/pull_phase.py [--scale 1] [--reps 3] [--modes loopback,capped]

Prints min and median seconds per mode x set x arm, the ratios reference/ours and ours/floor (of the
medians), and as the last line the two headline ratios:
`capped reference/ours: A 1.62x B 1.71x; loopback ours/floor: A 1.45x B 1.80x`.
Progress goes to stderr. Not a test: the figures depend on the machine (2 vCPUs here).
No arm syncs its writes: every arm ends with its bytes in the volume's page cache.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "plugins"))  # the product's spec builder and settings

from pull_phase_images import IMAGE_SETS, ServedSet, build_set  # noqa: E402
from pull_phase_net import CappedLink, NetnsContainerd, NetnsRegistry, link_missing  # noqa: E402

from devstack import process, volumes  # noqa: E402
from devstack.containerd import write_config  # noqa: E402
from devstack.demo_images import machine_architecture  # noqa: E402
from devstack.registry import Registry  # noqa: E402
from ml_cache.builder_spec import build_spec  # noqa: E402
from ml_cache.settings.models import BuildConfig  # noqa: E402

SCRIPT = REPO / "plugins" / "ml_cache" / "scripts" / "build_cache.sh"
VOLUME_ID = "vol-0be0c4bea4c4be0c5"
PLATFORM = f"linux/{machine_architecture()}"
ARMS = ("reference", "ours", "floor")
MODES = ("loopback", "capped")
GIB = 1024**3
ACCEPT = ", ".join(("application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.docker.distribution.manifest.v2+json"))
ARM_TIMEOUT = 3600


@dataclass
class Target:
    """Where one set is served in one mode, and how to run a puller there."""

    mode: str
    served: ServedSet
    address: str
    prefix: list[str]  # argv prefix: run in the client network namespace (empty on loopback)

    @property
    def refs(self) -> list[str]:
        return self.served.pinned(self.address)

    def volume_gib(self) -> int:
        """A sparse volume with room for the blobs and the unpacked layers, twice over."""
        return math.ceil(2 * (self.served.compressed_bytes + self.served.uncompressed_bytes) / GIB) + 2


@dataclass
class Run:
    seconds: float
    window: tuple[float, float]  # time.time() at the start and the end of the timed part
    extra: dict[str, float] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


class CpuSampler:
    """Machine-wide CPU use from /proc/stat every 0.1 s, so each arm's window says what bound it.

    busy = user+nice+system+irq+softirq+steal, iowait apart; fractions of all cores over the window.
    """

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, int, int]] = []  # (time.time(), busy, iowait, total) jiffies
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stopped.is_set():
            fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
            user, nice, system, _idle, iowait, irq, softirq, steal = fields
            self.samples.append((time.time(), user + nice + system + irq + softirq + steal, iowait, sum(fields)))
            self.stopped.wait(0.1)

    def __enter__(self) -> CpuSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopped.set()
        self.thread.join()

    def window(self, start: float, end: float) -> dict[str, float]:
        """{"cpu_busy": fraction, "cpu_iowait": fraction} between two time.time() values ({} if too short)."""
        inside = [sample for sample in list(self.samples) if start <= sample[0] <= end]
        if len(inside) < 2 or inside[-1][3] == inside[0][3]:
            return {}
        total = inside[-1][3] - inside[0][3]
        return {"cpu_busy": round((inside[-1][1] - inside[0][1]) / total, 3),
                "cpu_iowait": round((inside[-1][2] - inside[0][2]) / total, 3)}


# --- arms ------------------------------------------------------------------------------------

@contextlib.contextmanager
def formatted_volume(work: Path, target: Target) -> Iterator[Path]:
    """A fresh sparse volume file on a loop device, formatted XFS and mounted at work/root."""
    device = volumes.attach_loop(volumes.create_volume_file(work / "vol.img", target.volume_gib()))
    try:
        volumes.make_xfs(device)
        volumes.mount(device, work / "root")
        yield work / "root"
    finally:
        volumes.cleanup_under(work)


def arm_reference(work: Path, target: Target) -> Run:
    """Sequential `ctr images pull` per image into a fresh containerd on the volume."""
    with formatted_volume(work, target) as root:
        sock = work / "c.sock"
        containerd = NetnsContainerd(target.prefix, root, work / "state", sock, work / "config.toml")
        containerd.start()
        try:
            started, wall_started = time.monotonic(), time.time()
            for ref in target.refs:
                proc = subprocess.run([*target.prefix, "ctr", "-a", str(sock), "-n", "k8s.io", "images", "pull",
                                       "--platform", PLATFORM, "--plain-http", ref],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                      timeout=ARM_TIMEOUT, check=False)
                if proc.returncode != 0:
                    raise RuntimeError(f"reference: ctr images pull {ref}: {proc.stderr.strip()[-500:]}")
            seconds = time.monotonic() - started
            listed = set(containerd.ctr("images", "ls", "-q", timeout=60).stdout.split())
            if not set(target.refs) <= listed:
                raise RuntimeError(f"reference: images missing after the pulls: {set(target.refs) - listed}")
        finally:
            containerd.stop()
    return Run(seconds, (wall_started, wall_started + seconds))


def arm_ours(work: Path, target: Target, parallel: int) -> Run:
    """The builder script of this checkout on a blank volume; its report's pull seconds."""
    volume = volumes.create_volume_file(work / "vol.img", target.volume_gib())
    device = volumes.attach_loop(volume)
    script = None
    try:
        by_id = work / "by-id"
        by_id.mkdir()
        (by_id / f"nvme-Amazon_Elastic_Block_Store_{VOLUME_ID.replace('-', '')}").symlink_to(device)
        root, state, sock, config = work / "var-lib-containerd", work / "run" / "state", work / "run" / "c.sock", \
            work / "containerd.toml"
        write_config(root, state, sock, config)
        spec = work / "spec.json"
        spec.write_text(json.dumps(build_spec("build", images=target.refs, platform=PLATFORM, volume_id=VOLUME_ID,
                                              parallel=parallel, registry_credentials={})))
        env = {key: value for key, value in os.environ.items() if not key.startswith(("ML_CACHE_", "SSM_"))}
        env.update({
            "ML_CACHE_DEVICE_DIR": str(by_id), "ML_CACHE_DEVICE_WAIT_SECONDS": "3",
            "ML_CACHE_CONTAINERD_ROOT": str(root), "ML_CACHE_CONTAINERD_STATE": str(state),
            "ML_CACHE_CONTAINERD_SOCKET": str(sock), "ML_CACHE_CONTAINERD_CONFIG": str(config),
            "ML_CACHE_CONTAINERD_SERVICE": "process", "ML_CACHE_CONTAINERD_PIDFILE": str(work / "run" / "cd.pid"),
            "ML_CACHE_PLAIN_HTTP_REGISTRIES": target.address, "ML_CACHE_WORK_DIR": str(work / "script"),
        })
        started, wall_started = time.monotonic(), time.time()
        script = process.start([*target.prefix, str(SCRIPT), str(spec)], work / "report.json", env=env,
                               errors_path=work / "script.log")
        rc = script.wait(timeout=ARM_TIMEOUT)
        wall = time.monotonic() - started
        if rc != 0:
            tail = (work / "script.log").read_text(errors="replace").strip().splitlines()[-8:]
            raise RuntimeError(f"ours: build_cache.sh exited {rc}: " + " | ".join(tail))
        report = json.loads((work / "report.json").read_text().strip().splitlines()[-1])
        images = report["images"]
        if len(images) != len(target.refs) or not all(image["unpacked"] for image in images):
            raise RuntimeError(f"ours: the report does not show every image unpacked: {images}")
        timings = report["timings"]
        pull = float(timings["pull_seconds"])
        pull_start = wall_started + float(timings["prepare_seconds"])  # ~0.1 s early: the script's own start
        return Run(pull, (pull_start, pull_start + pull),
                   {"script_seconds": round(wall, 2), **{key: float(value) for key, value in timings.items()}})
    finally:
        if script is not None and script.poll() is None:
            process.stop(script, 30)  # its trap stops its containerd and unmounts
        process.kill_using(work)
        volumes.cleanup_under(work)


def _parse_ref(ref: str) -> tuple[str, str, str]:
    """host:port/repository:tag@digest -> (host:port, repository, digest)."""
    host, rest = ref.split("/", 1)
    name, digest = rest.split("@", 1)
    return host, name.rsplit(":", 1)[0], digest


def _get_json(target: Target, url: str) -> dict:
    proc = subprocess.run([*target.prefix, "curl", "-sf", "-H", f"Accept: {ACCEPT}", url], capture_output=True,
                          text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"floor: GET {url} failed (curl {proc.returncode})")
    return json.loads(proc.stdout)


def _platform_manifest(target: Target, host: str, repository: str, digest: str) -> dict:
    manifest = _get_json(target, f"http://{host}/v2/{repository}/manifests/{digest}")
    if "manifests" in manifest:  # an index: the platform's manifest
        os_name, architecture = PLATFORM.split("/")[:2]
        chosen = next(entry for entry in manifest["manifests"]
                      if entry.get("platform", {}).get("architecture") == architecture
                      and entry.get("platform", {}).get("os") == os_name)
        manifest = _get_json(target, f"http://{host}/v2/{repository}/manifests/{chosen['digest']}")
    return manifest


def arm_floor(work: Path, target: Target) -> Run:
    """Manifests, then every unique blob at once: layers streamed curl | pigz -d | tar -x onto the volume."""
    with formatted_volume(work, target) as root:
        started, wall_started = time.monotonic(), time.time()
        configs: dict[str, str] = {}
        layers: dict[str, str] = {}
        for ref in target.refs:
            host, repository, digest = _parse_ref(ref)
            manifest = _platform_manifest(target, host, repository, digest)
            configs.setdefault(manifest["config"]["digest"], f"http://{host}/v2/{repository}/blobs/")
            for layer in manifest["layers"]:
                layers.setdefault(layer["digest"], f"http://{host}/v2/{repository}/blobs/")
        (root / "blobs").mkdir()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for digest, url in configs.items():
                procs.append(subprocess.Popen([*target.prefix, "curl", "-sf", "-o",
                                               str(root / "blobs" / digest.replace(":", "-")), url + digest]))
            for digest, url in layers.items():
                directory = root / "layers" / digest.replace(":", "-")
                directory.mkdir(parents=True)
                fetch = subprocess.Popen([*target.prefix, "curl", "-sf", url + digest], stdout=subprocess.PIPE)
                inflate = subprocess.Popen(["pigz", "-d"], stdin=fetch.stdout, stdout=subprocess.PIPE)
                fetch.stdout.close()
                untar = subprocess.Popen(["tar", "-x", "-f", "-", "-C", str(directory)], stdin=inflate.stdout)
                inflate.stdout.close()
                procs += [fetch, inflate, untar]
            failed = [proc.args[0] for proc in procs if proc.wait(timeout=ARM_TIMEOUT) != 0]
            seconds = time.monotonic() - started
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if failed:
            raise RuntimeError(f"floor: {len(failed)} process(es) failed: {sorted(set(failed))}")
    return Run(seconds, (wall_started, wall_started + seconds), {"blobs": len(configs) + len(layers)})


# --- the run ---------------------------------------------------------------------------------

def warm(served: ServedSet) -> None:
    """Read the registry's blobs once, so every arm (the first too) is served from memory."""
    for path in served.storage.rglob("data"):
        if not path.is_file():
            continue
        with path.open("rb") as handle:
            while handle.read(8 * 1024 * 1024):
                pass


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="size factor of every data layer (0.01: smoke)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (each runs every arm once)")
    parser.add_argument("--modes", default="loopback,capped", help="comma-separated: loopback, capped")
    parser.add_argument("--sets", default="A,B", help="comma-separated: A, B")
    parser.add_argument("--cap-mbit", type=int, default=400, help="per-connection cap of the capped mode")
    parser.add_argument("--parallel", type=int, default=None,
                        help="the spec's `parallel` for our script (default: the product's pull_parallelism)")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".devstack" / "cache" / "bench")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's figures here")
    args = parser.parse_args(argv)
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    args.sets = [name.strip().upper() for name in args.sets.split(",") if name.strip()]
    if not args.modes or set(args.modes) - set(MODES):
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    if not args.sets or set(args.sets) - set(IMAGE_SETS):
        parser.error(f"--sets: choose from {', '.join(IMAGE_SETS)}")
    if args.reps < 1 or args.scale <= 0 or args.cap_mbit < 1:
        parser.error("--reps, --scale and --cap-mbit must be positive")
    if args.parallel is None:
        args.parallel = BuildConfig.model_fields["pull_parallelism"].default
    return args


def run(args: argparse.Namespace, base: Path, stack: contextlib.ExitStack) -> dict:
    """Build/serve the sets, run every arm interleaved; return the results document."""
    served = {}
    for name in args.sets:
        started = time.monotonic()
        served[name] = build_set(IMAGE_SETS[name], args.scale, args.cache_dir)
        warm(served[name])
        log(f"set {name} ready in {time.monotonic() - started:.1f} s")
    targets: dict[tuple[str, str], Target] = {}
    cap_check = None
    for mode in args.modes:
        link = None
        if mode == "capped":
            link = stack.enter_context(CappedLink(args.cap_mbit))
            cap_check = link.measure()
            log(f"cap check: {cap_check}")
            one, two = cap_check["one_connection_mbit"], cap_check["two_connections_mbit"]
            if not (0.6 * args.cap_mbit <= one <= 1.15 * args.cap_mbit and two >= 1.5 * one):
                raise RuntimeError(f"the per-connection cap does not hold: {cap_check} (cap {args.cap_mbit} Mbit/s)")
        for index, name in enumerate(args.sets):
            work_dir = base / f"registry-{mode}-{name}"
            if link is None:
                registry = stack.enter_context(Registry(served[name].storage, work_dir=work_dir))
                targets[mode, name] = Target(mode, served[name], registry.address, [])
            else:
                registry = NetnsRegistry(link, served[name].storage, work_dir)
                registry.port += index
                stack.enter_context(registry)
                targets[mode, name] = Target(mode, served[name], registry.address, link.client())
    runs: dict[str, list[dict]] = {}
    document = {
        "scale": args.scale, "reps": args.reps, "modes": args.modes, "sets": args.sets, "cap_mbit": args.cap_mbit,
        "parallel": args.parallel, "cap_check": cap_check, "runs": runs,
        "image_sets": {name: {"description": s.image_set.description, "images": len(s.image_set.images),
                              "layers": s.layers, "compressed_bytes": s.compressed_bytes,
                              "uncompressed_bytes": s.uncompressed_bytes} for name, s in served.items()},
    }
    cpu = stack.enter_context(CpuSampler())
    for rep in range(1, args.reps + 1):
        for mode in args.modes:
            for name in args.sets:
                for arm in ARMS:
                    work = base / f"r{rep}-{mode}-{name}-{arm}"
                    work.mkdir()
                    target = targets[mode, name]
                    if arm == "reference":
                        result = arm_reference(work, target)
                    elif arm == "ours":
                        result = arm_ours(work, target, args.parallel)
                    else:
                        result = arm_floor(work, target)
                    shutil.rmtree(work, ignore_errors=True)
                    os.sync()
                    result.extra.update(cpu.window(*result.window))
                    runs.setdefault(f"{mode}/{name}/{arm}", []).append({"seconds": round(result.seconds, 3),
                                                                         **result.extra})
                    log(f"rep {rep} {mode} {name} {arm}: {result.seconds:.2f} s {result.extra or ''}")
                    if args.json:  # after every arm: a run stopped midway keeps what it measured
                        args.json.write_text(json.dumps(document, indent=1))
    return document


def _median_percent(entries: list[dict], key: str) -> str:
    values = [entry[key] for entry in entries if key in entry]
    return f"{100 * statistics.median(values):.0f}" if values else "-"


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator > 0 else "n/a"


def summary(results: dict) -> list[str]:
    """The printed table: sets, cap check, seconds per arm, ratios, and the headline line last."""
    modes, sets = results["modes"], results["sets"]
    lines = [f"pull phase: scale {results['scale']:g}, {results['reps']} repetition(s), our parallel "
             f"{results['parallel']}, {os.cpu_count()} vCPUs, {_containerd_version()}"]
    for name, info in results["image_sets"].items():
        lines.append(f"set {name} ({info['description']}): {info['images']} image(s), {info['layers']} unique "
                     f"layers, {info['compressed_bytes'] / 1e9:.2f} GB compressed, "
                     f"{info['uncompressed_bytes'] / 1e9:.2f} GB unpacked")
    if results["cap_check"]:
        check = results["cap_check"]
        lines.append(f"cap {results['cap_mbit']} Mbit/s per connection: one connection "
                     f"{check['one_connection_mbit']:.0f} Mbit/s, two {check['two_connections_mbit']:.0f} Mbit/s")
    lines.append(f"{'mode':<9} {'set':<4} {'arm':<10} {'min s':>8} {'median s':>9} {'cpu%':>5} {'iow%':>5}  runs")
    medians: dict[tuple[str, str, str], float] = {}
    for mode in modes:
        for name in sets:
            for arm in ARMS:
                entries = results["runs"][f"{mode}/{name}/{arm}"]
                seconds = [entry["seconds"] for entry in entries]
                medians[mode, name, arm] = statistics.median(seconds)
                busy, iowait = (_median_percent(entries, key) for key in ("cpu_busy", "cpu_iowait"))
                lines.append(f"{mode:<9} {name:<4} {arm:<10} {min(seconds):>8.2f} {medians[mode, name, arm]:>9.2f} "
                             f"{busy:>5} {iowait:>5}  " + " ".join(f"{value:.2f}" for value in seconds))
    lines.append(f"{'mode':<9} {'set':<4} {'reference/ours':>15} {'ours/floor':>11} {'reference/floor':>16}  (medians)")
    for mode in modes:
        for name in sets:
            ref, ours, floor = (medians[mode, name, arm] for arm in ARMS)
            lines.append(f"{mode:<9} {name:<4} {ratio(ref, ours):>15} {ratio(ours, floor):>11} "
                         f"{ratio(ref, floor):>16}")
    speed_mode = "capped" if "capped" in modes else modes[0]
    floor_mode = "loopback" if "loopback" in modes else modes[0]
    lines.append(
        f"{speed_mode} reference/ours: "
        + " ".join(f"{name} {ratio(medians[speed_mode, name, 'reference'], medians[speed_mode, name, 'ours'])}"
                   for name in sets)
        + f"; {floor_mode} ours/floor: "
        + " ".join(f"{name} {ratio(medians[floor_mode, name, 'ours'], medians[floor_mode, name, 'floor'])}"
                   for name in sets))
    return lines


def _containerd_version() -> str:
    proc = subprocess.run(["containerd", "--version"], capture_output=True, text=True, check=False)
    words = proc.stdout.split()
    return f"containerd {words[2]}" if len(words) >= 3 else "containerd ?"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = volumes.data_plane_missing() or (link_missing() if "capped" in args.modes else None)
    if missing:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below on a stop too
    base = Path(tempfile.mkdtemp(prefix="mlcb-", dir="/tmp"))
    try:
        with contextlib.ExitStack() as stack:
            results = run(args, base, stack)
    finally:
        process.kill_using(base)
        volumes.cleanup_under(base)
        shutil.rmtree(base, ignore_errors=True)
    print("\n".join(summary(results)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
