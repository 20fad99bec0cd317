"""Fetch the image set's blobs from the registries straight into containerd's content store.

Why: `ctr images pull` (containerd 1.6) fetches each blob over one connection and unpacks only after
every blob of the image is in. Here all blobs of all images are fetched at once, a large blob in
HTTP Range parts over several connections, and streamed in order into `ctr content ingest`, which
refuses a wrong size or digest. An image is announced as soon as its blobs are in, so build_cache.sh
starts its `ctr images pull` while the others still fetch. With UNPACK > 0 the image is even unpacked
while its own later layers fetch (what containerd's CRI pull does, and ctr 1.6 does not): as soon as its
first k layers are in, a stand-in image of just those layers (its config with the first k diff_ids) is
imported from the content store, which applies them; the snapshots are the ones the real image needs
(same chain IDs), so its `ctr images pull` finds them and only records the image.
Between ingest and pull nothing references the blobs, and containerd's GC runs on its own (at start,
after deletions, every 100 mutations): before a blob is ingested, an anchor image (imported, no layers)
gets a containerd.io/gc.ref.content label naming it, so the blob is referenced from its first moment;
`release` removes the anchor after the pulls (a label put on the blob after its commit would race the GC).
A failure here only costs speed: the image's own `ctr images pull` fetches what is missing.

`prefetch SOCKET NAMESPACE PLATFORM SPEC_LINES WORK_DIR CONNECTIONS UNPACK [ROOT]`: prints `INDEX ok BYTES`
or `INDEX failed REASON` per image (INDEX: its place among the spec's image= lines), in completion order.
`release SOCKET NAMESPACE [ROOT]`: removes the anchor, the stand-ins and the staging directory (after the
pulls; before a build, an interrupted run's), with a synchronous GC.
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

try:  # on the builder: the module beside this file (python3 puts this file's directory first on sys.path)
    from build_cache_helpers import platform_matches
    from build_cache_helpers import repository as repository_of
except ImportError:  # imported as a package (the Airflow side, the tests)
    from ml_cache.scripts.build_cache_helpers import platform_matches
    from ml_cache.scripts.build_cache_helpers import repository as repository_of

TRANSIENT = "ml-cache.invalid/"  # .invalid: a name no registry can serve; removed by `release`
ANCHOR = f"{TRANSIENT}prefetch-anchor:1"
STAGING = "ml-cache-prefetch"  # beside io.containerd.content.v1.content on the volume; removed by `release`
STAND_IN = f"{TRANSIENT}prefetch-unpack:"  # + image index and layer count
REF_LABEL = "containerd.io/gc.ref.content.ml-cache."  # + the digest's first 16 hex digits
CHUNK_BYTES = int(os.environ.get("ML_CACHE_PREFETCH_CHUNK_BYTES", str(16 * 1024**2)))  # S3's sweet spot: 8-16 MiB
ATTEMPTS = 3
# Unpack early only while at least this much of the image is still to fetch: each stand-in costs an
# import (processes, a containerd transaction), which only pays when it overlaps a real wait.
EARLY_MIN_BYTES = 64 * 1024**2
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"])
REDIRECTS = (301, 302, 303, 307, 308)
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
        self.staging: Path | None = None
        self.blobs = Path(root, "io.containerd.content.v1.content", "blobs", "sha256")
        if root and self.blobs.is_dir():
            with contextlib.suppress(OSError):
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

    def unpack_stand_in(self, name: str, manifest: dict, config: bytes, count: int, platform: str) -> None:
        """Import (and so unpack) an image of the first `count` layers of `manifest`: its blobs are in
        the store already, only the stand-in's config and manifest travel in the archive."""
        document = json.loads(config)
        diff_ids = document["rootfs"]["diff_ids"]
        if len(diff_ids) != len(manifest["layers"]):
            raise PrefetchError("config and manifest disagree on the layers")
        document["rootfs"] = {**document["rootfs"], "diff_ids": diff_ids[:count]}
        config = json.dumps(document).encode()
        config_desc = {**manifest["config"], "size": len(config),
                       "digest": "sha256:" + hashlib.sha256(config).hexdigest()}
        stand_in = json.dumps({**manifest, "config": config_desc, "layers": manifest["layers"][:count]}).encode()
        stand_in_desc = {"mediaType": manifest.get("mediaType", "application/vnd.oci.image.manifest.v1+json"),
                         "size": len(stand_in), "digest": "sha256:" + hashlib.sha256(stand_in).hexdigest(),
                         "annotations": {"io.containerd.image.name": name}}
        index = json.dumps({"schemaVersion": 2, "manifests": [stand_in_desc]}).encode()
        self._run("images", "import", "--platform", platform, "-",
                  data=layout(index, {config_desc["digest"]: config, stand_in_desc["digest"]: stand_in}))

    def get(self, digest: str) -> bytes:
        proc = subprocess.run([*self.ctr, "content", "get", digest], capture_output=True, check=False)
        if proc.returncode != 0:
            raise PrefetchError(f"ctr content get {digest[:19]} failed")
        return proc.stdout

    def protect(self, digests: list[str]) -> None:
        """Reference the digests from the anchor: the GC keeps each blob from the moment it is committed."""
        if digests:
            self._run("images", "label", ANCHOR, *(f"{REF_LABEL}{d.partition(':')[2][:16]}={d}" for d in digests))

    def release(self, root: str = "") -> None:
        """Remove the anchor, the stand-ins and the staging directory, and collect garbage before returning
        (--sync): their own blobs and what only they referenced are gone before the build measures the volume."""
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
    """One image of the set: its blobs, and the line printed when the last one is in (or one failed)."""

    def __init__(self, prefetch: Prefetch, index: int, ref: str) -> None:
        self.prefetch, self.index, self.ref = prefetch, index, ref
        self.waiting: set[str] = set()
        self.bytes = 0
        self.lock = threading.Lock()
        self.reported = False
        self.reported_event = threading.Event()
        self.manifest: dict = {}
        self.unpacked = 0  # layers applied through stand-ins
        self.unpacking = False
        self.early_failed = False

    @property
    def layers(self) -> list[str]:
        return [layer["digest"] for layer in self.manifest.get("layers", [])]

    def remaining(self) -> int:
        """Bytes of the image's layers not in the store yet."""
        return sum(layer["size"] for layer in self.manifest.get("layers", []) if layer["digest"] in self.waiting)

    def ready(self) -> int:
        """How many leading layers are in the store (0 while the config is not)."""
        if self.manifest.get("config", {}).get("digest") in self.waiting:
            return 0
        count = 0
        for digest in self.layers:
            if digest in self.waiting:
                break
            count += 1
        return count

    def blob_done(self, blob: Blob, error: str | None) -> None:
        with self.lock:
            self.waiting.discard(blob.digest)
        if error:
            self.report(f"failed {error}")
        else:
            self.prefetch.progress(self)

    def report(self, line: str) -> None:
        with self.lock:
            if self.reported:
                return
            self.reported = True
        self.prefetch.announce(f"{self.index} {line}")
        self.reported_event.set()


