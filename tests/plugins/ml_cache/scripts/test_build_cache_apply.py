"""build_cache_apply.py against a real containerd: the snapshots it commits are, entry for entry, the ones
containerd's own overlayfs apply makes from the same layers (whiteouts, opaque directories, owners, modes,
times, xattrs, links, devices); what it cannot apply exactly is left to containerd, never half done."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
from build_cache_lab import MISSING, PLATFORM

from devstack.containerd import Containerd
from ml_cache.scripts import build_cache_apply as apply_module
from ml_cache.scripts.build_cache_prefetch import Store, layout

pytestmark = [pytest.mark.root, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]
OURS, THEIRS = "ours", "theirs"


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **fields: object
          ) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, len(data), 0o644, 1_600_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def layer_tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


BASE = [
    entry("./", tarfile.DIRTYPE, mode=0o700, mtime=1_500_000_000),
    entry("etc/", tarfile.DIRTYPE, mode=0o755),
    entry("tmp/", tarfile.DIRTYPE, mode=0o1777),
    entry("bin/", tarfile.DIRTYPE, mode=0o755),
    entry("bin/tool", data=b"#!/bin/sh\n", mode=0o4755),
    entry("dev/", tarfile.DIRTYPE, mode=0o755),
    entry("dev/null2", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
    entry("data/", tarfile.DIRTYPE, mode=0o750, uid=1000, gid=1000, mtime=1_600_000_123.25),
    entry("data/a", data=os.urandom(300_000), mode=0o640, uid=1000, gid=1000,
          pax_headers={"SCHILY.xattr.user.note": "x"}),
    entry("data/hard", tarfile.LNKTYPE, linkname="data/a", mode=0o640, uid=1000, gid=1000),  # as writers do
    entry("data/link", tarfile.SYMTYPE, linkname="a", mode=0o777),
    entry("data/fifo", tarfile.FIFOTYPE),
    entry("data/old", data=b"old\n"),
    entry("data/olddir/", tarfile.DIRTYPE, mode=0o755),
    entry("data/olddir/x", data=b"x\n"),
    entry("etc/conf", data=b"one\n"),  # apart from its directory: tar must still restore etc/'s time
]
CHANGES = [
    entry("data/", tarfile.DIRTYPE, mode=0o750, uid=1000, gid=1000, mtime=1_600_000_500),
    entry("data/.wh.old", uid=1000, gid=1000),
    entry("data/olddir/", tarfile.DIRTYPE, mode=0o755, mtime=1_600_000_600),
    entry("data/olddir/.wh..wh..opq"),
    entry("data/olddir/y", data=b"y\n"),
    entry("etc/", tarfile.DIRTYPE, mode=0o755),
    entry("etc/conf", data=b"two\n"),
]
UNLISTED_PARENT = [entry("opt/new/file", data=b"made-up parents\n")]  # containerd copies opt/ from below


def import_image(containerd: Containerd, namespace: str, name: str, layers: list[bytes], *, unpack: bool,
                 diff_ids: list[str] | None = None) -> tuple[list[dict], list[str]]:
    """Import an image of these (gzip) layers; its layer descriptors and diff IDs."""
    blobs, descriptors = {}, []
    for tar in layers:
        blob = gzip.compress(tar, mtime=0)
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        blobs[digest] = blob
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest,
                            "size": len(blob)})
    diff_ids = diff_ids or ["sha256:" + hashlib.sha256(tar).hexdigest() for tar in layers]
    os_name, architecture = PLATFORM.split("/")
    config = json.dumps({"architecture": architecture, "os": os_name, "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest()}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config_desc, "layers": descriptors}).encode()
    manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": len(manifest),
                     "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(),
                     "annotations": {"io.containerd.image.name": name},
                     "platform": {"architecture": architecture, "os": os_name}}
    index = json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}).encode()
    archive = layout(index, {**blobs, config_desc["digest"]: config, manifest_desc["digest"]: manifest})
    args = ["images", "import", *([] if unpack else ["--no-unpack"]), "--platform", PLATFORM, "-"]
    proc = subprocess.run(["ctr", "-a", str(containerd.address), "-n", namespace, *args], input=archive,
                          capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return descriptors, diff_ids


def apply(containerd: Containerd, descriptors: list[dict], diff_ids: list[str], workers: int = 2
          ) -> apply_module.Applier:
    """Run the applier over an imported image's layers (all blobs in) until its chain settles."""
    store = Store(str(containerd.address), OURS, str(containerd.root))
    store.create_anchor(PLATFORM)
    staging = containerd.root / "ml-cache-prefetch" / "apply"
    staging.mkdir(parents=True, exist_ok=True)
    settled = threading.Event()
    chain: list[str] = []

    def changed() -> None:
        if chain and applier.settled(chain):
            settled.set()

    applier = apply_module.Applier(apply_module.Snapshots(str(containerd.address), OURS, str(containerd.root)),
                                   containerd.root / "io.containerd.content.v1.content" / "blobs" / "sha256",
                                   staging, workers, store.protect_snapshots, changed)
    for descriptor in descriptors:
        applier.blob_in(descriptor["digest"])
    chain.extend(applier.add(descriptors, diff_ids))
    changed()
    assert settled.wait(60)
    applier.close()
    return applier


