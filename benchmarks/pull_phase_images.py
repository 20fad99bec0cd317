"""The two image sets of benchmarks/pull_phase.py, built here (seeded, with pigz) and cached as registry storage.

A: one image of ~2.3 GB compressed in 12 gzip layers, one of them dominant (like a CUDA/PyTorch image).
B: four images of ~0.44 GB compressed each, sharing a base (busybox + one data layer) and three own layers.
Every data layer is files of 8 MiB made of 1 MiB chunks, alternately random (incompressible) and
compressible (~4x with gzip: text-like bytes with repeats inside gzip's window), so half the bytes of
a layer are each kind. `scale` multiplies every data layer's size (0.01 gives a smoke-test set).

The cache (default .devstack/cache/bench) holds, per set and scale, a docker-registry storage directory
and refs.json; a registry started on it serves the set at once, so a later run pushes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devstack.demo_images import (
    DemoImage,
    _busybox_members,
    _tar_info,
    _write_image,
    _write_layer,
    busybox_path,
    compressor,
    machine_architecture,
    prune_older_recipes,
)
from devstack.registry import Registry

CONTENT_VERSION = 1  # bump when the content or the layout changes, to rebuild caches
MIB = 1024**2
CHUNK = MIB
FILE_BYTES = 8 * MIB
COMPRESSED_FRACTION = 0.625  # half random (1.0) + half compressible (~0.25): compressed / uncompressed
REPOSITORY_PREFIX = "ml-cache-bench"
TAG = "1.0"


@dataclass(frozen=True)
class Layer:
    """A data layer: `weight` of its image's compressed target size, content drawn from `seed`."""

    seed: int
    weight: float


@dataclass(frozen=True)
class BenchImage:
    name: str
    layers: tuple[Layer, ...]  # data layers on top of the busybox base layer


@dataclass(frozen=True)
class ImageSet:
    key: str
    description: str
    compressed_bytes_per_image: float
    images: tuple[BenchImage, ...]


_A_WEIGHTS = (0.55, 0.12, 0.08, 0.06, 0.05, 0.04, 0.03, 0.03, 0.02, 0.01, 0.01)  # 11 data layers + base = 12
_B_SHARED = Layer(seed=2000, weight=0.40)
_B_OWN = (0.30, 0.18, 0.12)

IMAGE_SETS: dict[str, ImageSet] = {
    "A": ImageSet("A", "one 2.3 GB image, 12 layers, one dominant", 2.3e9,
                  (BenchImage("a0", tuple(Layer(1000 + i, w) for i, w in enumerate(_A_WEIGHTS))),)),
    "B": ImageSet("B", "four 0.44 GB images sharing a base", 0.44e9,
                  tuple(BenchImage(f"b{n}", (_B_SHARED, *(Layer(2100 + 10 * n + i, w) for i, w in enumerate(_B_OWN))))
                        for n in range(4))),
}


@dataclass(frozen=True)
class ServedSet:
    """A built set: its registry storage and, per image, `repository:tag@digest` (no host) and sizes."""

    image_set: ImageSet
    storage: Path
    refs: dict[str, str]
    compressed_bytes: int  # unique blobs (what a puller fetches)
    uncompressed_bytes: int  # unique layers unpacked
    layers: int  # unique layers

    def pinned(self, address: str) -> list[str]:
        return [f"{address}/{self.refs[image.name]}" for image in self.image_set.images]


def layer_bytes(image_set: ImageSet, layer: Layer, scale: float) -> int:
    """Uncompressed size of a data layer: its share of the compressed target, whole chunks, at least one."""
    target = image_set.compressed_bytes_per_image * layer.weight * scale / COMPRESSED_FRACTION
    return max(1, math.ceil(target / CHUNK)) * CHUNK


def recipe_key(image_set: ImageSet, scale: float) -> str:
    recipe = {"v": CONTENT_VERSION, "set": repr(image_set), "scale": scale, "gzip": compressor()[0],
              "arch": machine_architecture()}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


