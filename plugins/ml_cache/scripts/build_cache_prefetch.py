"""Fetch the image set's blobs from the registries straight into containerd's content store.

Why: `ctr images pull` (containerd 1.6) fetches each blob over one connection and unpacks only after
every blob of the image is in. Here all blobs of all images are fetched at once, a large blob in
HTTP Range parts over several connections, and streamed in order into `ctr content ingest`, which
refuses a wrong size or digest. An image is announced as soon as its blobs are in, so build_cache.sh
starts its `ctr images pull` while the others still fetch. With UNPACK > 0 (and containerd's ROOT) the
layers are applied too, UNPACK at once, each as soon as its blob is in (build_cache_apply.py: pigz and
tar into the overlayfs snapshots containerd would make, committed in chain order), and an image is
announced once its chain is applied: its `ctr images pull` finds every snapshot and only records it.
Between ingest and pull nothing references the blobs, and containerd's GC runs on its own (at start,
after deletions, every 100 mutations): before a blob is ingested, an anchor image (imported, no layers)
gets a containerd.io/gc.ref.content label naming it, so the blob is referenced from its first moment;
`release` removes the anchor after the pulls (a label put on the blob after its commit would race the GC).
A failure here only costs speed: the image's own `ctr images pull` fetches what is missing.

`prefetch SOCKET NAMESPACE PLATFORM SPEC_LINES WORK_DIR CONNECTIONS UNPACK [ROOT]`: prints `INDEX ok BYTES`
or `INDEX failed REASON` per image (INDEX: its place among the spec's image= lines), in completion order.
Progress lines (build_cache_helpers.progress_line) go to fd $ML_CACHE_PROGRESS_FD when set.
`release SOCKET NAMESPACE [ROOT]`: removes the anchor and the staging directory (after the pulls; before a
build, an interrupted run's), with a synchronous GC that also takes any snapshot no image recorded.
Credentials: WORK_DIR/secret.<host> (user:password) when present; never on argv or in a message.
Stdlib only, Python 3.9, like build_cache_helpers.py.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import http.client
import io
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

try:  # on the builder: the modules beside this file (python3 puts this file's directory first on sys.path)
    from build_cache_apply import Applier, ApplyError, Snapshots
    from build_cache_helpers import platform_matches, progress_line
    from build_cache_helpers import repository as repository_of
except ImportError:  # imported as a package (the Airflow side, the tests)
    from ml_cache.scripts.build_cache_apply import Applier, ApplyError, Snapshots
    from ml_cache.scripts.build_cache_helpers import platform_matches, progress_line
    from ml_cache.scripts.build_cache_helpers import repository as repository_of

TRANSIENT = "ml-cache.invalid/"  # .invalid: a name no registry can serve; removed by `release`
ANCHOR = f"{TRANSIENT}prefetch-anchor:1"
STAGING = "ml-cache-prefetch"  # beside io.containerd.content.v1.content on the volume; removed by `release`
REF_LABEL = "containerd.io/gc.ref.content.ml-cache."  # + the digest's first 16 hex digits
SNAPSHOT_REF_LABEL = "containerd.io/gc.ref.snapshot.overlayfs/ml-cache."  # + a hash of the snapshot's key
CHUNK_BYTES = int(os.environ.get("ML_CACHE_PREFETCH_CHUNK_BYTES", str(16 * 1024**2)))  # S3's sweet spot: 8-16 MiB
ATTEMPTS = 3
# Apply an image's layers ahead of ctr only from this size of its layers: each layer costs a few ctr calls,
# which pay only where containerd's one-layer-at-a-time apply takes seconds.
APPLY_MIN_BYTES = int(os.environ.get("ML_CACHE_APPLY_MIN_BYTES", str(64 * 1024**2)))
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"])
REDIRECTS = (301, 302, 303, 307, 308)
PROGRESS_SECONDS = float(os.environ.get("ML_CACHE_PROGRESS_SECONDS", "5"))  # at most one `fetch` line per period
USER_AGENT = "ml-cache-prefetch/1"  # tells our requests from containerd's in a registry's log


class PrefetchError(Exception):
    """A registry answer or an ingest this path cannot use (the message holds no secret)."""


def registry_base(host: str, endpoints: dict[str, str], plain_http: list[str]) -> str:
    """Where the bytes of `host` come from: its registry_endpoints URL, http for a plain-HTTP host."""
    if host in endpoints:
        return endpoints[host].rstrip("/")
    if host in plain_http:
        return f"http://{host}"
    return "https://registry-1.docker.io" if host == "docker.io" else f"https://{host}"


def split_ref(ref: str) -> tuple[str, str, str]:
    """host/repo[:tag]@digest -> (host, repository, digest); docker.io's one-part names are library/."""
    host, _, repository = repository_of(ref).partition("/")
    digest = ref.partition("@")[2]
    if host == "docker.io" and "/" not in repository:
        repository = f"library/{repository}"
    return host, repository, digest


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="...",scope="..."` -> ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


def chunks(size: int, chunk: int) -> list[tuple[int, int]]:
    """Inclusive byte ranges covering `size` bytes in parts of at most `chunk`."""
    return [(start, min(start + chunk, size) - 1) for start in range(0, size, chunk)] or [(0, -1)]


def connect(scheme: str, netloc: str) -> http.client.HTTPConnection:
    """A connection to netloc, through the environment's proxy (HTTPS_PROXY, NO_PROXY...) as ctr would."""
    kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(netloc.rpartition(":")[0] or netloc):
        return kind(netloc, timeout=60)
    via = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if scheme == "http":  # a plain-HTTP request goes to the proxy with the absolute URL as its target
        return _AbsoluteTarget(via.hostname, via.port or 80, netloc)
    connection = kind(via.hostname, via.port or 80, timeout=60)
    connection.set_tunnel(netloc)
    return connection


class _AbsoluteTarget(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, netloc: str) -> None:
        super().__init__(host, port, timeout=60)
        self.netloc = netloc

    def request(self, method, url, body=None, headers=None, **kwargs):  # type: ignore[override]
        super().request(method, f"http://{self.netloc}{url}", body, {"Host": self.netloc, **(headers or {})},
                        **kwargs)


class Registry:
    """One repository on one registry: auth (anonymous, basic, bearer token) and redirects; a
    connection per thread and host, kept alive."""

    def __init__(self, base: str, repository: str, secret_file: Path) -> None:
        self.base, self.repository = base, repository
        self.user_password = secret_file.read_text(encoding="utf-8") if secret_file.is_file() else None
        self.authorization: str | None = None
        self.lock = threading.Lock()
        self.local = threading.local()

    def _connection(self, scheme: str, netloc: str, fresh: bool = False) -> http.client.HTTPConnection:
        pool = self.local.__dict__.setdefault("pool", {})
        if fresh or (scheme, netloc) not in pool:
            if (scheme, netloc) in pool:
                pool[(scheme, netloc)].close()
            pool[(scheme, netloc)] = connect(scheme, netloc)
        return pool[(scheme, netloc)]

    def _send(self, url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        for fresh in (False, True):  # a kept-alive connection the server closed: once more on a new one
            connection = self._connection(parts.scheme, parts.netloc, fresh)
            try:
                connection.request("GET", target, headers={"User-Agent": USER_AGENT, **headers})
                return connection.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if fresh:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, http.client.HTTPResponse]:
        """GET base/v2/<repository>/<path>: authenticates on a challenge, follows redirects and never
        sends the registry's Authorization to another host (S3, a CDN)."""
        for _ in range(3):  # anonymous, then with the answer to the challenge (a bearer token may expire once)
            url = f"{self.base}/v2/{self.repository}/{path}"
            with self.lock:
                authorization = self.authorization
            own = urllib.parse.urlsplit(url).netloc
            for _ in range(6):
                sent = dict(headers)
                if authorization and urllib.parse.urlsplit(url).netloc == own:
                    sent["Authorization"] = authorization
                response = self._send(url, sent)
                if response.status not in REDIRECTS:
                    break
                response.read()
                url = urllib.parse.urljoin(url, response.getheader("Location", ""))
            else:
                raise PrefetchError(f"too many redirects for {path}")
            if response.status != 401:
                return response.status, response
            response.read()
            self._authenticate(response.getheader("WWW-Authenticate", ""), authorization)
        raise PrefetchError(f"{response.status} Unauthorized for {self.repository}")

    def _authenticate(self, challenge: str, refused: str | None) -> None:
        with self.lock:
            if self.authorization != refused:
                return  # another thread already answered this challenge
            scheme, params = parse_challenge(challenge)
            basic = "Basic " + base64.b64encode(self.user_password.encode()).decode() if self.user_password else None
            if scheme == "basic" and basic and refused != basic:
                self.authorization = basic
            elif scheme == "bearer" and params.get("realm"):
                query = {"service": params.get("service", ""), "scope": f"repository:{self.repository}:pull"}
                url = f"{params['realm']}?{urllib.parse.urlencode(query)}"
                parts = urllib.parse.urlsplit(url)
                response = self._send(url, {"Authorization": basic} if basic else {})
                body = response.read()
                if response.status != 200:
                    raise PrefetchError(f"token service {parts.netloc} answered {response.status}")
                answer = json.loads(body)
                self.authorization = "Bearer " + (answer.get("token") or answer.get("access_token") or "")
            else:
                raise PrefetchError(f"401 Unauthorized for {self.repository} ({scheme or 'no'} challenge)")


class Blob:
    """One blob in flight: parts arrive in any order and are written in order into `ctr content ingest`.
    Each part holds one of the fetch's memory slots until it is written or dropped."""

    def __init__(self, store: Store, registry: Registry, digest: str, size: int, slots: threading.Semaphore) -> None:
        self.store, self.registry, self.digest, self.size, self.slots = store, registry, digest, size, slots
        self.parts = chunks(size, CHUNK_BYTES)
        self.lock = threading.Lock()
        self.pending: dict[int, bytes] = {}
        self.next_part = 0
        self.writing = False
        self.process: subprocess.Popen[bytes] | None = None
        self.staged: BinaryIO | None = None
        self.staged_path = Path()
        self.hasher = hashlib.sha256()
        self.done = threading.Event()
        self.error: str | None = None
        self.waiters: list[Image] = []

    def fetch(self, index: int) -> bytes:
        """Part `index` (the whole blob when it has one part), retried on a new connection."""
        start, end = self.parts[index]
        headers = {} if len(self.parts) == 1 else {"Range": f"bytes={start}-{end}"}
        problem = ""
        for attempt in range(ATTEMPTS):
            try:
                status, response = self.registry.get(f"blobs/{self.digest}", headers)
                data = response.read()
            except (OSError, http.client.HTTPException) as error:
                problem = f"blob {self.digest[:19]}: {type(error).__name__}: {error}"
                self.registry.local.__dict__.pop("pool", None)
            else:
                if status == 206 or (status == 200 and not headers):
                    if len(data) == end - start + 1:
                        return data
                    raise PrefetchError(f"blob {self.digest[:19]} part {index}: {len(data)} bytes, "
                                        f"expected {end - start + 1}")
                problem = f"blob {self.digest[:19]} answered {status}" + (" to a Range request" if headers else "")
                if status not in (429, 500, 502, 503, 504):
                    raise PrefetchError(problem)
            time.sleep(0.5 * 2**attempt)
        raise PrefetchError(problem)

    def put(self, index: int, data: bytes) -> None:
        """Hand over part `index`: the first thread to find the next part due writes all parts due."""
        with self.lock:
            if self.error:
                self.slots.release()
                return
            self.pending[index] = data
            if self.writing:
                return
            self.writing = True
        while True:
            with self.lock:
                data = self.pending.pop(self.next_part, None) if not self.error else None
                if data is None:
                    self.writing = False
                    return
            try:
                self._write(data)
            except OSError as error:  # ctr stopped reading: its exit status and last words say why
                self.slots.release()
                with self.lock:
                    self.writing = False
                self.fail(self._refusal() or f"ctr content ingest of {self.digest[:19]}: {error}")
                return
            self.slots.release()
            with self.lock:
                self.next_part += 1
                last = self.next_part == len(self.parts)
            if last:
                with self.lock:
                    self.writing = False
                self._commit()
                return

    def _write(self, data: bytes) -> None:
        if self.store.staging is not None:
            if self.staged is None:
                self.staged_path = self.store.staging / f"{self.digest.partition(':')[2]}.{os.getpid()}"
                self.staged = open(self.staged_path, "wb")  # noqa: SIM115 - closed by _commit or fail
            self.staged.write(data)
            self.hasher.update(data)
            return
        if self.process is None:
            self.process = self.store.ingest(self.digest, self.size)
        assert self.process.stdin is not None
        self.process.stdin.write(data)

    def _commit(self) -> None:
        if self.store.staging is not None:
            if self.staged is None:  # an empty blob
                self._write(b"")
            assert self.staged is not None
            self.staged.close()
            actual = "sha256:" + self.hasher.hexdigest()
            if actual != self.digest or self.staged_path.stat().st_size != self.size:
                self.fail(f"blob {self.digest[:19]}: the registry sent other bytes (got {actual[:19]}, "
                          f"{self.staged_path.stat().st_size} bytes)")
                return
            refusal = self.store.adopt(self.digest, self.size, self.staged_path)
            if refusal:
                self.fail(refusal)
                return
            self._finish(None)
            return
        if self.process is None:
            self.process = self.store.ingest(self.digest, self.size)
        assert self.process.stdin is not None and self.process.stderr is not None
        with contextlib.suppress(OSError):  # ctr gone already: its exit status says why
            self.process.stdin.close()
        refusal = self._refusal()
        if refusal:
            self.fail(refusal)
            return
        self._finish(None)

    def _refusal(self) -> str | None:
        """Wait for the ingest; why it failed, or None when it committed."""
        assert self.process is not None and self.process.stderr is not None
        try:
            status = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            return None if self.process.poll() == 0 else f"ctr content ingest of {self.digest[:19]} hangs"
        if status == 0:
            return None
        message = self.process.stderr.read().decode(errors="replace").strip().splitlines() or ["?"]
        return f"ctr content ingest refused {self.digest[:19]}: {message[-1][-200:]}"

    def fail(self, error: str) -> None:
        """Drop the blob: its parts in memory free their slots, its ingest is stopped (the ref stays
        resumable; a later ingest of it starts over), its images are told."""
        with self.lock:
            if self.error or self.done.is_set():
                return
            self.error = error
            dropped = len(self.pending)
            self.pending.clear()
        for _ in range(dropped):
            self.slots.release()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.staged is not None:
            self.staged.close()
            with contextlib.suppress(OSError):
                self.staged_path.unlink()
        self._finish(error)

    def _finish(self, error: str | None) -> None:
        with self.lock:
            self.error = error
            self.done.set()
            waiters = list(self.waiters)
        for image in waiters:
            image.blob_done(self, error)


class Store:
    """containerd's content store, through ctr (the only client the builder has).

    With containerd's root (ROOT: the data volume), a blob is not streamed through ctr and gRPC (about
    150 MB/s per stream here, a core's worth of work on both ends): it is written beside the store,
    checked (sha256, size), renamed into the store's blobs/sha256 and then registered with `ctr content
    ingest` reading that very file: containerd (content_sharing_policy "shared", its default) finds the
    blob present and only records it in the namespace, and ctr, told the write is complete, seeks past
    it. Should containerd not take it so (another policy, a GC in between), ctr copies it from the file."""

    def __init__(self, socket: str, namespace: str, root: str = "") -> None:
        self.ctr = ["ctr", "-a", socket, "-n", namespace]
        self.socket, self.namespace, self.root = socket, namespace, root
        self.staging: Path | None = None
        self.blobs = Path(root, "io.containerd.content.v1.content", "blobs", "sha256")
        if root and self.blobs.parent.parent.is_dir():  # a fresh store has no blobs/sha256 yet: containerd
            with contextlib.suppress(OSError):         # makes it (0755) at its first commit, as here
                self.blobs.mkdir(mode=0o755, parents=True, exist_ok=True)
                Path(root, STAGING).mkdir(mode=0o700, exist_ok=True)
                self.staging = Path(root, STAGING)

    def adopt(self, digest: str, size: int, staged: Path) -> str | None:
        """Move a checked blob into the store and register it; why not, or None."""
        try:
            staged.chmod(0o444)  # as containerd leaves its blobs
            with open(staged, "rb") as reader:
                os.replace(staged, self.blobs / digest.partition(":")[2])
                proc = subprocess.run([*self.ctr, "content", "ingest", "--expected-size", str(size),
                                       "--expected-digest", digest, f"ml-cache-prefetch-{digest}"],
                                      stdin=reader, capture_output=True, check=False)
        except OSError as error:
            return f"cannot move {digest[:19]} into the content store: {error}"
        if proc.returncode != 0:
            message = proc.stderr.decode(errors="replace").strip()[-200:]
            return f"ctr content ingest refused {digest[:19]}: {message}"
        return None

    def present(self) -> set[str]:
        proc = subprocess.run([*self.ctr, "content", "ls", "-q"], capture_output=True, text=True, check=False)
        return set(proc.stdout.split()) if proc.returncode == 0 else set()

    def ingest(self, digest: str, size: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*self.ctr, "content", "ingest", "--expected-size", str(size), "--expected-digest",
                                 digest, f"ml-cache-prefetch-{digest}"],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _run(self, *args: str, data: bytes | None = None) -> None:
        proc = subprocess.run([*self.ctr, *args], input=data, capture_output=True, check=False)
        if proc.returncode != 0:
            message = proc.stderr.decode(errors="replace").strip()[-200:]
            raise PrefetchError(f"ctr {args[0]} {args[1]} failed: {message}")

    def create_anchor(self, platform: str) -> None:
        """Import the anchor: an image without layers, only ever a holder of GC references."""
        os_name, architecture = platform.split("/")[:2]
        config = json.dumps({"architecture": architecture, "os": os_name,
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
                       "digest": "sha256:" + hashlib.sha256(config).hexdigest()}
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": config_desc, "layers": []}).encode()
        manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": len(manifest),
                         "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(),
                         "annotations": {"io.containerd.image.name": ANCHOR}}
        index = json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}).encode()
        self._run("images", "import", "--no-unpack", "--all-platforms", "-",
                  data=layout(index, {config_desc["digest"]: config, manifest_desc["digest"]: manifest}))

    def get(self, digest: str) -> bytes:
        proc = subprocess.run([*self.ctr, "content", "get", digest], capture_output=True, check=False)
        if proc.returncode != 0:
            raise PrefetchError(f"ctr content get {digest[:19]} failed")
        return proc.stdout

    def protect(self, digests: list[str]) -> None:
        """Reference the digests from the anchor: the GC keeps each blob from the moment it is committed."""
        if digests:
            self._run("images", "label", ANCHOR, *(f"{REF_LABEL}{d.partition(':')[2][:16]}={d}" for d in digests))

    def protect_snapshots(self, keys: list[str]) -> None:
        """Reference the snapshots (active keys or committed names) from the anchor, before they exist."""
        labels = [f"{SNAPSHOT_REF_LABEL}{hashlib.sha256(key.encode()).hexdigest()[:16]}={key}" for key in keys]
        if labels:
            self._run("images", "label", ANCHOR, *labels)

    def release(self, root: str = "") -> None:
        """Remove the anchor and the staging directory, and collect garbage before returning (--sync): what
        only the anchor referenced (blobs, snapshots of images never recorded) is gone before the build
        measures the volume."""
        if root:
            shutil.rmtree(Path(root, STAGING), ignore_errors=True)
        listed = subprocess.run([*self.ctr, "images", "ls", "-q"], capture_output=True, text=True, check=False)
        names = [name for name in listed.stdout.split() if name.startswith(TRANSIENT)]
        if listed.returncode != 0:
            raise PrefetchError(f"ctr images ls failed: {listed.stderr.strip()[-200:]}")
        if names:
            self._run("images", "rm", "--sync", *names)


def layout(index: bytes, blobs: dict[str, bytes]) -> bytes:
    """An OCI image layout as a tar archive (what `ctr images import` reads)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        members = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
        for name, data in [*members, *((f"blobs/sha256/{d.partition(':')[2]}", b) for d, b in blobs.items())]:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return archive.getvalue()


class Image:
    """One image of the set: its blobs, its chain once its config is in, and the line printed when all is
    in and applied (or a blob failed)."""

    def __init__(self, prefetch: Prefetch, index: int, ref: str) -> None:
        self.prefetch, self.index, self.ref = prefetch, index, ref
        self.waiting: set[str] = set()
        self.bytes = 0
        self.lock = threading.Lock()
        self.planned = False
        self.reported = False
        self.reported_event = threading.Event()
        self.manifest: dict = {}
        self.registered = False
        self.chain: list[str] | None = None  # its chain IDs once registered ([]: containerd applies it)

    def blob_done(self, blob: Blob, error: str | None) -> None:
        with self.lock:
            self.waiting.discard(blob.digest)
        if error:
            self.report(f"failed {error}")
            return
        if self.prefetch.applier is not None:
            self.prefetch.applier.blob_in(blob.digest)
        self.prefetch.progress(self)

    def report(self, line: str) -> None:
        with self.lock:
            if self.reported:
                return
            self.reported = True
        self.prefetch.announce(f"{self.index} {line}")
        self.prefetch.tell("image", image=self.ref, ok=line.startswith("ok"), bytes=self.bytes)
        self.reported_event.set()


class Prefetch:
    """The whole image set: plans each image (manifests), then fetches every blob part with a pool of
    connections, earlier images first, at most connections + 2 parts held in memory."""

    def __init__(self, store: Store, platform: str, connections: int, out: object = sys.stdout, unpack: int = 0,
                 progress: object = None) -> None:
        self.store, self.want, self.connections, self.out = store, platform.split("/"), connections, out
        self.progress_out = progress  # where progress lines go (build_cache_helpers.progress_line), if anywhere
        self.unpack = unpack if store.staging is not None else 0  # the applier works on the volume's files
        self.applier: Applier | None = None
        self.images: list[Image] = []
        self.present = store.present()
        self.blobs: dict[str, Blob] = {}
        self.documents: dict[str, bytes] = {}
        self.document_locks: dict[str, threading.Lock] = {}
        self.lock = threading.Lock()
        self.jobs: queue.PriorityQueue[tuple[int, int, int, int, Blob | None]] = queue.PriorityQueue()
        self.slots = threading.Semaphore(connections + 2)
        self.sequence = 0
        self.fetched = 0

    def announce(self, line: str) -> None:
        with self.lock:
            print(line, file=self.out, flush=True)

    def tell(self, phase: str, **fields: object) -> None:
        if self.progress_out is not None:
            with self.lock:
                print(progress_line(phase, **fields), file=self.progress_out, flush=True)

    def ticker(self, finished: threading.Event) -> None:
        """Bytes fetched of the set's (as planned so far) every PROGRESS_SECONDS while they change."""
        told = -1
        while not finished.wait(PROGRESS_SECONDS):
            with self.lock:
                done, total = self.fetched, sum(blob.size for blob in self.blobs.values())
            waiting = [image for image in self.images if not image.reported]
            if done != told and waiting:
                told = done
                self.tell("fetch", image=waiting[0].ref, done=done, total=total,
                          images_done=len(self.images) - len(waiting), images=len(self.images),
                          layers_applied=self.applier.applied if self.applier else 0)

    def document(self, registry: Registry, digest: str) -> bytes:
        """A manifest or index by digest, checked against it (fetched once per digest)."""
        with self.lock:
            lock = self.document_locks.setdefault(digest, threading.Lock())
        with lock:
            if digest not in self.documents:
                self.documents[digest] = self._document(registry, digest)
        return self.documents[digest]

    def _document(self, registry: Registry, digest: str) -> bytes:
        last = ""
        for attempt in range(ATTEMPTS):
            status, response = registry.get(f"manifests/{digest}", {"Accept": ACCEPT})
            body = response.read()
            if status == 200:
                break
            last = f"manifest {digest[:19]} answered {status}"
            if status not in (429, 500, 502, 503, 504):
                raise PrefetchError(last)
            time.sleep(0.5 * 2**attempt)
        else:
            raise PrefetchError(last)
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise PrefetchError(f"manifest {digest[:19]}: the registry sent other bytes (digest mismatch)")
        return body

    def store_document(self, digest: str) -> None:
        """Ingest a fetched document (once per digest; protected by the anchor already)."""
        with self.lock:
            lock = self.document_locks[digest]
        with lock:
            if digest in self.present:
                return
            body = self.documents[digest]
            process = self.store.ingest(digest, len(body))
            _, error = process.communicate(body)
            if process.returncode != 0:
                message = error.decode(errors="replace").strip()[-200:]
                raise PrefetchError(f"ctr content ingest refused {digest[:19]}: {message}")
            with self.lock:
                self.present.add(digest)

    def plan(self, image: Image, registry: Registry, digest: str) -> list[tuple[str, int]]:
        """Fetch the image's documents, reference everything it needs from the anchor, store the
        documents; returns (digest, size) of its config and layers for the platform."""
        documents = [digest]
        document = json.loads(self.document(registry, digest))
        if "manifests" in document:
            chosen = [m for m in document["manifests"] if platform_matches(m.get("platform") or {}, self.want)]
            if not chosen:
                raise PrefetchError(f"no manifest for platform {'/'.join(self.want)}")
            documents.append(chosen[0]["digest"])
            document = json.loads(self.document(registry, chosen[0]["digest"]))
        blobs = [(d["digest"], int(d["size"])) for d in [document["config"], *document.get("layers", [])]]
        with image.lock:
            image.manifest = document
        self.store.protect([d for d in [*documents, *(b for b, _ in blobs)] if d not in self.present])
        for each in documents:
            self.store_document(each)
        return blobs

    def add(self, image: Image, registry: Registry, blobs: list[tuple[str, int]]) -> None:
        """Queue the image's blobs (one Blob per digest across the set; present ones are skipped)."""
        with image.lock:
            image.bytes = sum(size for _, size in blobs)
        mine = []
        for order, (digest, size) in enumerate(blobs):
            if digest in self.present:
                continue
            with self.lock:
                blob = self.blobs.get(digest)
                new = blob is None
                if new:
                    blob = self.blobs[digest] = Blob(self.store, registry, digest, size, self.slots)
                    for part in range(len(blob.parts)):
                        self.sequence += 1
                        self.jobs.put((image.index, order, part, self.sequence, blob))
            mine.append(blob)
        with image.lock:
            image.waiting = {blob.digest for blob in mine}
            image.planned = True
        for blob in mine:
            with blob.lock:
                blob.waiters.append(image)
                finished = blob.done.is_set()
            if finished:
                image.blob_done(blob, blob.error)
        if not mine:
            self.progress(image)

    def progress(self, image: Image) -> None:
        """After a blob of `image` is in or a layer settled: register its chain with the applier once its
        config is in; announce it once every blob is in and its chain is applied."""
        with image.lock:
            if image.reported or not image.planned:
                return
            config = image.manifest["config"]["digest"]
            register = self.applier is not None and not image.registered and config not in image.waiting
            image.registered = image.registered or register
        if register:
            chain = self.register(image)
            with image.lock:
                image.chain = chain
        with image.lock:
            chain = image.chain
            finished = not image.waiting and (self.applier is None or chain is not None)
        if finished and chain and self.applier is not None and not self.applier.settled(chain):
            finished = False
        if finished:
            image.report(f"ok {image.bytes}")

    def register(self, image: Image) -> list[str]:
        """Hand the image's layers to the applier; [] when containerd is to apply them."""
        layers = image.manifest.get("layers", [])
        if self.applier is None or sum(int(layer["size"]) for layer in layers) < APPLY_MIN_BYTES:
            return []
        try:
            config = json.loads(self.store.get(image.manifest["config"]["digest"]))
            return self.applier.add(layers, config["rootfs"]["diff_ids"])
        except (ApplyError, PrefetchError, ValueError, KeyError, TypeError) as error:
            print(f"apply of {image.ref} left to containerd: {error}", file=sys.stderr)
            return []

    def settled(self) -> None:
        """A layer settled: some image may be complete now."""
        for image in self.images:
            self.progress(image)

    def worker(self) -> None:
        """Fetch parts, lowest (image, blob, part) first, each holding a memory slot until written."""
        while True:
            self.slots.acquire()
            *_, part, _, blob = self.jobs.get()
            if blob is None:
                self.slots.release()
                return
            if blob.error:
                self.slots.release()
                continue
            try:
                data = blob.fetch(part)
            except Exception as error:  # any failure only sends the image to the plain pull
                self.slots.release()
                blob.fail(str(error) or type(error).__name__)
                continue
            with self.lock:
                self.fetched += len(data)
            try:
                blob.put(part, data)
            except Exception as error:  # a worker must not die: its image would never be announced
                blob.fail(f"{type(error).__name__}: {error}")

    def run(self, images: list[tuple[Image, Registry, str]]) -> None:
        """Plan every image (a few at once) while the connections fetch; returns when all are reported."""
        self.images = [image for image, _, _ in images]
        try:
            self.store.create_anchor("/".join(self.want))
            if self.unpack > 0 and self.store.staging is not None:
                self.applier = Applier(Snapshots(self.store.socket, self.store.namespace, self.store.root),
                                       self.store.blobs, self.store.staging / "apply", self.unpack,
                                       self.store.protect_snapshots, self.settled)
        except (PrefetchError, ApplyError, OSError) as error:
            for image, _, _ in images:
                image.report(f"failed {error}")
            return
        workers = [threading.Thread(target=self.worker, daemon=True) for _ in range(self.connections)]
        for thread in workers:
            thread.start()

        def plan(entry: tuple[Image, Registry, str]) -> None:
            image, registry, digest = entry
            try:
                self.add(image, registry, self.plan(image, registry, digest))
            except Exception as error:  # any failure only sends the image to the plain pull
                named = error if isinstance(error, PrefetchError) else f"{type(error).__name__}: {error}"
                image.report(f"failed {named}")

        finished = threading.Event()
        threading.Thread(target=self.ticker, args=(finished,), daemon=True).start()
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(8, len(images)))) as planners:
            list(planners.map(plan, images))
        for image, _, _ in images:
            image.reported_event.wait()
        finished.set()
        for _ in workers:
            self.jobs.put((sys.maxsize, 0, 0, 0, None))
        for thread in workers:
            thread.join()
        if self.applier is not None:
            self.applier.close()
            for reason in self.applier.stopped:
                print(f"apply left to containerd: {reason}", file=sys.stderr)


def spec_images(spec_lines: str) -> tuple[list[str], dict[str, str]]:
    """The image refs (in order) and the endpoints of build_cache_helpers.py parse-spec's output."""
    refs, endpoints = [], {}
    for line in Path(spec_lines).read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key == "image":
            refs.append(value)
        elif key == "endpoint":
            host, _, url = value.partition(" ")
            endpoints[host] = url
    return refs, endpoints


def prefetch(socket: str, namespace: str, platform: str, spec_lines: str, work_dir: str, connections: int,
             out: object = sys.stdout, unpack: int = 0, root: str = "", progress: object = None) -> dict:
    """Fetch every image of the spec into the content store; one line per image on `out`."""
    started = time.monotonic()
    refs, endpoints = spec_images(spec_lines)
    plain_http = os.environ.get("ML_CACHE_PLAIN_HTTP_REGISTRIES", "").split()
    job = Prefetch(Store(socket, namespace, root), platform, connections, out, unpack, progress)
    registries: dict[tuple[str, str], Registry] = {}
    entries = []
    for index, ref in enumerate(refs):
        host, repository, digest = split_ref(ref)
        key = (host, repository)
        if key not in registries:
            registries[key] = Registry(registry_base(host, endpoints, plain_http), repository,
                                       Path(work_dir, f"secret.{host}"))
        entries.append((Image(job, index, ref), registries[key], digest))
    job.run(entries)
    seconds = time.monotonic() - started
    return {"blobs": len(job.blobs), "bytes": job.fetched, "seconds": round(seconds, 2),
            "connections": connections, "layers_applied": job.applier.applied if job.applier else 0}


def main(argv: list[str]) -> int:
    if len(argv) in (3, 4) and argv[0] == "release":
        try:
            Store(argv[1], argv[2]).release(argv[3] if len(argv) == 4 else "")
        except PrefetchError as error:
            print(error, file=sys.stderr)
            return 1
        return 0
    if len(argv) not in (8, 9) or argv[0] != "prefetch" or not argv[6].isdigit() or int(argv[6]) < 1 \
            or not argv[7].isdigit():
        print("usage: build_cache_prefetch.py prefetch SOCKET NAMESPACE PLATFORM SPEC_LINES WORK_DIR CONNECTIONS UNPACK"
              " [CONTAINERD_ROOT] | release SOCKET NAMESPACE [CONTAINERD_ROOT]", file=sys.stderr)
        return 64
    fd = os.environ.get("ML_CACHE_PROGRESS_FD", "")  # build_cache.sh's stderr (ours goes to a log file)
    progress = os.fdopen(int(fd), "w", buffering=1) if fd.isdigit() else None
    summary = prefetch(*argv[1:6], int(argv[6]), sys.stdout, int(argv[7]), argv[8] if len(argv) == 9 else "",
                       progress)
    rate = summary["bytes"] / 1e6 / max(summary["seconds"], 0.01)
    print(f"prefetch: {summary['blobs']} blob(s), {summary['bytes'] / 1e6:.1f} MB in {summary['seconds']} s "
          f"({rate:.0f} MB/s, {summary['connections']} connections), {summary['layers_applied']} layer(s) "
          f"applied ahead of ctr", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
