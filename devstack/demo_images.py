"""Demo images for the loopback registry, built here from busybox-static: no internet needed.

Images are written as OCI image layouts (deterministic tar layers, gzip'ed with pigz or gzip -n,
config, manifest, index), cached by recipe under a cache dir, and pushed with skopeo. Rebuilding
gives the same digests, so refs pinned by digest stay valid between runs on one machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import random
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from devstack.volumes import is_static_elf

MIB = 1024**2
REPOSITORY_PREFIX = "ml-cache-demo"
BUSYBOX_APPLETS = ("sh", "echo", "sleep", "cat", "ls", "true", "false", "env", "du", "df", "wc", "head")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
RECIPE_VERSION = 1  # bump when the layout format changes, to invalidate caches


def machine_architecture() -> str:
    """OCI architecture name of this machine (amd64 or arm64)."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


@dataclass(frozen=True)
class DemoImage:
    """Recipe of a demo image: busybox base plus `data_layers` layers of seeded random bytes."""

    name: str
    tag: str = "1.0"
    data_layers: int = 0
    data_layer_mib: int = 0
    seed: int = 0
    architecture: str = field(default_factory=machine_architecture)
    # More architectures make the tag an image index (like most public images). The layers are
    # the same for all (the busybox of this machine): only the metadata differs.
    extra_architectures: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ("/bin/sh", "-c", "echo ready")

    @property
    def repository(self) -> str:
        return f"{REPOSITORY_PREFIX}/{self.name}"

    def recipe_key(self) -> str:
        """Hash of everything that shapes the layout (busybox binary included)."""
        recipe = {
            "v": RECIPE_VERSION, "name": self.name, "tag": self.tag, "layers": self.data_layers,
            "mib": self.data_layer_mib, "seed": self.seed, "arch": self.architecture, "cmd": self.cmd,
            "extra_arch": self.extra_architectures,
            "busybox": _file_sha256(busybox_path()), "gzip": compressor()[0],
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


DEMO_IMAGES: dict[str, DemoImage] = {
    "small": DemoImage("small"),
    "large": DemoImage("large", data_layers=4, data_layer_mib=256, seed=20261129),
}

# The image `make run` serves through the ECR-style registry: busybox plus one small tools layer,
# so its digest differs from the anonymous small image's. Its next week's version (the same tag
# re-pushed) changes only that layer, the usual weekly change of an image.
ECR_DEMO_IMAGE = DemoImage("tools", data_layers=1, data_layer_mib=8, seed=1)
ECR_DEMO_IMAGE_NEXT_WEEK = replace(ECR_DEMO_IMAGE, seed=2)


def busybox_path() -> Path:
    """The static busybox that becomes /bin/busybox in every demo image."""
    found = shutil.which("busybox")
    if found is None or not is_static_elf(Path(found)):
        raise RuntimeError("static busybox not found (apt-get install busybox-static)")
    return Path(found).resolve()


def compressor() -> list[str]:
    """gzip command writing a reproducible stream (no name, no timestamp) to stdout."""
    if shutil.which("pigz"):
        return ["pigz", "-n", "-1", "-c"]
    return ["gzip", "-n", "-1", "-c"]


def build_layout(image: DemoImage, cache_dir: Path) -> Path:
    """Return an OCI layout for `image` under `cache_dir`, building it once per recipe."""
    layout = Path(cache_dir) / f"{image.name}-{image.recipe_key()}"
    if (layout / "index.json").exists():
        prune_older_recipes(layout)
        return layout
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{image.name}-", dir=cache_dir))
    try:
        _write_layout(image, staging)
        try:
            staging.rename(layout)
        except OSError:  # another process finished the same recipe first
            if not (layout / "index.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    prune_older_recipes(layout)
    return layout


def prune_older_recipes(layout: Path) -> None:
    """Drop cached siblings `<name>-<16 hex>` of `layout` built from an older recipe (they can be GiBs)."""
    name, _, _ = layout.name.rpartition("-")
    stale = re.compile(rf"{re.escape(name)}-[0-9a-f]{{16}}")
    for sibling in layout.parent.iterdir():
        if sibling != layout and stale.fullmatch(sibling.name):
            shutil.rmtree(sibling, ignore_errors=True)


def push_layout(layout: Path, image: DemoImage, address: str, repository: str | None = None) -> str:
    """Push with skopeo to ADDRESS/REPOSITORY:TAG (plain HTTP; `repository` defaults to the image's);
    return the manifest digest."""
    with tempfile.TemporaryDirectory() as scratch:
        digest_file = Path(scratch) / "digest"
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false", "--digestfile", str(digest_file),
             f"oci:{layout}:{image.tag}", f"docker://{address}/{repository or image.repository}:{image.tag}"],
            check=True, capture_output=True, text=True,
        )
        return digest_file.read_text().strip()