class Prefetch:
    """The whole image set: plans each image (manifests), then fetches every blob part with a pool of
    connections, earlier images first, at most connections + 2 parts held in memory."""

    def __init__(self, store: Store, platform: str, connections: int, out: object = sys.stdout, unpack: int = 0
                 ) -> None:
        self.store, self.want, self.connections, self.out = store, platform.split("/"), connections, out
        self.unpack_slots = threading.Semaphore(max(1, unpack))
        self.early_unpack = unpack > 0
        self.unpack_keys: dict[tuple[str, ...], threading.Event] = {}
        self.unpacked_early = 0
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
        for blob in mine:
            with blob.lock:
                blob.waiters.append(image)
                finished = blob.done.is_set()
            if finished:
                image.blob_done(blob, blob.error)
        if not mine:
            self.progress(image)

    def progress(self, image: Image) -> None:
        """After a blob of `image` is in: unpack the layers ready while much of the image is still to fetch
        (one thread per image at a time); once every blob is in and no unpack runs, announce the image."""
        with image.lock:
            if image.reported:
                return
            ready = image.ready()
            start = (self.early_unpack and not image.unpacking and not image.early_failed
                     and ready > image.unpacked and image.remaining() >= EARLY_MIN_BYTES)
            image.unpacking = image.unpacking or start
            finished = not image.waiting and not image.unpacking  # its ctr pull applies what is left
        if start:
            threading.Thread(target=self.unpack_loop, args=(image,), daemon=True).start()
        elif finished:
            image.report(f"ok {image.bytes}")

    def unpack_loop(self, image: Image) -> None:
        config = b""
        while True:
            with image.lock:
                count = image.ready()
                if count <= image.unpacked or image.remaining() < EARLY_MIN_BYTES:
                    image.unpacking = False
                    break
            try:
                config = config or self.store.get(image.manifest["config"]["digest"])
                self.unpack_prefix(image, count, config)
            except Exception as error:  # the image's ctr pull unpacks what is left
                print(f"early unpack of {image.ref} stopped: {error}", file=sys.stderr)
                with image.lock:
                    image.early_failed = True
                    image.unpacking = False
                break
            with image.lock:
                image.unpacked = count
        self.progress(image)

    def unpack_prefix(self, image: Image, count: int, config: bytes) -> None:
        """Apply the image's first `count` layers (one unpack slot); an image whose leading layers another
        image is applying waits for it instead of applying them twice."""
        key = tuple(image.layers[:count])
        with self.unpack_slots:
            with self.lock:
                earlier = [self.unpack_keys[key[:n]] for n in range(1, count + 1) if key[:n] in self.unpack_keys]
                exact = key in self.unpack_keys
                mine = self.unpack_keys.setdefault(key, threading.Event())
            for event in earlier:
                event.wait()
            if exact:
                return
            try:
                self.store.unpack_stand_in(f"{STAND_IN}{image.index}-{count}", image.manifest, config, count,
                                           "/".join(self.want))
                with self.lock:
                    self.unpacked_early += count - image.unpacked
            finally:
                mine.set()

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
        try:
            self.store.create_anchor("/".join(self.want))
        except PrefetchError as error:
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

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(8, len(images)))) as planners:
            list(planners.map(plan, images))
        for image, _, _ in images:
            image.reported_event.wait()
        for _ in workers:
            self.jobs.put((sys.maxsize, 0, 0, 0, None))
        for thread in workers:
            thread.join()


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
             out: object = sys.stdout, unpack: int = 0, root: str = "") -> dict:
    """Fetch every image of the spec into the content store; one line per image on `out`."""
    started = time.monotonic()
    refs, endpoints = spec_images(spec_lines)
    plain_http = os.environ.get("ML_CACHE_PLAIN_HTTP_REGISTRIES", "").split()
    job = Prefetch(Store(socket, namespace, root), platform, connections, out, unpack)
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
            "connections": connections, "layers_unpacked": job.unpacked_early}


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
    summary = prefetch(*argv[1:6], int(argv[6]), sys.stdout, int(argv[7]), argv[8] if len(argv) == 9 else "")
    rate = summary["bytes"] / 1e6 / max(summary["seconds"], 0.01)
    print(f"prefetch: {summary['blobs']} blob(s), {summary['bytes'] / 1e6:.1f} MB in {summary['seconds']} s "
          f"({rate:.0f} MB/s, {summary['connections']} connections), {summary['layers_unpacked']} layer(s) "
          f"unpacked while fetching", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
