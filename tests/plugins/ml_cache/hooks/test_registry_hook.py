"""CacheRegistryHook against a real docker-registry with htpasswd (credentials from moto), the local
cloud's ECR-style registry (tokens from its GetAuthorizationToken) and, for what those cannot do on
demand (429, bearer realm, lying digest header), a protocol-level one."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from airflow.sdk.log import redact
from throttling_registry import CONFIG, LAYER_SIZES, MANIFEST_DIGEST, REPOSITORY, TOKEN, Behaviour, ThrottlingRegistry

from devstack.demo_images import DemoImage, build_layout, default_cache_dir, machine_architecture
from devstack.process import free_port
from devstack.registry import Registry
from ml_cache.hooks.registry import CacheRegistryHook
from ml_cache.registry import ImageResolutionFailed

MISSING = next((tool for tool in ("docker-registry", "skopeo", "busybox") if shutil.which(tool) is None), None)
PLATFORM = f"linux/{machine_architecture()}"
OTHER_ARCHITECTURE = "arm64" if machine_architecture() == "amd64" else "amd64"
SMALL = DemoImage("small")
MULTI = DemoImage("multi", extra_architectures=(OTHER_ARCHITECTURE,))
needs_registry = pytest.mark.skipif(MISSING is not None, reason=f"{MISSING} not installed")


@dataclass
class Served:
    registry: Registry
    password: str
    layouts: dict[str, Path]  # image name -> OCI layout pushed
    digests: dict[str, str]  # image name -> digest the push returned

    def ref(self, name: str, host: str | None = None) -> str:
        return f"{host or self.registry.address}/ml-cache-demo/{name}:1.0"

    def endpoints(self) -> dict[str, str]:
        url = f"http://{self.registry.address}"
        return {self.registry.address: url}


def _blob(layout: Path, digest: str) -> dict:
    return json.loads((layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_text())


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """docker-registry with basic auth: user demo (its login is what the secrets hold)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt through libxcrypt; the module is gone in Python 3.13

    base = Path(tempfile.mkdtemp(prefix="mlc-hook-"))
    password = "s3cret-pw-" + base.name[-6:]
    users = {"demo": password}
    (base / "htpasswd").write_text("".join(
        f"{user}:{crypt.crypt(secret, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n" for user, secret in users.items()))  # noqa: S324
    try:
        with Registry(base / "storage", htpasswd=base / "htpasswd") as registry:
            layouts, digests = {}, {}
            for image in (SMALL, MULTI):
                layouts[image.name] = build_layout(image, default_cache_dir())
                subprocess.run(["skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false", "--dest-creds",
                                f"demo:{password}", "--digestfile", str(base / "digest"),
                                f"oci:{layouts[image.name]}:1.0",
                                f"docker://{registry.address}/ml-cache-demo/{image.name}:1.0"], check=True)
                digests[image.name] = (base / "digest").read_text().strip()
            yield Served(registry, password, layouts, digests)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def secret_arn(moto_conn, served: Served) -> str:
    """A Secrets Manager secret with the registry's login, in moto."""
    name = f"ml-cache/registry/{time.monotonic_ns()}"
    value = json.dumps({"username": "demo", "password": served.password})
    return moto_conn.client("secretsmanager").create_secret(Name=name, SecretString=value)["ARN"]


def _hook(conn_id: str, served: Served, credentials: dict, **kwargs) -> CacheRegistryHook:
    return CacheRegistryHook(aws_conn_id=conn_id, credentials=credentials, endpoints=served.endpoints(), **kwargs)


def _failure(error: pytest.ExceptionInfo[ImageResolutionFailed]) -> tuple[str, str, str]:
    assert len(error.value.failures) == 1
    return error.value.failures[0]


# --- the real registry -------------------------------------------------------------------------

