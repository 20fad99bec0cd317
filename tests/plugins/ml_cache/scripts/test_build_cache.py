"""build_cache.sh against a real containerd, a real loopback registry and a loop-mounted XFS volume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from build_cache_lab import MISSING, PLATFORM, SCRIPT, VOLUME_ID, Builder, short_tmp

from devstack import volumes
from devstack.demo_images import (
    DEMO_IMAGES,
    DemoImage,
    build_layout,
    default_cache_dir,
    machine_architecture,
    seed_registry,
)
from devstack.registry import Registry
from ml_cache.images import InvalidInputs

pytestmark = [pytest.mark.root, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]


def only_json_line(proc: subprocess.CompletedProcess[str]) -> dict:
    """stdout must be exactly one line of JSON (the report)."""
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and proc.stdout.endswith("\n"), proc.stdout
    return json.loads(lines[0])


def registry_digest(ref: str) -> str:
    """The manifest digest the registry serves for the ref's tag, asked with skopeo."""
    name = ref.split("@")[0]
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{name}"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["Digest"]


def assert_quiet_machine(builder: Builder) -> None:
    """After the script exits (any status): volume unmounted, our containerd gone."""
    assert not volumes.is_mounted(builder.containerd_root)
    assert not builder.pidfile.exists()
    assert not builder.socket.exists()


def test_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    proc = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout


def test_build_small_via_ssm_env_reports_pins_and_quiesces(registry, builder: Builder) -> None:
    _, refs = registry
    by_tag = refs["small"].split("@")[0]
    proc = builder.run(builder.build_spec([refs["small"], by_tag]), via="ssm")
    report = only_json_line(proc)

    assert report["schema"] == 1 and report["status"] == "ok" and report["action"] == "build"
    assert report["platform"] == PLATFORM and report["volume_id"] == VOLUME_ID
    assert report["quiesced"] is True
    served = registry_digest(refs["small"])
    assert [image["ref"] for image in report["images"]] == [refs["small"], by_tag]
    for image in report["images"]:
        assert image["digest"] == served
        assert image["unpacked"] is True
        assert 1_000_000 < image["bytes"] < 3_000_000  # busybox layer + config
    assert report["totals"]["images"] == 2
    assert report["totals"]["bytes"] == sum(image["bytes"] for image in report["images"])
    assert report["totals"]["filesystem_used_bytes"] > report["totals"]["bytes"]
    assert set(report["timings"]) == {"prepare_seconds", "pull_seconds", "verify_seconds", "quiesce_seconds"}
    assert len(proc.stderr) < 8000
    assert_quiet_machine(builder)

    # The volume holds the images, pinned against kubelet GC, also under the name CRI looks up.
    with builder.open_volume() as containerd:
        listing = containerd.ctr("images", "ls", check=True).stdout
        alias = f"{by_tag.rsplit(':', 1)[0]}@{served}"
        for name in (refs["small"], by_tag, alias):
            row = next(line for line in listing.splitlines() if line.split()[0] == name)
            assert "io.cri-containerd.pinned=pinned" in row and "io.cri-containerd.image=managed" in row
        run = containerd.ctr("run", "--rm", alias, "small-check", timeout=60)
        assert run.returncode == 0 and run.stdout.strip() == "ready", run.stderr
    volumes.unmount(builder.base / "reopened" / "root")


def test_missing_image_fails_and_names_it(registry, builder: Builder) -> None:
    reg, refs = registry
    missing = f"{reg.address}/ml-cache-demo/does-not-exist:1.0"
    proc = builder.run(builder.build_spec([refs["small"], missing]))
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert missing in proc.stderr and PLATFORM in proc.stderr
    assert "not found" in proc.stderr
    assert_quiet_machine(builder)


@pytest.mark.parametrize("bad_ref", [
    "127.0.0.1:5000/demo/small:1.0;touch /tmp/PWNED",
    "127.0.0.1:5000/demo/$(touch /tmp/PWNED):1.0",
    "127.0.0.1:5000/demo/small:`touch /tmp/PWNED`",
    "127.0.0.1:5000/demo/small:1.0\ntouch /tmp/PWNED",
    "busybox:1.37",  # no registry host: ambiguous, ctr would not resolve it
    "127.0.0.1:5000/demo/small",  # neither tag nor digest
])
def test_refs_with_shell_metacharacters_are_rejected_before_touching_the_volume(
        registry, builder: Builder, bad_ref: str) -> None:
    canary = Path("/tmp/PWNED")
    canary.unlink(missing_ok=True)
    with pytest.raises(InvalidInputs, match=r"spec\['images'\]\[1\]"):  # Airflow never sends it ...
        builder.build_spec([registry[1]["small"], bad_ref])
    spec = builder.build_spec([registry[1]["small"]])
    spec["images"].append(bad_ref)  # ... and the builder refuses it on its own
    proc = builder.run(spec)
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert repr(bad_ref) in proc.stderr
    assert not canary.exists()
    blkid = subprocess.run(["blkid", "-p", builder.device], capture_output=True, check=False)
    assert blkid.returncode == 2, "the volume must not be formatted when the spec is rejected"


