"""build_cache_prefetch.py against a real registry and a real containerd: blobs land in the content store
exactly, survive a GC until the pull, and the pull then fetches nothing; a failed prefetch costs only speed."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from build_cache_lab import MISSING, PLATFORM

from devstack import volumes
from devstack.containerd import Containerd
from devstack.demo_images import DemoImage, default_cache_dir, seed_registry
from ml_cache import build_progress
from ml_cache.scripts import build_cache_prefetch as prefetch_module

pytestmark = [pytest.mark.root, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]
NAMESPACE = "k8s.io"
PREFETCH_AGENT = prefetch_module.USER_AGENT


class RecordingProxy(BaseHTTPRequestHandler):
    """Forwards to the registry and records (method, path, user agent, range). Optional faults:
    `refuse_prefetch` answers our prefetch's requests with that status; `corrupt` flips a byte of that
    blob's body; `bearer` demands a token from /token (basic demo:<bearer>) before serving /v2/."""

    upstream = ""
    seen: list[tuple[str, str, str, str]]
    refuse_prefetch = 0
    corrupt = ""
    bearer = ""
    delay = 0.0  # seconds before answering each blob request of our prefetch (a slow registry)

    def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(body))) if self.command == "HEAD"
                         else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        cls = type(self)
        agent = self.headers.get("User-Agent", "")
        cls.seen.append((self.command, self.path, agent, self.headers.get("Range", "")))
        if cls.delay and agent == PREFETCH_AGENT and "/blobs/" in self.path:
            time.sleep(cls.delay)
        if cls.refuse_prefetch and agent == PREFETCH_AGENT:
            self._reply(cls.refuse_prefetch, {}, b"refused by the test proxy\n")
            return
        if cls.bearer:
            if self.path.startswith("/token"):
                expected = "Basic " + base64.b64encode(f"demo:{cls.bearer}".encode()).decode()
                ok = self.headers.get("Authorization") == expected
                self._reply(200 if ok else 401, {"Content-Type": "application/json"},
                            json.dumps({"token": "t-" + cls.bearer}).encode() if ok else b"{}")
                return
            if self.headers.get("Authorization") != "Bearer t-" + cls.bearer:
                realm = f"http://{self.headers['Host']}/token"
                self._reply(401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="proxy",scope="x"'}, b"")
                return
        connection = http.client.HTTPConnection(cls.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")}
        connection.request(self.command, self.path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        if cls.corrupt and self.command == "GET" and self.path.endswith(f"/blobs/{cls.corrupt}") and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        keep = {k: v for k, v in response.getheaders()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")}
        if self.command == "HEAD" and response.getheader("Content-Length"):
            keep["Content-Length"] = response.getheader("Content-Length")
        self._reply(response.status, keep, body)

    do_GET = do_HEAD = _handle

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy(registry) -> Iterator[type[RecordingProxy]]:
    handler = type("Handler", (RecordingProxy,), {"upstream": registry[0].address, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.address = f"127.0.0.1:{server.server_address[1]}"
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def ctr(containerd: Containerd, *args: str) -> str:
    return subprocess.run(["ctr", "-a", str(containerd.address), "-n", NAMESPACE, *args],
                          capture_output=True, text=True, check=True).stdout


def content(containerd: Containerd) -> dict[str, str]:
    """digest -> labels column of `ctr content ls`."""
    return {line.split()[0]: line.split()[-1] for line in ctr(containerd, "content", "ls").splitlines()[1:]}


def collect_garbage(containerd: Containerd) -> None:
    """Deleting a lease with --sync runs the whole GC before it returns."""
    ctr(containerd, "leases", "rm", "--sync", ctr(containerd, "leases", "create").split()[0])


def run_prefetch(containerd: Containerd, refs: list[str], tmp_path: Path, plain_http: str,
                 monkeypatch, connections: int = 4, unpack: int = 0, staged: bool = False) -> list[str]:
    (tmp_path / "spec.lines").write_text("".join(f"image={ref}\n" for ref in refs))
    monkeypatch.setenv("ML_CACHE_PLAIN_HTTP_REGISTRIES", plain_http)
    out = io.StringIO()
    prefetch_module.prefetch(str(containerd.address), NAMESPACE, PLATFORM, str(tmp_path / "spec.lines"),
                             str(tmp_path), connections, out, unpack, str(containerd.root) if staged else "")
    return sorted(out.getvalue().splitlines())


def image_blobs(containerd: Containerd, ref: str) -> list[str]:
    """Manifest, config and layers of the pulled-or-prefetched image, read from the store."""
    digest = ref.split("@")[1]
    document = json.loads(ctr(containerd, "content", "get", digest))
    digests = [digest]
    if "manifests" in document:
        digest = document["manifests"][0]["digest"]
        digests.append(digest)
        document = json.loads(ctr(containerd, "content", "get", digest))
    return [*digests, document["config"]["digest"], *(layer["digest"] for layer in document["layers"])]


def anchored(containerd: Containerd) -> set[str]:
    """The digests the anchor image's labels reference."""
    row = next(line for line in ctr(containerd, "images", "ls").splitlines() if line.startswith(prefetch_module.ANCHOR))
    return {label.split("=", 1)[1] for label in row.split()[-1].split(",")}


STAGED = pytest.mark.parametrize("staged", [True, False], ids=["staged beside the store", "piped through ctr"])


@STAGED
def test_range_parts_reassemble_the_blob_exactly(registry, proxy, containerd, tmp_path, monkeypatch, staged) -> None:
    monkeypatch.setattr(prefetch_module, "CHUNK_BYTES", 64 * 1024)
    ref = registry[1]["small"].replace(registry[0].address, proxy.address)
    lines = run_prefetch(containerd, [ref], tmp_path, proxy.address, monkeypatch, staged=staged)
    assert lines == [f"0 ok {small_bytes(registry)}"]
    blobs = image_blobs(containerd, ref)
    assert set(blobs) <= set(content(containerd)) and set(blobs) == anchored(containerd)
    layer = blobs[-1]
    ranged = [rng for method, path, _, rng in proxy.seen if path.endswith(layer) and method == "GET"]
    assert len(ranged) > 10 and all(rng.startswith("bytes=") for rng in ranged)
    upstream = http.client.HTTPConnection(registry[0].address)
    upstream.request("GET", f"/v2/ml-cache-demo/small/blobs/{layer}")
    assert subprocess.run(["ctr", "-a", str(containerd.address), "-n", NAMESPACE, "content", "get", layer],
                          capture_output=True, check=True).stdout == upstream.getresponse().read()


def test_progress_ticks_count_the_bytes_fetched_of_the_set(registry, proxy, containerd, tmp_path,
                                                          monkeypatch) -> None:
    """While bytes move, a `fetch` line at most every PROGRESS_SECONDS: bytes done of the set's, growing to it;
    then the image's own line. Read back with Airflow's parser."""
    monkeypatch.setattr(prefetch_module, "CHUNK_BYTES", 128 * 1024)
    monkeypatch.setattr(prefetch_module, "PROGRESS_SECONDS", 0.2)
    proxy.delay = 0.1
    ref = registry[1]["small"].replace(registry[0].address, proxy.address)
    (tmp_path / "spec.lines").write_text(f"image={ref}\n")
    monkeypatch.setenv("ML_CACHE_PLAIN_HTTP_REGISTRIES", proxy.address)
    progress = io.StringIO()
    prefetch_module.prefetch(str(containerd.address), NAMESPACE, PLATFORM, str(tmp_path / "spec.lines"),
                             str(tmp_path), 2, io.StringIO(), 0, "", progress)
    events = [build_progress.parse_progress(line) for line in progress.getvalue().splitlines()]
    assert None not in events, progress.getvalue()
    ticks = [e for e in events if e["phase"] == "fetch"]
    assert len(ticks) >= 2, events
    done = [tick["done"] for tick in ticks]
    assert done == sorted(set(done)) and done[-1] <= ticks[-1]["total"] <= small_bytes(registry)
    assert all(tick["image"] == ref and (tick["images_done"], tick["images"]) == (0, 1) for tick in ticks)
    assert events[-1] == {"phase": "image", "image": ref, "ok": True, "bytes": small_bytes(registry)}
    assert re.fullmatch(rf"fetching: [0-9.]+ [KM]?B of [0-9.]+ [KM]?B \([0-9]+%\), 0 of 1 image\(s\) in, "
                        rf"0 layer\(s\) applied; now {re.escape(ref)}", build_progress.describe(ticks[-1]))


def small_bytes(registry) -> int:
    """Config + layer bytes the registry holds for the small image (what the prefetch reports)."""
    host, repository, digest = prefetch_module.split_ref(registry[1]["small"])
    connection = http.client.HTTPConnection(host)
    accept = {"Accept": prefetch_module.ACCEPT}
    connection.request("GET", f"/v2/{repository}/manifests/{digest}", headers=accept)
    document = json.loads(connection.getresponse().read())
    if "manifests" in document:
        connection.request("GET", f"/v2/{repository}/manifests/{document['manifests'][0]['digest']}", headers=accept)
        document = json.loads(connection.getresponse().read())
    return document["config"]["size"] + sum(layer["size"] for layer in document["layers"])


@STAGED
def test_a_wrong_blob_is_refused_and_not_stored(registry, proxy, containerd, tmp_path, monkeypatch, staged) -> None:
    ref = registry[1]["small"].replace(registry[0].address, proxy.address)
    run_prefetch(containerd, [ref], tmp_path, proxy.address, monkeypatch)
    layer = image_blobs(containerd, ref)[-1]
    ctr(containerd, "content", "rm", layer)
    collect_garbage(containerd)  # the backend file goes too (the anchor still names the layer: remove it)
    prefetch_module.Store(str(containerd.address), NAMESPACE).release()
    collect_garbage(containerd)
    proxy.corrupt = layer
    lines = run_prefetch(containerd, [ref], tmp_path, proxy.address, monkeypatch, staged=staged)
    refused = f"0 failed blob {layer[:19]}: the registry sent other bytes" if staged else \
        f"0 failed ctr content ingest refused {layer[:19]}"
    assert len(lines) == 1 and lines[0].startswith(refused), lines
    assert layer not in content(containerd)
    blobs = containerd.root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    assert not (blobs / layer.partition(":")[2]).exists()
    assert not list((containerd.root / prefetch_module.STAGING).glob("*"))


def test_prefetched_blobs_survive_gc_and_the_pull_fetches_none(registry, proxy, containerd, tmp_path,
                                                               monkeypatch) -> None:
    """Nothing references a prefetched blob until its image is pulled: only the root label keeps it."""
    small = registry[1]["small"].replace(registry[0].address, proxy.address)
    lines = run_prefetch(containerd, [small], tmp_path, proxy.address, monkeypatch)
    assert lines == [f"0 ok {small_bytes(registry)}"]
    blobs = image_blobs(containerd, small)
    collect_garbage(containerd)
    assert set(blobs) <= set(content(containerd)), "a GC took a prefetched blob"

    proxy.seen.clear()
    ctr(containerd, "images", "pull", "--plain-http", "--platform", PLATFORM, small)
    by_containerd = [(method, path) for method, path, agent, _ in proxy.seen if agent != PREFETCH_AGENT]
    assert by_containerd and all(method == "HEAD" for method, _ in by_containerd), by_containerd
    check = ctr(containerd, "images", "check").splitlines()[1].split()
    assert check[3] == "complete" and check[-1] == "true"

    # The anchor goes (with a GC), the pull's own references keep the image whole.
    prefetch_module.Store(str(containerd.address), NAMESPACE).release()
    assert prefetch_module.ANCHOR not in ctr(containerd, "images", "ls")
    assert set(blobs) <= set(content(containerd))
    ctr(containerd, "images", "rm", small)
    collect_garbage(containerd)
    assert not set(blobs) & set(content(containerd)), "unreferenced blobs must go once the labels are gone"


def test_bearer_token_flow(registry, proxy, containerd, tmp_path, monkeypatch) -> None:
    proxy.bearer = "pw-" + tmp_path.name[-6:]
    (tmp_path / f"secret.{proxy.address}").write_text(f"demo:{proxy.bearer}")
    ref = registry[1]["small"].replace(registry[0].address, proxy.address)
    assert run_prefetch(containerd, [ref], tmp_path, proxy.address, monkeypatch) == [f"0 ok {small_bytes(registry)}"]
    assert any(path.startswith("/token") for _, path, _, _ in proxy.seen)
    (tmp_path / f"secret.{proxy.address}").write_text("demo:wrong")
    ctr(containerd, "content", "rm", *image_blobs(containerd, ref))
    lines = run_prefetch(containerd, [ref], tmp_path, proxy.address, monkeypatch)
    assert lines == ["0 failed token service " + proxy.address + " answered 401"], lines


def test_shared_blobs_are_fetched_once_and_every_image_is_announced(registry, proxy, containerd, tmp_path,
                                                                     monkeypatch) -> None:
    small = registry[1]["small"].replace(registry[0].address, proxy.address)
    by_tag, digest = small.split("@")
    alias = f"{by_tag.rsplit(':', 1)[0]}@{digest}"
    missing = f"{proxy.address}/ml-cache-demo/does-not-exist:1.0@sha256:{'0' * 64}"
    lines = run_prefetch(containerd, [small, alias, missing], tmp_path, proxy.address, monkeypatch)
    assert lines[:2] == [f"0 ok {small_bytes(registry)}", f"1 ok {small_bytes(registry)}"]
    assert lines[2].startswith("2 failed manifest sha256:000000000000 answered 404"), lines
    blob_gets = [path for method, path, _, _ in proxy.seen if method == "GET" and "/blobs/" in path]
    assert len(blob_gets) == len(set(blob_gets)) == len(image_blobs(containerd, small)) - 1  # all but the manifest


def test_layers_are_applied_ahead_of_the_pull(registry, proxy, containerd, tmp_path, monkeypatch) -> None:
    """Each layer is applied as its blob comes in, a shared one once, leaving exactly the snapshots the
    image needs: its pull applies nothing, and once the anchor is gone (with a GC) the image is whole."""
    monkeypatch.setattr(prefetch_module, "CHUNK_BYTES", 1024 * 1024)
    monkeypatch.setattr(prefetch_module, "APPLY_MIN_BYTES", 0)  # apply however small the image
    layered = DemoImage("three-layers", data_layers=3, data_layer_mib=3, seed=11)
    refs = seed_registry(registry[0].address, default_cache_dir(), images={"layered": layered})
    ref = refs["layered"].replace(registry[0].address, proxy.address)
    small = registry[1]["small"].replace(registry[0].address, proxy.address)  # shares the busybox layer
    lines = run_prefetch(containerd, [ref, small], tmp_path, proxy.address, monkeypatch, unpack=2, staged=True)
    assert [line.split()[:2] for line in lines] == [["0", "ok"], ["1", "ok"]], lines
    chain = ctr(containerd, "snapshots", "ls").splitlines()[1:]
    assert len(chain) == 4 and all(line.split()[-1] == "Committed" for line in chain)  # busybox + 3, once
    collect_garbage(containerd)  # no image records them yet: the anchor's labels keep them
    assert ctr(containerd, "snapshots", "ls").splitlines()[1:] == chain

    pulled = subprocess.run(["ctr", "-a", str(containerd.address), "-n", NAMESPACE, "images", "pull", "--plain-http",
                             "--platform", PLATFORM, ref], capture_output=True, text=True, check=True).stdout
    assert "done" in pulled and len(ctr(containerd, "snapshots", "ls").splitlines()[1:]) == 4
    prefetch_module.Store(str(containerd.address), NAMESPACE).release(str(containerd.root))
    listing = ctr(containerd, "images", "ls", "-q").split()
    assert listing == [ref], listing  # the anchor gone; the unpulled small image never existed
    check = ctr(containerd, "images", "check").splitlines()[1].split()
    assert check[3] == "complete" and check[-1] == "true"
    assert len(ctr(containerd, "snapshots", "ls").splitlines()[1:]) == 4  # the image keeps its whole chain


# --- through build_cache.sh ---------------------------------------------------------------------


def build(make_builder, proxy, refs: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    builder = make_builder([proxy.address])
    proc = builder.run(builder.build_spec(refs), **env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [image["ref"] for image in report["images"]] == refs and all(i["unpacked"] for i in report["images"])
    return proc


def test_the_build_prefetches_and_ctr_only_unpacks(registry, proxy, make_builder) -> None:
    small = registry[1]["small"].replace(registry[0].address, proxy.address)
    by_tag, digest = small.split("@")
    alias = f"{by_tag.rsplit(':', 1)[0]}@{digest}"
    proc = build(make_builder, proxy, [small, alias])
    assert "prefetch over" in proc.stderr and "2 of 2 image(s) prefetched" in proc.stderr, proc.stderr
    assert "0 layer(s) applied ahead of ctr" in proc.stderr, proc.stderr  # too small to pay for the ctr calls
    by_containerd = [(method, path) for method, path, agent, _ in proxy.seen if agent != PREFETCH_AGENT]
    assert by_containerd and all(method == "HEAD" for method, _ in by_containerd), by_containerd
    assert any(agent == PREFETCH_AGENT and "/blobs/" in path for _, path, agent, _ in proxy.seen)


def test_a_failed_prefetch_falls_back_to_the_plain_pull(registry, proxy, make_builder) -> None:
    proxy.refuse_prefetch = 403
    small = registry[1]["small"].replace(registry[0].address, proxy.address)
    proc = build(make_builder, proxy, [small])
    assert f"prefetch of {small} failed, ctr pulls it alone: manifest sha256:" in proc.stderr, proc.stderr
    assert "0 of 1 image(s) prefetched" in proc.stderr
    assert any(agent != PREFETCH_AGENT and method == "GET" and "/blobs/" in path
               for method, path, agent, _ in proxy.seen)


def test_prefetch_off_is_the_plain_pull(registry, proxy, make_builder) -> None:
    small = registry[1]["small"].replace(registry[0].address, proxy.address)
    proc = build(make_builder, proxy, [small], ML_CACHE_PREFETCH="off")
    assert "plain ctr pull (prefetch off)" in proc.stderr
    assert not any(agent == PREFETCH_AGENT for _, _, agent, _ in proxy.seen)


def test_connections_use_the_environments_proxy_like_ctr(monkeypatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert prefetch_module.connect("https", "registry.example:443").host == "registry.example"
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", "internal.example")
    tunnelled = prefetch_module.connect("https", "registry.example:443")
    assert (tunnelled.host, tunnelled.port) == ("proxy.example", 3128)
    assert (tunnelled._tunnel_host, tunnelled._tunnel_port) == ("registry.example", 443)
    assert prefetch_module.connect("https", "internal.example").host == "internal.example"
    assert prefetch_module.connect("http", "127.0.0.1:5000").host == "127.0.0.1"  # no http_proxy set


def test_an_interrupted_runs_transient_images_never_reach_the_snapshot(registry, proxy, make_builder) -> None:
    small = registry[1]["small"].replace(registry[0].address, proxy.address)
    builder = make_builder([proxy.address])
    assert builder.run(builder.build_spec([small])).returncode == 0
    with builder.open_volume() as reopened:  # as a run killed mid-prefetch would leave it
        prefetch_module.Store(str(reopened.address), NAMESPACE).create_anchor(PLATFORM)
        assert prefetch_module.ANCHOR in ctr(reopened, "images", "ls", "-q")
    volumes.unmount(builder.base / "reopened" / "root")

    proc = builder.run(builder.build_spec([small]))
    assert proc.returncode == 0, proc.stderr
    with builder.open_volume() as reopened:
        assert ctr(reopened, "images", "ls", "-q").split() == sorted(
            [small, small.split(":1.0@")[0] + "@" + small.split("@")[1], small.split("@")[0]])
    volumes.unmount(builder.base / "reopened" / "root")


def test_the_builds_progress_lines_are_read_by_airflows_parser(registry, proxy, make_builder) -> None:
    """The script's real stderr through ml_cache.build_progress: each image fetched and pulled, with its bytes;
    the report on stdout stays the only line there."""
    small = registry[1]["small"].replace(registry[0].address, proxy.address)
    proc = build(make_builder, proxy, [small], ML_CACHE_PROGRESS_SECONDS="0.05")
    events = [fields for line in proc.stderr.splitlines() if (fields := build_progress.parse_progress(line))]
    fetched = [e for e in events if e["phase"] == "image"]
    assert fetched == [{"phase": "image", "image": small, "ok": True, "bytes": small_bytes(registry)}], events
    assert [e for e in events if e["phase"] == "pulled"] == [{"phase": "pulled", "image": small, "ok": True}]
    ticks = [e for e in events if e["phase"] == "fetch"]
    assert all(0 <= e["done"] <= e["total"] and e["image"] == small for e in ticks), ticks
    assert build_progress.describe(fetched[0]).startswith(f"image {small} fetched: ")
    assert len(proc.stdout.strip().splitlines()) == 1