@needs_registry
def test_single_arch_tag_resolves_through_a_secretsmanager_secret_without_showing_the_password(
        moto_conn, served: Served, secret_arn: str, caplog, capfd) -> None:
    caplog.set_level(logging.DEBUG)
    hook = _hook(moto_conn.conn_id, served, {served.registry.address: {"source": "secretsmanager",
                                                                        "secret_arn": secret_arn}})
    image = hook.resolve(served.ref("small"), PLATFORM)

    manifest = _blob(served.layouts["small"], served.digests["small"])
    assert image.digest == image.platform_digest == served.digests["small"]
    assert image.compressed_bytes == manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    assert image.authenticated == "secretsmanager"
    assert image.pinned == f"{served.ref('small')}@{served.digests['small']}"
    out, err = capfd.readouterr()
    assert served.password not in caplog.text + out + err
    assert f"{served.digests['small']} ({PLATFORM} manifest" in caplog.text + out  # the log says what was resolved
    assert redact(f"login {served.password} used") == "login *** used"  # a slip in any task log is masked


@needs_registry
def test_multi_arch_tag_resolves_to_the_index_and_each_platform_manifest(moto_conn, served: Served,
                                                                         secret_arn: str) -> None:
    hook = _hook(moto_conn.conn_id, served, {"127.0.0.*:*": {"source": "secretsmanager", "secret_arn": secret_arn}})
    index = _blob(served.layouts["multi"], served.digests["multi"])
    by_architecture = {entry["platform"]["architecture"]: entry["digest"] for entry in index["manifests"]}

    images = hook.resolve_all([served.ref("multi")] * 2, PLATFORM)
    other = hook.resolve(served.ref("multi"), f"linux/{OTHER_ARCHITECTURE}")

    assert images[0].digest == other.digest == served.digests["multi"]
    assert images[0].platform_digest == by_architecture[machine_architecture()]
    assert other.platform_digest == by_architecture[OTHER_ARCHITECTURE]
    manifest = _blob(served.layouts["multi"], other.platform_digest)
    assert other.compressed_bytes == manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])


@needs_registry
def test_ref_pinned_by_digest_keeps_that_digest_and_its_tag(moto_conn, served: Served, secret_arn: str) -> None:
    hook = _hook(moto_conn.conn_id, served, {served.registry.address: {"source": "secretsmanager",
                                                                        "secret_arn": secret_arn}})
    ref = f"{served.ref('multi')}@{served.digests['multi']}"
    image = hook.resolve(ref, PLATFORM)
    assert image.digest == served.digests["multi"] and image.pinned == ref


@needs_registry
def test_ssm_secure_parameter_login_resolves(moto_conn, served: Served) -> None:
    name = f"/ml-cache/registry/demo-{time.monotonic_ns()}"
    moto_conn.client("ssm").put_parameter(Name=name, Value=f"demo:{served.password}", Type="SecureString")
    hook = _hook(moto_conn.conn_id, served, {served.registry.address: {"source": "ssm_secure_parameter",
                                                                        "parameter_name": name}})
    assert hook.resolve(served.ref("small"), PLATFORM).authenticated == "ssm_secure_parameter"


def test_ecr_host_gets_a_token_for_its_account_through_the_endpoint_mapping(ecr_registry, registry_faults,
                                                                            monkeypatch) -> None:
    """The local cloud's ECR registry takes only tokens its GetAuthorizationToken issued, unexpired."""
    monkeypatch.setenv("AIRFLOW_CONN_ECR_LOCAL", json.dumps(
        {"conn_type": "aws", "login": "testing", "password": "testing",
         "extra": {"region_name": "us-west-2", "endpoint_url": ecr_registry.cloud_endpoint}}))
    hook = CacheRegistryHook(aws_conn_id="ecr_local", credentials={"*.dkr.ecr.*.amazonaws.com": {"source": "ecr"}},
                             endpoints=ecr_registry.endpoints)
    ref, digest = ecr_registry.image.split("@")
    image = hook.resolve(ref, PLATFORM)  # a token of the host's region (us-east-2), not the connection's
    assert (image.authenticated, image.digest) == ("ecr", digest)

    registry_faults(ecr_token_seconds=0)  # every new token has expired already
    fresh = CacheRegistryHook(aws_conn_id="ecr_local", credentials={ecr_registry.host: {"source": "ecr"}},
                              endpoints=ecr_registry.endpoints)
    with pytest.raises(ImageResolutionFailed) as error:
        fresh.resolve(ref, PLATFORM)
    failed_ref, reason, detail = _failure(error)
    assert (failed_ref, reason) == (ref, "unauthorized")
    assert "Your authorization token has expired" in detail