def test_image_for_another_platform_fails_naming_ref_and_platform(registry, builder: Builder) -> None:
    reg, _ = registry
    other = "arm64" if machine_architecture() == "amd64" else "amd64"
    wrong = DemoImage("wrong-arch", architecture=other)
    refs = seed_registry(reg.address, default_cache_dir(), images={"wrong": wrong})
    proc = builder.run(builder.build_spec([refs["wrong"]]))
    assert proc.returncode != 0
    assert refs["wrong"] in proc.stderr and PLATFORM in proc.stderr and f"linux/{other}" in proc.stderr
    assert_quiet_machine(builder)


def test_multi_arch_index_pulls_the_requested_platform(registry, builder: Builder) -> None:
    reg, _ = registry
    other = "arm64" if machine_architecture() == "amd64" else "amd64"
    images = {"multi": DemoImage("multi-arch", extra_architectures=(other,)),
              "elsewhere": DemoImage("other-arch-only", architecture=other, extra_architectures=("s390x",))}
    refs = seed_registry(reg.address, default_cache_dir(), images=images)
    assert registry_digest(refs["multi"]) == refs["multi"].split("@")[1]

    report = only_json_line(builder.run(builder.build_spec([refs["multi"]])))
    image = report["images"][0]
    assert image["digest"] == refs["multi"].split("@")[1]  # the index digest: what the tag resolves to
    assert image["unpacked"] is True and image["bytes"] > 1_000_000

    proc = builder.run(builder.build_spec([refs["elsewhere"]]))
    assert proc.returncode != 0
    assert refs["elsewhere"] in proc.stderr and PLATFORM in proc.stderr and "1 attempt(s)" in proc.stderr
    assert_quiet_machine(builder)


def test_refuses_to_format_a_volume_with_another_filesystem(registry, builder: Builder) -> None:
    subprocess.run(["mkfs.ext4", "-q", "-F", builder.device], check=True, capture_output=True)
    proc = builder.run(builder.build_spec([registry[1]["small"]]))
    assert proc.returncode != 0
    assert "refusing to format" in proc.stderr and "ext4" in proc.stderr
    probe = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", builder.device],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "ext4"


