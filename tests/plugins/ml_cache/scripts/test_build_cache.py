"""build_cache.sh against a real containerd, a real loopback registry and a loop-mounted XFS volume."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
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
    by_tag, digest = refs["small"].split("@")
    alias = f"{by_tag.rsplit(':', 1)[0]}@{digest}"
    proc = builder.run(builder.build_spec([refs["small"], alias]), via="ssm")
    report = only_json_line(proc)

    assert report["schema"] == 1 and report["status"] == "ok" and report["action"] == "build"
    assert report["platform"] == PLATFORM and report["volume_id"] == VOLUME_ID
    assert report["quiesced"] is True
    served = registry_digest(refs["small"])
    assert [image["ref"] for image in report["images"]] == [refs["small"], alias]  # the refs as given
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

    # The volume holds the images, pinned against kubelet GC, under the pinned ref, the name CRI looks
    # a digest up by and the tag a pod may name.
    with builder.open_volume() as containerd:
        listing = containerd.ctr("images", "ls", check=True).stdout
        for name in (refs["small"], by_tag, alias):
            row = next(line for line in listing.splitlines() if line.split()[0] == name)
            assert "io.cri-containerd.pinned=pinned" in row and "io.cri-containerd.image=managed" in row
        run = containerd.ctr("run", "--rm", alias, "small-check", timeout=60)
        assert run.returncode == 0 and run.stdout.strip() == "ready", run.stderr
    volumes.unmount(builder.base / "reopened" / "root")


def test_missing_image_fails_and_names_it(registry, builder: Builder) -> None:
    reg, refs = registry
    missing = f"{reg.address}/ml-cache-demo/does-not-exist:1.0@sha256:{'0' * 64}"
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
    "127.0.0.1:5000/demo/small:1.0",  # not pinned by digest
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
    proc = builder.run(builder.build_spec([refs["small"], refs["large"]], parallel=2))
    report = only_json_line(proc)
    print(f"build of small+large: {time.monotonic() - started:.1f}s, timings {report['timings']}")
    # large's 4 data layers at least; the busybox layer too unless the small image's own pull (too small to
    # apply ahead) committed that shared snapshot first, which the apply then counts as present, not as its own
    applied = re.search(r"(\d+) layer\(s\) applied ahead of ctr", proc.stderr)
    assert applied and int(applied[1]) in (4, 5), proc.stderr
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
        small = containerd.ctr("run", "--rm", refs["small"], "small-from-snapshot", timeout=120)
        assert small.returncode == 0 and small.stdout.strip() == "ready", small.stderr  # every image starts
        du = containerd.ctr("run", "--rm", refs["large"], "large-data", "/bin/sh", "-c",
                            "cat /data/*.bin | wc -c", timeout=120)
        assert int(du.stdout.strip()) == 4 * 256 * 1024**2


# --- private registries: credentials fetched just in time, endpoints through a hosts dir ------------

ECR_HOST = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
SECRET_ARN = "arn:aws:secretsmanager:us-west-2:123456789012:secret:ml-cache/registry-AbCdEf"
FAKE_AWS = """#!/bin/sh
# Stand-in for the AWS CLI on the builder: logs its argv, answers the three credential sources.
printf '%s\\n' "$*" >> "{log}"
case "$*" in
  "ecr get-login-password --region us-west-2") printf '%s\\n' "{token}" ;;
  "secretsmanager get-secret-value --secret-id {arn} --region us-west-2 --query SecretString --output text")
    printf '%s\\n' '{{"username": "demo", "password": "{password}"}}' ;;
  "ssm get-parameter --with-decryption --name /ml-cache/registry/demo --query Parameter.Value --output text")
    printf '%s\\n' "demo:{password}" ;;
  *) echo "An error occurred (AccessDeniedException) when calling the operation" >&2; exit 254 ;;