class _LayerContent(io.RawIOBase):
    """`size` seeded bytes: 1 MiB chunks alternately random and compressible."""

    ALPHABET = b"etaoinshrdlucmfwypvbgkqjxz      \n\n..,,0123456789_/=()"

    def __init__(self, rng: random.Random, size: int, first_index: int) -> None:
        self.rng = rng
        self.remaining = size
        self.index = first_index
        self.buffer = b""
        self.table = bytes(self.ALPHABET[i % len(self.ALPHABET)] for i in range(256))
        self.pool = [rng.randbytes(512).translate(self.table) for _ in range(48)]

    def readable(self) -> bool:
        return True

    def _chunk(self) -> bytes:
        self.index += 1
        if self.index % 2:
            return self.rng.randbytes(CHUNK)
        pieces = []
        while sum(len(piece) for piece in pieces) < CHUNK:  # ~0.5 KiB pieces, mostly repeats from the pool
            pieces.append(b"".join(self.pool[i % 48] if i < 200 else self.rng.randbytes(64).translate(self.table)
                                   for i in self.rng.randbytes(256)))
        return b"".join(pieces)[:CHUNK]

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.remaining <= 0:
            return 0
        if not self.buffer:
            self.buffer = self._chunk()
        size = min(len(target), len(self.buffer), self.remaining)
        target[:size] = self.buffer[:size]
        self.buffer = self.buffer[size:]
        self.remaining -= size
        return size


def _data_members(name: str, seed: int, size: int) -> Iterator[tuple[tarfile.TarInfo, io.IOBase | None]]:
    rng = random.Random(seed)  # noqa: S311 - reproducible filler, not security
    yield _tar_info("data", kind=tarfile.DIRTYPE, mode=0o755), None
    yield _tar_info(f"data/{name}", kind=tarfile.DIRTYPE, mode=0o755), None
    for number, offset in enumerate(range(0, size, FILE_BYTES)):
        length = min(FILE_BYTES, size - offset)
        yield (_tar_info(f"data/{name}/f{number:05d}.bin", size=length),
               io.BufferedReader(_LayerContent(rng, length, offset // CHUNK), CHUNK))


def _write_layout(image_set: ImageSet, scale: float, layout: Path) -> tuple[dict[str, int], int]:
    """One OCI layout with every image of the set (ref.name = image name); shared layers written once.

    Returns the uncompressed size per layer digest and the total uncompressed bytes of unique layers.
    """
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    base = _write_layer(blobs, _busybox_members())
    written: dict[Layer, dict] = {}
    unpacked = {base["digest"]: busybox_path().stat().st_size}
    manifests = []
    for image in image_set.images:
        layers = [base]
        for layer in image.layers:
            if layer not in written:
                size = layer_bytes(image_set, layer, scale)
                written[layer] = _write_layer(blobs, _data_members(f"layer-{layer.seed}", layer.seed, size))
                unpacked[written[layer]["digest"]] = size
            layers.append(written[layer])
        descriptor = _write_image(DemoImage(f"bench-{image.name}"), blobs, layers, machine_architecture())
        descriptor["annotations"] = {"org.opencontainers.image.ref.name": image.name}
        manifests.append(descriptor)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return unpacked, sum(unpacked.values())


def _push(layout: Path, name: str, address: str) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        digest_file = Path(scratch) / "digest"
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", str(digest_file),
                        f"oci:{layout}:{name}", f"docker://{address}/{REPOSITORY_PREFIX}/{name}:{TAG}"],
                       check=True, capture_output=True, text=True, timeout=3600)
        return digest_file.read_text().strip()


def build_set(image_set: ImageSet, scale: float, cache_dir: Path) -> ServedSet:
    """Registry storage holding the set (built and pushed once per recipe), with its refs and sizes."""
    cached = Path(cache_dir) / f"{image_set.key}-s{scale:g}-{recipe_key(image_set, scale)}"
    if not (cached / "refs.json").exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{image_set.key}-", dir=cached.parent))
        try:
            unpacked, unpacked_total = _write_layout(image_set, scale, staging / "layout")
            with Registry(staging / "registry", work_dir=staging) as registry:
                refs = {image.name: f"{REPOSITORY_PREFIX}/{image.name}:{TAG}@"
                                    f"{_push(staging / 'layout', image.name, registry.address)}"
                        for image in image_set.images}
            blobs = staging / "layout" / "blobs" / "sha256"
            compressed = sum((blobs / digest.removeprefix("sha256:")).stat().st_size for digest in unpacked)
            (staging / "refs.json").write_text(json.dumps({
                "refs": refs, "compressed_bytes": compressed, "uncompressed_bytes": unpacked_total,
                "layers": len(unpacked)}))
            shutil.rmtree(staging / "layout")
            staging.rename(cached)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        prune_older_recipes(cached)
    recorded = json.loads((cached / "refs.json").read_text())
    return ServedSet(image_set, cached / "registry", recorded["refs"], recorded["compressed_bytes"],
                     recorded["uncompressed_bytes"], recorded["layers"])