@needs_registry
def test_wrong_password_is_unauthorized_with_the_registry_message_and_no_secret(moto_conn, served: Served,
                                                                               caplog, capfd) -> None:
    wrong = "not-the-password-4711"
    arn = moto_conn.client("secretsmanager").create_secret(
        Name=f"ml-cache/wrong/{time.monotonic_ns()}",
        SecretString=json.dumps({"username": "demo", "password": wrong}))["ARN"]
    hook = _hook(moto_conn.conn_id, served, {served.registry.address: {"source": "secretsmanager", "secret_arn": arn}})
    with pytest.raises(ImageResolutionFailed) as error:
        hook.resolve(served.ref("small"), PLATFORM)
    ref, reason, detail = _failure(error)
    assert (ref, reason) == (served.ref("small"), "unauthorized")
    assert "HTTP 401: UNAUTHORIZED: authentication required" in detail
    out, err = capfd.readouterr()
    assert wrong not in str(error.value) + caplog.text + out + err


@needs_registry
def test_anonymous_against_a_private_registry_is_unauthorized(served: Served) -> None:
    hook = _hook(None, served, {})
    with pytest.raises(ImageResolutionFailed) as error:
        hook.resolve(served.ref("small"), PLATFORM)
    assert _failure(error)[1] == "unauthorized"


@needs_registry
def test_every_failure_is_listed_once_with_its_reason(moto_conn, served: Served, secret_arn: str) -> None:
    hook = _hook(moto_conn.conn_id, served, {served.registry.address: {"source": "secretsmanager",
                                                                        "secret_arn": secret_arn}})
    missing_tag = served.ref("small").replace(":1.0", ":2.0")
    refs = [served.ref("small"), missing_tag, served.ref("multi"), served.ref("small")]
    with pytest.raises(ImageResolutionFailed) as error:
        hook.resolve_all(refs, "linux/s390x")
    assert [(ref, reason) for ref, reason, _ in error.value.failures] == [
        (served.ref("small"), "no such platform"), (missing_tag, "not found"),
        (served.ref("multi"), "no such platform"), (served.ref("small"), "no such platform")]
    assert "MANIFEST_UNKNOWN" in error.value.failures[1][2]
    assert f"linux/{OTHER_ARCHITECTURE}" in error.value.failures[2][2]  # what the index does offer
    assert f"{missing_tag}: not found" in str(error.value)


@needs_registry
def test_missing_secret_is_unauthorized_naming_the_secret(moto_conn, served: Served) -> None:
    arn = "arn:aws:secretsmanager:us-east-2:123456789012:secret:ml-cache/absent-AbCdEf"
    hook = _hook(moto_conn.conn_id, served, {served.registry.address: {"source": "secretsmanager", "secret_arn": arn}})
    with pytest.raises(ImageResolutionFailed) as error:
        hook.resolve(served.ref("small"), PLATFORM)
    _, reason, detail = _failure(error)
    assert reason == "unauthorized" and "ResourceNotFoundException" in detail and "secretsmanager" in detail


# --- protocol level: throttling, bearer realm, digests ------------------------------------------

def _fake_hook(registry: ThrottlingRegistry, credentials: dict | None = None, conn_id: str | None = None,
               **kwargs) -> CacheRegistryHook:
    return CacheRegistryHook(aws_conn_id=conn_id, credentials=credentials or {},
                             endpoints={"registry.example.com": registry.url}, **kwargs)


FAKE_REF = f"registry.example.com/{REPOSITORY}:1.0"


