"""Apply image layers into containerd's overlayfs snapshots in parallel, ahead of `ctr images pull`.

Why: containerd (1.6, and 2.x by default) applies an image's layers one after another, each through Go's
tar reader and a digest of the uncompressed stream: about one core, ~120 MB/s of unpacked data here,
whatever the machine. Here every layer whose blob is in the content store is decompressed (pigz) and
untarred (GNU tar) into its own directory on the volume, up to WORKERS at once, its diff ID checked as
containerd checks it; then, in chain order, each directory becomes the committed snapshot containerd
would have made: `ctr snapshots prepare` (an active snapshot with an empty upper directory), the
directory renamed in as that upper directory, `ctr snapshots commit` under the layer's chain ID. An
image's `ctr images pull` then finds every chain ID and only records the image (containerd skips a
layer whose snapshot exists).

The tree must equal containerd's own overlayfs apply (diff/apply with archive.OverlayConvertWhiteout,
entries resolving to the root ignored): a `.wh.NAME` entry becomes a 0/0 character device NAME with the
whiteout's owner, `.wh..wh..opq` sets trusted.overlay.opaque=y on its directory, the root keeps the
snapshotter's attributes. tests/…/test_build_cache_apply.py compares both trees entry by entry. (One
difference by construction: containerd also applies a hard link entry's mode and owner to the linked
file, tar does not; image writers give a link its file's own, Go's archive/tar from the inode.)
A layer this cannot apply exactly (another media type, a directory the tar does not list, which
containerd would copy from the parent layers, any tar error, a diff ID mismatch) ends our part of its
chain: containerd applies it and everything above it, with its own checks. Only speed is ever lost.

GC: an active or committed snapshot nothing references is collected by containerd's GC, which runs on
its own; before a snapshot is prepared, the prefetch's anchor image gets containerd.io/gc.ref.snapshot
labels naming its key and its chain ID (`protect`), until the pulls have recorded the images.
`extract BLOB MEDIA_TYPE DIFF_ID TARGET`: one layer's extraction, in a process of its own (the Applier's
workers run it so: a copy loop sharing the prefetch's interpreter lock with its fetch threads waited for
it at every step). Stdlib only, Python 3.9, like build_cache_helpers.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import queue
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

SNAPSHOTTER = "overlayfs"
GZIP_TYPES = {"application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip"}
TAR_TYPES = {"application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar"}
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
PIPE_BYTES = 1024 * 1024  # Linux's default pipe-max-size
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ from Python 3.10 (the builder's is 3.9)
# A directory whose mtime is not older than this before the untar started was made by tar itself (an
# entry's parent the archive does not list): the filesystem's clock is coarser than time.time_ns().
IMPLICIT_MARGIN_NS = 1_000_000_000
# --delay-directory-restore: a directory's times and mode are set after the whole archive (else when tar leaves
# it, and an archive that lists a directory's entries apart would leave it with the time of extraction).
TAR = ["tar", "-x", "-f", "-", "--numeric-owner", "--same-owner", "--same-permissions", "--delay-directory-restore",
       "--xattrs", "--xattrs-include=*", "--warning=no-timestamp", "--warning=no-unknown-keyword"]


class ApplyError(Exception):
    """Why a layer is left to containerd."""


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The OCI chain IDs: ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n)), ChainID(1) = DiffID(1)."""
    chain: list[str] = []
    for diff_id in diff_ids:
        link = f"{chain[-1]} {diff_id}" if chain else ""
        chain.append("sha256:" + hashlib.sha256(link.encode()).hexdigest() if chain else diff_id)
    return chain