esac
"""


@dataclass
class AuthRegistry:
    """A registry with basic auth: user demo (password) and user AWS (an ECR-style token)."""

    registry: Registry
    password: str
    token: str
    repository: str  # team/small:1.0@sha256:...

    def ref(self, host: str) -> str:
        return f"{host}/{self.repository}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.registry.address}"


@pytest.fixture(scope="module")
def auth_registry() -> Iterator[AuthRegistry]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt through libxcrypt; the module is gone in Python 3.13
    base = short_tmp("mlc-a-")
    password, token = "s3cret-pw-" + base.name[-6:], "ecr-token-" + base.name[-6:] + "x" * 40
    (base / "htpasswd").write_text("".join(
        f"{user}:{crypt.crypt(secret, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n"  # noqa: S324
        for user, secret in (("demo", password), ("AWS", token))))
    try:
        with Registry(base / "storage", htpasswd=base / "htpasswd") as running:
            layout = build_layout(DEMO_IMAGES["small"], default_cache_dir())
            target = f"docker://{running.address}/team/small:1.0"
            subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds",
                            f"demo:{password}", f"oci:{layout}:1.0", target], check=True)
            inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--creds", f"demo:{password}", target],
                                     capture_output=True, text=True, check=True).stdout
            yield AuthRegistry(running, password, token, f"team/small:1.0@{json.loads(inspect)['Digest']}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def fake_aws(builder: Builder, auth: AuthRegistry) -> tuple[str, Path]:
    """A PATH whose `aws` is the stand-in (and whose python3 is no pyenv shim: a shim would put
    pyenv's own, real aws first on PATH); returns it and the stand-in's argv log."""
    bin_dir = builder.base / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = builder.base / "aws.log"
    (bin_dir / "aws").write_text(FAKE_AWS.format(log=log, token=auth.token, arn=SECRET_ARN, password=auth.password))
    (bin_dir / "aws").chmod(0o755)
    if not (bin_dir / "python3").exists():
        (bin_dir / "python3").symlink_to(sys.executable)
    return f"{bin_dir}:{os.environ['PATH']}", log


def _processes_exposing(needle: str, found: list[str], stop: threading.Event) -> None:
    """Every process's argv and environment, polled until `stop`: where the needle shows, noted."""
    needle_bytes = needle.encode()
    while not stop.is_set():
        for entry in Path("/proc").glob("[0-9]*"):
            for name in ("cmdline", "environ"):
                try:
                    data = (entry / name).read_bytes()
                except OSError:
                    continue
                if needle_bytes in data:
                    found.append(f"{entry.name}/{name}: " + data.replace(b"\0", b" ").decode(errors="replace"))
        time.sleep(0.005)


def run_watched(builder: Builder, spec: dict, secret: str, **env: str) -> tuple[subprocess.CompletedProcess[str],
                                                                                  list[str]]:
    found: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_processes_exposing, args=(secret, found, stop), daemon=True)
    watcher.start()
    try:
        proc = builder.run(spec, via="ssm", **env)
    finally:
        stop.set()
        watcher.join()
    return proc, found


def test_the_watcher_sees_a_secret_in_argv_and_in_an_environment() -> None:
    """The scan the tests below rely on does find a secret where one shows."""
    needle = "needle-" + os.urandom(6).hex()
    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", needle]),
                subprocess.Popen(["sleep", "30"], env={**os.environ, "REGISTRY_PASSWORD": needle})]
    found: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_processes_exposing, args=(needle, found, stop), daemon=True)
    watcher.start()
    time.sleep(0.3)
    stop.set()
    watcher.join()
    for child in children:
        child.kill()
        child.wait()
    assert {entry.split(":")[0].split("/")[1] for entry in found} == {"cmdline", "environ"}
    assert {int(entry.split("/")[0]) for entry in found} == {child.pid for child in children}