def layer_dirs(containerd: Containerd, namespace: str, chain_id: str) -> list[Path]:
    """The upper directories of a committed chain, lowest first (from a throwaway view's mounts)."""
    ctr = ["ctr", "-a", str(containerd.address), "-n", namespace, "snapshots"]
    key = f"probe-{chain_id[7:19]}"
    mounts = json.loads(subprocess.run([*ctr, "view", "--mounts", key, chain_id], capture_output=True, text=True,
                                       check=True).stdout)
    subprocess.run([*ctr, "rm", key], capture_output=True, check=False)  # or the GC took it already
    mount = {k.lower(): v for k, v in mounts[0].items()}
    lower = next((o.partition("=")[2] for o in mount.get("options") or [] if o.startswith("lowerdir=")), "")
    return [Path(p) for p in reversed(lower.split(":"))] if lower else [Path(mount["source"])]


def tree(root: Path, made_up: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every entry's observable state (atime aside; a whiteout device's or a made-up directory's time is
    its creation's)."""
    found = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = os.lstat(path)
        whiteout = stat.S_ISCHR(info.st_mode) and info.st_rdev == 0
        kind = stat.S_IFMT(info.st_mode)
        found[str(path.relative_to(root))] = (
            oct(info.st_mode), info.st_uid, info.st_gid, info.st_rdev, info.st_nlink,
            None if whiteout or path == root or str(path.relative_to(root)) in made_up else info.st_mtime_ns,
            os.readlink(path) if stat.S_ISLNK(info.st_mode) else None,
            hashlib.sha256(path.read_bytes()).hexdigest() if kind == stat.S_IFREG else None,
            sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in os.listxattr(path, follow_symlinks=False)),
        )
    return found


def test_committed_snapshots_equal_containerds_own_apply(containerd) -> None:
    layers = [layer_tar(BASE), layer_tar(CHANGES)]
    descriptors, diff_ids = import_image(containerd, OURS, "example.invalid/tricky:1", layers, unpack=False)
    applier = apply(containerd, descriptors, diff_ids)
    assert applier.applied == 2 and not applier.stopped, applier.stopped
    import_image(containerd, OURS, "example.invalid/tricky:1", layers, unpack=True)  # records; applies nothing
    import_image(containerd, THEIRS, "example.invalid/tricky:1", layers, unpack=True)
    top = apply_module.chain_ids(diff_ids)[-1]
    ours, theirs = layer_dirs(containerd, OURS, top), layer_dirs(containerd, THEIRS, top)
    assert len(ours) == len(theirs) == 2 and ours != theirs
    for mine, containerds in zip(ours, theirs, strict=True):
        assert tree(mine) == tree(containerds)
    changes = tree(ours[1])
    assert changes["data/old"][0] == oct(stat.S_IFCHR) and changes["data/old"][1:3] == (1000, 1000)
    assert ("trusted.overlay.opaque", b"y") in changes["data/olddir"][-1]
    assert not any(".wh." in name for name in changes)


def test_a_layer_with_unlisted_parents_and_all_above_it_are_left_to_containerd(containerd) -> None:
    layers = [layer_tar(BASE), layer_tar(UNLISTED_PARENT), layer_tar(CHANGES)]
    descriptors, diff_ids = import_image(containerd, OURS, "example.invalid/parents:1", layers, unpack=False)
    applier = apply(containerd, descriptors, diff_ids)
    assert applier.applied == 1, applier.stopped
    assert any("does not list directory opt" in reason for reason in applier.stopped), applier.stopped
    chain = apply_module.chain_ids(diff_ids)
    listing = containerd.ctr("snapshots", "ls", namespace=OURS).stdout
    assert chain[0] in listing and chain[1] not in listing and chain[2] not in listing
    assert "ml-cache-apply" not in listing  # no active snapshot left behind
    assert not any((containerd.root / "ml-cache-prefetch" / "apply").iterdir())
    import_image(containerd, OURS, "example.invalid/parents:1", layers, unpack=True)
    import_image(containerd, THEIRS, "example.invalid/parents:1", layers, unpack=True)
    pairs = zip(layer_dirs(containerd, OURS, chain[-1]), layer_dirs(containerd, THEIRS, chain[-1]), strict=True)
    for mine, containerds in pairs:
        assert tree(mine, ("opt", "opt/new")) == tree(containerds, ("opt", "opt/new"))


def test_a_diff_id_mismatch_commits_nothing(containerd) -> None:
    layers = [layer_tar(BASE)]
    wrong = ["sha256:" + "0" * 64]
    descriptors, _ = import_image(containerd, OURS, "example.invalid/wrong:1", layers, unpack=False, diff_ids=wrong)
    applier = apply(containerd, descriptors, wrong)
    assert applier.applied == 0
    assert any("its config says sha256:000000000000" in reason for reason in applier.stopped), applier.stopped
    assert containerd.ctr("snapshots", "ls", namespace=OURS).stdout.splitlines()[1:] == []


def test_chain_ids_follow_the_oci_definition() -> None:
    first, second = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    expected = "sha256:" + hashlib.sha256(f"{first} {second}".encode()).hexdigest()
    assert apply_module.chain_ids([first, second]) == [first, expected]