def extract(blob: Path, media_type: str, diff_id: str, target: Path) -> None:
    """Untar the layer `blob` into the new directory `target` exactly as containerd's overlayfs apply
    would leave its upper directory, checking the uncompressed stream against `diff_id`."""
    if media_type in GZIP_TYPES:
        decompress = [shutil.which("pigz") or "gzip", "-d", "-c"]
    elif media_type in TAR_TYPES:
        decompress = ["cat"]
    else:
        raise ApplyError(f"media type {media_type or '?'} is containerd's to apply")
    target.mkdir(mode=0o755)
    started_ns = time.time_ns()
    digest = hashlib.sha256()
    with open(blob, "rb") as source, tempfile.TemporaryFile() as errors:
        reader = subprocess.Popen(decompress, stdin=source, stdout=subprocess.PIPE, stderr=errors, bufsize=0)
        untar = subprocess.Popen(TAR, cwd=target, stdin=subprocess.PIPE, stderr=errors, bufsize=0)
        assert reader.stdout is not None and untar.stdin is not None
        for pipe in (reader.stdout, untar.stdin):  # fewer, larger transfers: a third less CPU here
            with contextlib.suppress(OSError):
                fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
        buffer = memoryview(bytearray(PIPE_BYTES))
        open_pipe = True
        while True:
            count = reader.stdout.readinto(buffer)
            if not count:
                break
            chunk = buffer[:count]
            digest.update(chunk)
            while open_pipe and chunk:
                try:
                    chunk = chunk[untar.stdin.write(chunk):]
                except BrokenPipeError:  # tar stops at the end-of-archive blocks; the digest reads on
                    open_pipe = False
        with contextlib.suppress(BrokenPipeError):
            untar.stdin.close()
        if reader.wait() != 0 or untar.wait() != 0:
            errors.seek(0)
            said = errors.read().decode(errors="replace").strip().splitlines()
            raise ApplyError(f"{' '.join(decompress[:1])}|tar: {said[-1][-200:] if said else 'failed'}")
    actual = "sha256:" + digest.hexdigest()
    if actual != diff_id:
        raise ApplyError(f"uncompressed layer is {actual[:19]}, its config says {diff_id[:19]}")
    convert(target, started_ns - IMPLICIT_MARGIN_NS)