@pytest.mark.parametrize(("source", "host", "credential"), [
    ("ecr", ECR_HOST, {"source": "ecr"}),
    ("secretsmanager", "registry.example.test", {"source": "secretsmanager", "secret_arn": SECRET_ARN}),
    ("ssm_secure_parameter", None, {"source": "ssm_secure_parameter", "parameter_name": "/ml-cache/registry/demo"}),
])
def test_each_source_pulls_a_private_image_and_the_secret_shows_nowhere(
        auth_registry: AuthRegistry, make_builder, source: str, host: str | None, credential: dict) -> None:
    """ecr and secretsmanager reach the registry through registry_endpoints under a made-up name;
    ssm_secure_parameter reaches it by its own address (ML_CACHE_PLAIN_HTTP_REGISTRIES)."""
    auth = auth_registry
    host = host or auth.registry.address
    ref = auth.ref(host)
    endpoints = {} if host == auth.registry.address else {host: auth.endpoint}
    builder = make_builder([auth.registry.address])
    path, aws_log = fake_aws(builder, auth)
    spec = builder.build_spec([ref], registry_credentials={host: credential}, registry_endpoints=endpoints)
    secret = auth.token if source == "ecr" else auth.password

    proc, exposed = run_watched(builder, spec, secret, PATH=path, AWS_REGION="us-west-2",
                                ML_CACHE_ECR_TOKEN_MAX_AGE_SECONDS="0")  # ecr: fetched again before the pull
    report = only_json_line(proc)
    assert report["images"] == [{"ref": ref, "digest": ref.split("@")[1], "unpacked": True,
                                 "bytes": report["images"][0]["bytes"]}]
    assert exposed == [], "the registry secret appeared in a process's argv or environment"
    assert secret not in proc.stderr and secret not in proc.stdout
    calls = aws_log.read_text().splitlines()
    assert len(calls) == (2 if source == "ecr" else 1) and all(call.startswith(source.split("_")[0]) for call in calls)
    assert f"fetching credentials for {host} from {source}" in proc.stderr
    assert "1 of 1 image(s) prefetched" in proc.stderr  # the prefetch used the same endpoint and credentials
    assert_quiet_machine(builder)

    # Cached under its own name (the bytes came from the endpoint), every name pinned.
    with builder.open_volume() as containerd:
        listing = containerd.ctr("images", "ls", check=True).stdout
        name, digest = ref.split("@")
        for stored in (ref, f"{name.rsplit(':', 1)[0]}@{digest}", name):
            row = next(line for line in listing.splitlines() if line.split()[0] == stored)
            assert "io.cri-containerd.pinned=pinned" in row and "io.cri-containerd.image=managed" in row
        assert auth.registry.address not in listing or not endpoints
    volumes.unmount(builder.base / "reopened" / "root")


def test_private_registry_without_credentials_fails_once_naming_the_ref(auth_registry, make_builder) -> None:
    auth = auth_registry
    builder = make_builder([])
    ref = auth.ref("registry.example.test")
    proc = builder.run(builder.build_spec([ref], registry_endpoints={"registry.example.test": auth.endpoint}))
    assert proc.returncode != 0
    assert ref in proc.stderr and "401 Unauthorized" in proc.stderr and "1 attempt(s)" in proc.stderr
    assert_quiet_machine(builder)


@pytest.mark.parametrize(("host", "credential", "named"), [
    ("registry.example.test", {"source": "ssm_secure_parameter", "parameter_name": "/ml-cache/registry/missing"},
     "ssm_secure_parameter /ml-cache/registry/missing"),
    ("registry.example.test", {"source": "secretsmanager",
                               "secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:other-AbCdEf"},
     "secretsmanager arn:aws:secretsmanager:eu-west-1:123456789012:secret:other-AbCdEf"),
    ("210987654321.dkr.ecr.eu-west-1.amazonaws.com", {"source": "ecr"}, "ecr"),  # no token in that region
])
def test_a_failed_fetch_fails_before_the_volume_is_touched(auth_registry, make_builder, host: str,
                                                           credential: dict, named: str) -> None:
    auth = auth_registry
    builder = make_builder([])
    path, _ = fake_aws(builder, auth)
    spec = builder.build_spec([auth.ref(host)], registry_credentials={host: credential},
                              registry_endpoints={host: auth.endpoint})
    proc = builder.run(spec, PATH=path, AWS_REGION="us-west-2")
    assert proc.returncode != 0 and proc.stdout == ""
    assert f"cannot use the credentials for {host} from {named}: An error occurred (AccessDeniedException)" \
        in proc.stderr
    assert "formatting" not in proc.stderr
    assert subprocess.run(["blkid", "-p", builder.device], capture_output=True, check=False).returncode == 2
    assert_quiet_machine(builder)