def test_retry_after_an_interrupted_run_recovers_the_volume_and_containerd(registry, builder: Builder) -> None:
    """A killed run leaves the volume mounted at containerd's root and its containerd running."""
    volumes.make_xfs(builder.device)
    volumes.mount(builder.device, builder.containerd_root)
    leftover = subprocess.Popen(["containerd", "--config", str(builder.base / "containerd.toml")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        builder.pidfile.parent.mkdir(parents=True, exist_ok=True)
        builder.pidfile.write_text(f"{leftover.pid}\n")
        deadline = time.monotonic() + 10
        while not builder.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.1)

        report = only_json_line(builder.run(builder.build_spec([registry[1]["small"]])))
        assert report["quiesced"] is True
        assert leftover.wait(timeout=5) is not None
        assert_quiet_machine(builder)
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_volume_mounted_elsewhere_is_not_touched(registry, builder: Builder) -> None:
    volumes.make_xfs(builder.device)
    elsewhere = builder.base / "someone-else"
    volumes.mount(builder.device, elsewhere)
    proc = builder.run(builder.build_spec([registry[1]["small"]]))
    assert proc.returncode != 0
    assert "already mounted elsewhere" in proc.stderr and str(elsewhere) in proc.stderr
    assert volumes.is_mounted(elsewhere)


def test_missing_device_fails_naming_the_volume(registry, builder: Builder) -> None:
    spec = builder.build_spec([registry[1]["small"]], volume_id="vol-0fedcba9876543210")
    proc = builder.run(spec, ML_CACHE_DEVICE_WAIT_SECONDS="1")
    assert proc.returncode != 0
    assert "vol-0fedcba9876543210 not attached" in proc.stderr


def test_quiesce_unmounts_wherever_mounted_and_checks_xfs(registry, builder: Builder) -> None:
    only_json_line(builder.run(builder.build_spec([registry[1]["small"]])))
    elsewhere = builder.base / "mounted-by-someone"
    volumes.mount(builder.device, elsewhere)
    assert volumes.is_mounted(elsewhere)

    report = only_json_line(builder.run(builder.build_spec([registry[1]["small"]], action="quiesce")))
    assert report == {
        "schema": 1, "action": "quiesce", "status": "ok", "volume_id": VOLUME_ID,
        "device": builder.device, "mounted": False, "containerd_running": False,
        "filesystem": "xfs", "xfs_repair": "ok", "unmounted": [str(elsewhere)],
    }
    assert not volumes.is_mounted(elsewhere)
    again = only_json_line(builder.run({"action": "quiesce", "volume_id": VOLUME_ID}))  # the minimal spec
    assert again["unmounted"] == [] and again["mounted"] is False


class _TooManyRequestsThenProxy(BaseHTTPRequestHandler):
    """Answers 429 to the first `failures` manifest requests, then forwards to the real registry."""

    upstream = ""
    failures = 0
    seen_429 = 0

    def _handle(self) -> None:
        cls = type(self)
        if "/manifests/" in self.path and cls.seen_429 < cls.failures:
            cls.seen_429 += 1
            self.send_response(429)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        request = urllib.request.Request(f"http://{cls.upstream}{self.path}", method=self.command,
                                         headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http to loopback
                status, headers, body = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, headers, body = error.code, error.headers, error.read()
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        length = headers.get("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _handle

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("failures", "succeeds"), [(2, True), (99, False)])
def test_429_is_retried_a_bounded_number_of_times(registry, make_builder, failures: int, succeeds: bool) -> None:
    reg, refs = registry
    handler = type("Handler", (_TooManyRequestsThenProxy,), {"upstream": reg.address, "failures": failures})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        proxy = f"127.0.0.1:{server.server_address[1]}"
        ref = refs["small"].replace(reg.address, proxy)
        builder = make_builder([proxy])
        proc = builder.run(builder.build_spec([ref]), ML_CACHE_PULL_ATTEMPTS="3")
    finally:
        server.shutdown()
        server.server_close()
    if succeeds:
        report = only_json_line(proc)
        assert report["images"][0]["digest"] == refs["small"].split("@")[1]
        assert handler.seen_429 == 2
    else:
        assert proc.returncode != 0
        assert ref in proc.stderr and "3 attempt(s)" in proc.stderr and "429" in proc.stderr, proc.stderr
        assert handler.seen_429 >= 3
    assert_quiet_machine(builder)


# --- slow: the large image, the "snapshot", a restore without network ---------------------------

@pytest.fixture(scope="module")
def large_registry():
    base = short_tmp("mlc-l-")
    try:
        running = Registry(base / "storage").start()
        try:
            timings: dict[str, float] = {}
            refs = seed_registry(running.address, default_cache_dir(), timings=timings)
            print(f"seed timings: {timings}")
            yield running, refs
        finally:
            running.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_disk_full_while_unpacking_is_a_clean_failure(large_registry, make_builder) -> None:
    reg, refs = large_registry
    builder = make_builder([reg.address], size_gib=1)  # < compressed + unpacked size of "large"
    proc = builder.run(builder.build_spec([refs["large"]]))
    assert proc.returncode != 0
    assert refs["large"] in proc.stderr and "no space left on device" in proc.stderr
    assert "1 attempt(s)" in proc.stderr  # retrying cannot help
    assert_quiet_machine(builder)


@pytest.mark.slow
def test_large_image_snapshot_restores_and_runs_without_network(large_registry, make_builder) -> None:
    reg, refs = large_registry
    builder = make_builder([reg.address], size_gib=4)
    started = time.monotonic()
    report = only_json_line(builder.run(builder.build_spec([refs["small"], refs["large"]], parallel=2)))
    print(f"build of small+large: {time.monotonic() - started:.1f}s, timings {report['timings']}")
    digests = {image["ref"]: image["digest"] for image in report["images"]}
    assert digests == {ref: registry_digest(ref) for ref in (refs["small"], refs["large"])}
    large = next(image for image in report["images"] if image["ref"] == refs["large"])
    assert large["bytes"] >= 1024**3 and large["unpacked"] is True
    assert report["totals"]["filesystem_used_bytes"] >= 2 * 1024**3  # blobs + unpacked snapshots

    # No network from here on: the registry is gone.
    reg.stop()
    assert not reg.answers()

    # The "snapshot": a copy of the quiesced volume file; it must be a clean XFS.
    snapshot = builder.base / "snapshot.img"
    volumes.copy_volume_file(builder.volume_file, snapshot)
    repair = subprocess.run(["xfs_repair", "-n", "-f", str(snapshot)], capture_output=True, text=True, check=False)
    assert repair.returncode == 0, repair.stderr

    with builder.open_volume(snapshot) as containerd:
        listing = containerd.ctr("images", "ls", check=True).stdout
        assert refs["large"] in listing and "io.cri-containerd.pinned=pinned" in listing
        check = containerd.ctr("images", "check", check=True).stdout
        row = next(line for line in check.splitlines() if line.split()[0] == refs["large"])
        assert row.split()[3] == "complete" and row.split()[-1] == "true"
        started = time.monotonic()
        run = containerd.ctr("run", "--rm", refs["large"], "large-from-snapshot", timeout=120)
        print(f"container start+exit from the restored volume: {time.monotonic() - started:.2f}s")
        assert run.returncode == 0 and run.stdout.strip() == "ready", run.stderr
        du = containerd.ctr("run", "--rm", refs["large"], "large-data", "/bin/sh", "-c",
                            "cat /data/*.bin | wc -c", timeout=120)
        assert int(du.stdout.strip()) == 4 * 256 * 1024**2


# --- credentials: SSM SecureString reference -> ctr's password prompt, never on a command line ----

FAKE_AWS = """#!/bin/sh
# Stand-in for the AWS CLI on the builder: answers one SecureString parameter, logs its argv.
printf '%s\\n' "$*" >> "{log}"
case "$*" in
  *"ssm get-parameter --with-decryption --name /ml-cache/registry/demo "*) printf '%s\\n' "{secret}" ;;
  *) echo "An error occurred (ParameterNotFound)" >&2; exit 254 ;;
esac
"""


@pytest.fixture(scope="module")
def auth_registry():
    """A registry with basic auth (htpasswd, bcrypt) holding the small image."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt through libxcrypt; the module is gone in Python 3.13
    base = short_tmp("mlc-a-")
    password = "s3cret-pw-" + base.name[-6:]
    (base / "htpasswd").write_text(f"demo:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")  # noqa: S324
    try:
        with Registry(base / "storage", htpasswd=base / "htpasswd") as running:
            layout = build_layout(DEMO_IMAGES["small"], default_cache_dir())
            subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds",
                            f"demo:{password}", f"oci:{layout}:1.0",
                            f"docker://{running.address}/ml-cache-demo/small:1.0"], check=True)
            yield running, f"{running.address}/ml-cache-demo/small:1.0", password
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _command_lines_containing(needle: str, found: list[str], stop: threading.Event) -> None:
    while not stop.is_set():
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if needle in text:
                found.append(text)
        time.sleep(0.005)


def test_private_registry_credentials_come_from_ssm_and_never_touch_argv(auth_registry, make_builder) -> None:
    registry, ref, password = auth_registry
    builder = make_builder([registry.address])
    bin_dir = builder.base / "bin"
    bin_dir.mkdir()
    aws_log = builder.base / "aws.log"
    (bin_dir / "aws").write_text(FAKE_AWS.format(log=aws_log, secret=f"demo:{password}"))
    (bin_dir / "aws").chmod(0o755)
    spec = builder.build_spec([ref], registry_credentials={
        registry.address: {"ssm_secure_parameter": "/ml-cache/registry/demo"}})

    found: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_command_lines_containing, args=(password, found, stop), daemon=True)
    watcher.start()
    try:
        proc = builder.run(spec, via="ssm", PATH=f"{bin_dir}:{os.environ['PATH']}")
    finally:
        stop.set()
        watcher.join()
    report = only_json_line(proc)
    assert report["images"][0]["unpacked"] is True
    assert "--with-decryption --name /ml-cache/registry/demo" in aws_log.read_text()
    assert found == [], "the registry password appeared on a command line"
    assert password not in proc.stderr and password not in proc.stdout
    assert_quiet_machine(builder)


def test_private_registry_without_credentials_fails_once_naming_the_ref(auth_registry, make_builder) -> None:
    registry, ref, _ = auth_registry
    builder = make_builder([registry.address])
    proc = builder.run(builder.build_spec([ref]))
    assert proc.returncode != 0
    assert ref in proc.stderr and "401 Unauthorized" in proc.stderr and "1 attempt(s)" in proc.stderr


def test_unreadable_credential_parameter_fails_before_touching_the_volume(auth_registry, make_builder) -> None:
    registry, ref, _ = auth_registry
    builder = make_builder([registry.address])
    bin_dir = builder.base / "bin"
    bin_dir.mkdir()
    (bin_dir / "aws").write_text(FAKE_AWS.format(log=builder.base / "aws.log", secret="unused"))
    (bin_dir / "aws").chmod(0o755)
    spec = builder.build_spec([ref], registry_credentials={
        registry.address: {"ssm_secure_parameter": "/ml-cache/registry/missing"}})
    proc = builder.run(spec, PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert proc.returncode != 0
    assert "/ml-cache/registry/missing" in proc.stderr and registry.address in proc.stderr
    assert subprocess.run(["blkid", "-p", builder.device], capture_output=True, check=False).returncode == 2