def extract_apart(blob: Path, media_type: str, diff_id: str, target: Path) -> None:
    """extract() in a child process (this file's `extract` command)."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "extract", str(blob), media_type, diff_id,
                           str(target)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        said = proc.stderr.strip().splitlines()
        raise ApplyError(said[-1][-300:] if said else f"extract exited {proc.returncode}")


def convert(root: Path, implicit_after_ns: int) -> None:
    """Turn tar's tree into an overlayfs upper directory: whiteouts to overlay's form, the root as the
    snapshotter makes it; refuse a directory tar had to make up."""
    whiteouts: list[Path] = []
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.name.startswith(WHITEOUT):
                    whiteouts.append(Path(entry.path))
                if entry.is_dir(follow_symlinks=False):
                    if entry.stat(follow_symlinks=False).st_mtime_ns >= implicit_after_ns:
                        raise ApplyError(f"the layer does not list directory {Path(entry.path).relative_to(root)}")
                    pending.append(Path(entry.path))
    for path in sorted(whiteouts):
        parent = os.lstat(path.parent)
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode):
            raise ApplyError(f"whiteout {path.relative_to(root)} is a directory")
        if path.name == OPAQUE:
            os.setxattr(path.parent, "trusted.overlay.opaque", b"y", follow_symlinks=False)
            path.unlink()
        else:
            original = path.with_name(path.name[len(WHITEOUT):])
            if os.path.lexists(original):
                raise ApplyError(f"{original.relative_to(root)} is both in the layer and whited out")
            path.unlink()
            os.mknod(original, stat.S_IFCHR, os.makedev(0, 0))
            os.chown(original, info.st_uid, info.st_gid, follow_symlinks=False)
        os.utime(path.parent, ns=(parent.st_atime_ns, parent.st_mtime_ns), follow_symlinks=False)
    for name in os.listxattr(root, follow_symlinks=False):  # containerd ignores entries resolving to the root
        os.removexattr(root, name, follow_symlinks=False)
    os.chown(root, 0, 0)
    os.chmod(root, 0o755)  # noqa: S103 - what containerd's snapshotter gives every upper directory
    os.utime(root)


class Snapshots:
    """containerd's overlayfs snapshots, through ctr."""

    def __init__(self, socket: str, namespace: str, root: str) -> None:
        self.ctr = ["ctr", "-a", socket, "-n", namespace, "snapshots", "--snapshotter", SNAPSHOTTER]
        self.base = Path(root, f"io.containerd.snapshotter.v1.{SNAPSHOTTER}", "snapshots")

    def _run(self, *args: str) -> str:
        proc = subprocess.run([*self.ctr, *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ApplyError(f"ctr snapshots {args[0]}: {proc.stderr.strip()[-200:]}")
        return proc.stdout

    def committed(self) -> set[str]:
        rows = [line.split() for line in self._run("ls").splitlines()[1:]]
        return {row[0] for row in rows if row and row[-1] == "Committed"}

    def prepare(self, key: str, parent: str) -> Path:
        """Prepare `key` on `parent`; its (empty) upper directory."""
        mounts = json.loads(self._run("prepare", "--mounts", key, *([parent] if parent else [])))
        # ctr 1.x prints Go's field names (Type, Source, Options), 2.x lower case
        mount = {k.lower(): v for k, v in mounts[0].items()} if len(mounts) == 1 else {}
        options = mount.get("options") or []
        upper = next((o.partition("=")[2] for o in options if o.startswith("upperdir=")), "")
        upper = upper or (mount.get("source", "") if mount.get("type") == "bind" else "")
        path = Path(upper)
        if path.name != "fs" or path.parent.parent != self.base:
            self.remove(key)
            raise ApplyError(f"unexpected mounts for an {SNAPSHOTTER} snapshot: {mounts}")
        return path

    def commit(self, name: str, key: str) -> bool:
        """Commit `key` as `name`; False (and `key` removed) when `name` exists already."""
        proc = subprocess.run([*self.ctr, "commit", name, key], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return True
        self.remove(key)
        if "already exists" in proc.stderr:
            return False
        raise ApplyError(f"ctr snapshots commit: {proc.stderr.strip()[-200:]}")

    def remove(self, key: str) -> None:
        subprocess.run([*self.ctr, "rm", key], capture_output=True, check=False)


class Layer:
    """One chain position: its blob, and where it is on the way to a committed snapshot."""

    def __init__(self, chain_id: str, parent: str, depth: int, diff_id: str, descriptor: dict) -> None:
        self.chain_id, self.parent, self.depth, self.diff_id = chain_id, parent, depth, diff_id
        self.blob, self.media_type = descriptor["digest"], descriptor.get("mediaType", "")
        self.size = int(descriptor.get("size", 0))
        self.state = "waiting"  # queued, extracting, extracted, committed (or existing), stopped
        self.reason = ""


class Applier:
    """Extracts layers as their blobs come in (largest first, WORKERS at once) while one more thread
    commits them in chain order (a worker never waits for ctr). `changed` is called after layers settle,
    so the caller can announce finished images."""

    def __init__(self, snapshots: Snapshots, blobs: Path, staging: Path, workers: int,
                 protect: Callable[[list[str]], None], changed: Callable[[], None]) -> None:
        self.snapshots, self.blobs, self.staging = snapshots, blobs, staging
        self.protect, self.changed = protect, changed
        staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.layers: dict[str, Layer] = {}
        self.order: list[str] = []
        self.arrived: set[str] = set()
        self.lock = threading.Lock()
        self.commit_lock = threading.Lock()
        self.jobs: queue.PriorityQueue[tuple[int, int, int, str]] = queue.PriorityQueue()
        self.sequence = 0
        self.existing = snapshots.committed()
        self.applied = 0
        self.stopped: list[str] = []
        self.wake = threading.Event()
        self.closing = False
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(max(1, workers))]
        self.committer = threading.Thread(target=self._commit_loop, daemon=True)
        for thread in [*self.threads, self.committer]:
            thread.start()

    def add(self, layers: list[dict], diff_ids: list[str]) -> list[str]:
        """Register an image's layers (descriptors, in order) with its config's diff IDs; its chain IDs."""
        if len(layers) != len(diff_ids):
            raise ApplyError("config and manifest disagree on the layers")
        chain = chain_ids(diff_ids)
        with self.lock:
            new = [c for c in chain if c not in self.layers and c not in self.existing]
        self.protect([name for c in new for name in (self.key(c), c)])  # one ctr call, before any prepare
        with self.lock:
            for position, descriptor in enumerate(layers):
                if chain[position] in self.layers:
                    continue
                layer = self.layers[chain[position]] = Layer(chain[position], chain[position - 1] if position else "",
                                                              position, diff_ids[position], descriptor)
                self.order.append(layer.chain_id)
                if layer.chain_id in self.existing:
                    layer.state = "committed"
                elif layer.blob in self.arrived:
                    self._queue(layer)
        return chain

    def blob_in(self, digest: str) -> None:
        with self.lock:
            self.arrived.add(digest)
            for layer in self.layers.values():
                if layer.blob == digest and layer.state == "waiting":
                    self._queue(layer)

    def settled(self, chain: list[str]) -> bool:
        with self.lock:
            return all(self.layers[c].state in ("committed", "stopped") for c in chain)

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put((sys.maxsize, 0, 0, ""))
        for thread in self.threads:
            thread.join()
        self.closing = True
        self.wake.set()
        self.committer.join()

    @staticmethod
    def key(chain_id: str) -> str:
        """The active snapshot's key while a layer is moved in (this process's)."""
        return f"ml-cache-apply/{os.getpid()}/{chain_id.partition(':')[2]}"

    def _queue(self, layer: Layer) -> None:
        """Lower layers first (their commits then keep pace with the extraction), larger first among them."""
        layer.state = "queued"
        self.sequence += 1
        self.jobs.put((layer.depth, -layer.size, self.sequence, layer.chain_id))

    def _work(self) -> None:
        while True:
            *_, chain_id = self.jobs.get()
            if not chain_id:
                return
            layer = self.layers[chain_id]
            with self.lock:
                if layer.state != "queued":  # its parent stopped meanwhile
                    continue
                layer.state = "extracting"
            target = self.staging / chain_id.partition(":")[2]
            try:
                shutil.rmtree(target, ignore_errors=True)
                extract_apart(self.blobs / layer.blob.partition(":")[2], layer.media_type, layer.diff_id, target)
                state, reason = "extracted", ""
            except (ApplyError, OSError) as error:
                shutil.rmtree(target, ignore_errors=True)
                state, reason = "stopped", str(error) or type(error).__name__
            with self.lock:
                layer.state, layer.reason = state, reason
                if reason:
                    self.stopped.append(f"layer {layer.blob[:19]}: {reason}")
            self.wake.set()

    def _commit_loop(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            closing = self.closing
            self._advance()
            if closing:
                return

    def _advance(self) -> None:
        """Commit every extracted layer whose parent is committed, in chain order; stop the layers above
        a stopped one (containerd applies them)."""
        with self.commit_lock:
            progressed = True
            while progressed:
                progressed = False
                for chain_id in list(self.order):
                    layer = self.layers[chain_id]
                    parent = self.layers.get(layer.parent)
                    parent_state = "committed" if not layer.parent or layer.parent in self.existing else \
                        (parent.state if parent else "stopped")
                    if layer.state in ("committed", "stopped", "extracting"):
                        continue
                    if parent_state == "stopped":
                        with self.lock:
                            layer.state, layer.reason = "stopped", "a lower layer is containerd's to apply"
                        shutil.rmtree(self.staging / chain_id.partition(":")[2], ignore_errors=True)
                        progressed = True
                    elif layer.state == "extracted" and parent_state == "committed":
                        self._commit(layer)
                        progressed = True
        self.changed()

    def _commit(self, layer: Layer) -> None:
        key, source = self.key(layer.chain_id), self.staging / layer.chain_id.partition(":")[2]
        try:
            upper = self.snapshots.prepare(key, layer.parent)
            try:
                upper.rmdir()
                source.rename(upper)
            except OSError as error:
                self.snapshots.remove(key)
                raise ApplyError(f"cannot move the layer into snapshot {upper.parent.name}: {error}") from error
            mine = self.snapshots.commit(layer.chain_id, key)
            state, reason = "committed", ""
        except ApplyError as error:
            shutil.rmtree(source, ignore_errors=True)
            state, reason, mine = "stopped", str(error), False
        with self.lock:
            layer.state, layer.reason = state, reason
            self.applied += 1 if mine else 0
            if reason:
                self.stopped.append(f"layer {layer.blob[:19]}: {reason}")


def main(argv: list[str]) -> int:
    if len(argv) != 5 or argv[0] != "extract":
        print("usage: build_cache_apply.py extract BLOB MEDIA_TYPE DIFF_ID TARGET", file=sys.stderr)
        return 64
    try:
        extract(Path(argv[1]), argv[2], argv[3], Path(argv[4]))
    except (ApplyError, OSError) as error:
        print(str(error) or type(error).__name__, file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