def seed_registry(address: str, cache_dir: Path, *, include_large: bool = True,
                  images: dict[str, DemoImage] | None = None, timings: dict[str, float] | None = None
                  ) -> dict[str, str]:
    """Build (or reuse) and push the demo images; return refs pinned by the served digest.

    {"small": "127.0.0.1:PORT/ml-cache-demo/small:1.0@sha256:…", "large": …}. Pass a dict as
    `timings` to receive build/push seconds per image.
    """
    selected = dict(images if images is not None else DEMO_IMAGES)
    if not include_large:
        selected.pop("large", None)
    refs = {}
    for key, image in selected.items():
        started = time.monotonic()
        layout = build_layout(image, cache_dir)
        built = time.monotonic()
        digest = push_layout(layout, image, address)
        if timings is not None:
            timings[f"{key}_build_seconds"] = round(built - started, 2)
            timings[f"{key}_push_seconds"] = round(time.monotonic() - built, 2)
        refs[key] = f"{address}/{image.repository}:{image.tag}@{digest}"
    return refs


# --- layout writing ---------------------------------------------------------------------------

def _write_layout(image: DemoImage, layout: Path) -> None:
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layers = [_write_layer(blobs, _busybox_members())]
    for index in range(image.data_layers):
        layers.append(_write_layer(blobs, _data_members(image, index)))
    manifests = [_write_image(image, blobs, layers, architecture)
                 for architecture in (image.architecture, *image.extra_architectures)]
    if image.extra_architectures:
        top = _write_json_blob(blobs, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests},
                               OCI_INDEX)
    else:
        top = manifests[0]
    top["annotations"] = {"org.opencontainers.image.ref.name": image.tag}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))


def _write_image(image: DemoImage, blobs: Path, layers: list[dict], architecture: str) -> dict:
    """Write config and manifest for one architecture; return the manifest's descriptor."""
    config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": architecture,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": list(image.cmd),
            "WorkingDir": "/",
            "Labels": {"org.opencontainers.image.title": f"ml-cache-demo {image.name}"},
        },
        "rootfs": {"type": "layers", "diff_ids": [layer["diff_id"] for layer in layers]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "devstack/demo_images.py"}
                    for _ in layers],
    }
    config_desc = _write_json_blob(blobs, config, OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc,
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer["digest"], "size": layer["size"]}
                   for layer in layers],
    }
    manifest_desc = _write_json_blob(blobs, manifest, OCI_MANIFEST)
    manifest_desc["platform"] = {"architecture": architecture, "os": "linux"}
    return manifest_desc


def _write_json_blob(blobs: Path, document: dict, media_type: str) -> dict:
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


class _HashingWriter(io.RawIOBase):
    """Pass bytes to a pipe while hashing them (the layer's uncompressed diff_id)."""

    def __init__(self, sink: io.BufferedIOBase) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sha.update(data)
        self.sink.write(data)
        return len(data)


def _write_layer(blobs: Path, members: Iterator[tuple[tarfile.TarInfo, io.IOBase | None]]) -> dict:
    """Stream a tar through the compressor into a blob; return digest, size and diff_id."""
    partial = blobs / ".layer.partial"
    with partial.open("wb") as out:
        gzip_proc = subprocess.Popen(compressor(), stdin=subprocess.PIPE, stdout=out)
        writer = _HashingWriter(gzip_proc.stdin)
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            for info, payload in members:
                archive.addfile(info, payload)
        gzip_proc.stdin.close()
        if gzip_proc.wait() != 0:
            raise RuntimeError(f"{compressor()[0]} failed while writing a layer")
    digest = _file_sha256(partial)
    partial.rename(blobs / digest)
    return {"digest": f"sha256:{digest}", "size": (blobs / digest).stat().st_size,
            "diff_id": f"sha256:{writer.sha.hexdigest()}"}


def _tar_info(name: str, *, kind: bytes = tarfile.REGTYPE, size: int = 0, mode: int = 0o644,
              link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.linkname = kind, size, mode, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
    return info


def _busybox_members() -> Iterator[tuple[tarfile.TarInfo, io.IOBase | None]]:
    """A minimal root filesystem: /bin/busybox, applet symlinks, a few small files."""
    for directory in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "var"):
        yield _tar_info(directory, kind=tarfile.DIRTYPE, mode=0o1777 if directory == "tmp" else 0o755), None
    binary = busybox_path().read_bytes()
    yield _tar_info("bin/busybox", size=len(binary), mode=0o755), io.BytesIO(binary)
    for applet in BUSYBOX_APPLETS:
        yield _tar_info(f"bin/{applet}", kind=tarfile.SYMTYPE, mode=0o777, link="busybox"), None
    for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n"),
                       ("etc/hostname", "ml-cache-demo\n")):
        yield _tar_info(name, size=len(text)), io.BytesIO(text.encode())


class _SeededBytes(io.RawIOBase):
    """`size` bytes of incompressible, reproducible data, produced chunk by chunk."""

    def __init__(self, seed: int, size: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - reproducible filler, not security
        self.remaining = size

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self.remaining if size is None or size < 0 else min(size, self.remaining)
        self.remaining -= size
        return self.rng.randbytes(size)


def _data_members(image: DemoImage, index: int) -> Iterator[tuple[tarfile.TarInfo, io.IOBase | None]]:
    yield _tar_info("data", kind=tarfile.DIRTYPE, mode=0o755), None
    size = image.data_layer_mib * MIB
    name = f"data/{image.name}-layer-{index}.bin"
    yield _tar_info(name, size=size), _SeededBytes(image.seed * 1000 + index, size)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """Layouts cache: $ML_CACHE_DEMO_CACHE, else .devstack/cache/demo-images in the checkout."""
    configured = os.environ.get("ML_CACHE_DEMO_CACHE")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent / ".devstack" / "cache" / "demo-images"