def test_429_twice_with_retry_after_then_resolved_after_about_two_seconds() -> None:
    with ThrottlingRegistry(Behaviour(throttle=2, retry_after="1")) as registry:
        started = time.monotonic()
        image = _fake_hook(registry).resolve(FAKE_REF, "linux/amd64")
        elapsed = time.monotonic() - started
        times = registry.behaviour.manifest_times
    assert image.digest == MANIFEST_DIGEST
    assert image.compressed_bytes == len(CONFIG) + sum(LAYER_SIZES)
    assert len(times) == 3 and 2.0 <= elapsed < 4.0
    assert all(later - earlier >= 0.95 for earlier, later in itertools.pairwise(times))


def test_429_forever_is_rate_limited_after_max_attempts() -> None:
    with ThrottlingRegistry(Behaviour(throttle=-1, retry_after="0")) as registry:
        with pytest.raises(ImageResolutionFailed) as error:
            _fake_hook(registry, max_attempts=3).resolve(FAKE_REF, "linux/amd64")
        attempts = len(registry.behaviour.manifest_times)
    ref, reason, detail = _failure(error)
    assert (ref, reason, attempts) == (FAKE_REF, "rate-limited", 3)
    assert "HTTP 429 after 3 attempt(s)" in detail and "pull rate limit" in detail


def test_retry_after_as_an_http_date_is_capped() -> None:
    in_an_hour = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    with ThrottlingRegistry(Behaviour(throttle=1, retry_after=in_an_hour)) as registry:
        started = time.monotonic()
        _fake_hook(registry, max_retry_after_seconds=0.5).resolve(FAKE_REF, "linux/amd64")
    assert 0.5 <= time.monotonic() - started < 2.0


def test_bearer_realm_gets_a_token_with_the_basic_login_of_the_secret(moto_conn) -> None:
    password = "ngc-api-key-0123456789"
    arn = moto_conn.client("secretsmanager").create_secret(
        Name=f"ml-cache/ngc/{time.monotonic_ns()}",
        SecretString=json.dumps({"username": "$oauthtoken", "password": password}))["ARN"]
    credentials = {"registry.example.com": {"source": "secretsmanager", "secret_arn": arn}}
    with ThrottlingRegistry(Behaviour(login=("$oauthtoken", password))) as registry:
        image = _fake_hook(registry, credentials, moto_conn.conn_id).resolve(FAKE_REF, "linux/amd64")
        token_requests = registry.behaviour.token_requests
    assert image.digest == MANIFEST_DIGEST and image.authenticated == "secretsmanager"
    assert token_requests == ["Basic " + base64.b64encode(f"$oauthtoken:{password}".encode()).decode()]
    assert TOKEN not in image.model_dump_json()


def test_bearer_realm_refusing_the_login_is_unauthorized() -> None:
    with ThrottlingRegistry(Behaviour(login=("user", "other"))) as registry, \
            pytest.raises(ImageResolutionFailed) as error:
        _fake_hook(registry).resolve(FAKE_REF, "linux/amd64")
    assert _failure(error)[1] == "unauthorized"
    assert registry.behaviour.token_requests == [""]  # anonymous: asked the realm without a login


def test_a_digest_header_that_does_not_match_the_content_is_an_invalid_manifest() -> None:
    with ThrottlingRegistry(Behaviour(lie_about_digest=True)) as registry, \
            pytest.raises(ImageResolutionFailed) as error:
        _fake_hook(registry).resolve(FAKE_REF, "linux/amd64")
    _, reason, detail = _failure(error)
    assert reason == "invalid manifest" and MANIFEST_DIGEST in detail


def test_a_closed_port_is_unreachable_after_the_retries() -> None:
    hook = CacheRegistryHook(aws_conn_id=None, credentials={}, max_attempts=2,
                             endpoints={"registry.example.com": f"http://127.0.0.1:{free_port()}"})
    started = time.monotonic()
    with pytest.raises(ImageResolutionFailed) as error:
        hook.resolve(FAKE_REF, "linux/amd64")
    _, reason, detail = _failure(error)
    assert reason == "unreachable" and "after 2 attempt(s)" in detail and "Connection refused" in detail
    assert 1.0 <= time.monotonic() - started < 5.0
