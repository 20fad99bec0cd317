"""The builder spec contract: Airflow's build_spec and the builder's parser read one schema."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import jsonschema
import pytest

from ml_cache.builder_spec import (
    SCHEMA_PATH,
    build_spec,
    credential_shapes,
    encode_spec,
    spec_schema,
    validate_registry_credentials,
    validate_registry_endpoints,
)
from ml_cache.images import InvalidInputs, parse_reference
from ml_cache.registry import ResolvedImage
from ml_cache.resolution import image_resolution
from ml_cache.settings import load_config, resolve_build_settings

REPO = Path(__file__).resolve().parents[3]
HELPERS = REPO / "plugins" / "ml_cache" / "scripts" / "build_cache_helpers.py"
VOL = "vol-0123456789abcdef0"
SHA = "sha256:" + "0" * 64
ECR = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
NGC_ARN = "arn:aws:secretsmanager:us-west-2:111122223333:secret:ngc-AbCdEf"
HOSTILE = "registry.example.com/x:1;$(touch /tmp/pwned)`id`'\"\n"
DEFAULTS = {"images": [f"nvcr.io/nvidia/pytorch:24.05-py3@{SHA}"], "platform": "linux/amd64", "volume_id": VOL,
            "parallel": 3, "registry_credentials": {"nvcr.io": {"source": "secretsmanager", "secret_arn": NGC_ARN}},
            "registry_endpoints": {"nvcr.io": "https://nvcr-mirror.example.com"}}


def spec_with(**changes: object) -> dict:
    return build_spec("build", **{**DEFAULTS, **changes})


def parse_on_builder(spec_file: Path) -> subprocess.CompletedProcess[str]:
    """What build_cache.sh runs on the builder before it touches the volume."""
    return subprocess.run(["python3", str(HELPERS), "parse-spec", str(spec_file)], capture_output=True, text=True,
                          check=False)


def resolved(ref: str, digest: str, authenticated: str) -> ResolvedImage:
    return ResolvedImage(ref=ref, digest=digest, platform_digest=digest, platform="linux/amd64",
                         compressed_bytes=1000, authenticated=authenticated)


def test_settings_to_resolution_to_spec_to_the_builders_parser(tmp_path: Path) -> None:
    """The settings' credentials become per-host references, the refs pinned ones, and the builder reads them."""
    config = load_config(str(REPO / "plugins/ml_cache/defaults/ml_container_cache.yaml"))
    config["aws"]["registry_credentials"] = {ECR: {"source": "ecr"},
                                             "nvcr.io": {"source": "secretsmanager", "secret_arn": NGC_ARN},
                                             "ghcr.io": {"source": "anonymous"}}
    config["aws"]["registry_endpoints"] = {ECR: "http://127.0.0.1:5000"}
    config["build"]["allowed_registries"] += ["ghcr.io", ECR]
    config["aws"]["subnet_ids"] = ["subnet-0123456789abcdef0"]
    refs = ["nvcr.io/nvidia/pytorch:24.05-py3", f"{ECR}/team/train:v1", f"ghcr.io/team/app@{SHA}"]
    settings = resolve_build_settings(config, {"images": refs}, region="us-west-2")
    digests = ["sha256:" + c * 64 for c in "12"] + [SHA]
    sources = ("secretsmanager", "ecr", "anonymous")
    resolution = image_resolution(settings, [resolved(*image) for image in zip(refs, digests, sources, strict=True)])
    spec = build_spec("build", images=resolution.pinned_images, platform=settings.platform, volume_id=VOL,
                      parallel=settings.build.pull_parallelism, registry_credentials=resolution.registry_credentials,
                      registry_endpoints=resolution.registry_endpoints)
    # as on the builder: SSM_spec (base64) decoded to a file
    (tmp_path / "spec.json").write_bytes(base64.b64decode(encode_spec(spec)))
    proc = parse_on_builder(tmp_path / "spec.json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "action=build", f"volume_id={VOL}", "platform=linux/amd64", "parallel=0",  # 0: the builder's vCPUs
        f"image=nvcr.io/nvidia/pytorch:24.05-py3@{digests[0]}", f"image={ECR}/team/train:v1@{digests[1]}",
        f"image=ghcr.io/team/app@{SHA}",
        f"credential={ECR} ecr us-west-2 -", f"credential=nvcr.io secretsmanager us-west-2 {NGC_ARN}",
        f"endpoint={ECR} http://127.0.0.1:5000",
    ]


def test_build_spec_is_the_documented_shape() -> None:
    spec = build_spec("quiesce", **DEFAULTS)
    assert spec == {"action": "quiesce", **DEFAULTS}
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(spec)
    assert spec["registry_credentials"] is not DEFAULTS["registry_credentials"]  # a copy, not the settings' dict


@pytest.mark.parametrize(("changes", "message"), [
    ({"images": [f"nvcr.io/a:1@{SHA}", HOSTILE]},
     r"builder spec\['images'\]\[1\]: .*x:1;\$\(touch.* is not an image reference pinned by digest"),
    ({"images": ["busybox:1"]}, r"spec\['images'\]\[0\]: 'busybox:1' is not an image reference pinned by digest"),
    ({"images": ["nvcr.io/nvidia/pytorch:24.05-py3"]}, r"'nvcr.io/nvidia/pytorch:24.05-py3' is not an image "
                                                       r"reference pinned by digest"),
    ({"images": []}, r"spec\['images'\]: \[\] should be non-empty"),
    ({"platform": "linux/s390x"}, r"spec\['platform'\]: 'linux/s390x' is not linux/amd64 or linux/arm64"),
    ({"volume_id": "vol-1"}, r"spec\['volume_id'\]: 'vol-1' is not an EBS volume id"),
    ({"parallel": 0}, r"spec\['parallel'\]: 0 is less than the minimum of 1"),
    ({"registry_credentials": {"nvcr.io": "/ml-cache/ngc"}},
     r"spec\['registry_credentials'\]\['nvcr.io'\]: '/ml-cache/ngc' matches none of the allowed shapes"),
    ({"registry_credentials": {"*.dkr.ecr.*.amazonaws.com": {"source": "ecr"}}},
     r"'\*.dkr.ecr.\*.amazonaws.com' is not a registry host\[:port\]"),  # the spec holds exact hosts
    ({"registry_endpoints": {"nvcr.io": "nvcr-mirror.example.com"}},
     r"spec\['registry_endpoints'\]\['nvcr.io'\]: 'nvcr-mirror.example.com' is not a registry URL"),
])
def test_build_spec_rejects_naming_the_path_and_value(changes: dict, message: str) -> None:
    with pytest.raises(InvalidInputs, match=message):
        spec_with(**changes)
    with pytest.raises(InvalidInputs, match=r"spec\['action'\]: 'rebuild' is not one of"):
        build_spec("rebuild", **DEFAULTS)


def test_spec_is_one_base64_token_whatever_the_refs_contain() -> None:
    encoded = encode_spec({"action": "build", "images": [HOSTILE], "volume_id": VOL})
    assert set(encoded) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
    assert json.loads(base64.b64decode(encoded))["images"] == [HOSTILE]


# ---- registry credentials: the config's shape is the schema's ----


def test_credentials_in_the_schemas_shape_pass() -> None:
    credentials = {"nvcr.io": {"source": "secretsmanager", "secret_arn": NGC_ARN},
                   "*.dkr.ecr.*.amazonaws.com": {"source": "ecr"}, "docker.io": {"source": "anonymous"},
                   "localhost:5000": {"source": "ssm_secure_parameter", "parameter_name": "ml-cache-local"}}
    assert validate_registry_credentials(credentials) == credentials
    assert validate_registry_credentials({}) == {}


SHAPES = ('{"source": "ecr"}, {"source": "secretsmanager", "secret_arn": "<a Secrets Manager secret ARN>"}, '
          '{"source": "ssm_secure_parameter", "parameter_name": "<an SSM parameter name>"}, {"source": "anonymous"}')


@pytest.mark.parametrize(("value", "message"), [
    (["nvcr.io"], "registry_credentials must be a mapping of registry host to credential source"),
    ({"nvcr.io": "/ml-cache/ngc"},
     r"\['nvcr.io'\]: '/ml-cache/ngc' matches none of the allowed shapes; a credential is one of"),
    ({"nvcr.io": {"ssm_secure_parameter": "/ml-cache/ngc"}},  # the shape before the source key
     r"\['nvcr.io'\]: \{'ssm_secure_parameter': '/ml-cache/ngc'\} matches none of the allowed shapes; a credential"),
    ({"nvcr.io": {"source": "secretsmanager", "secret_arn": "ngc"}},
     r"\['nvcr.io'\]\['secret_arn'\]: 'ngc' is not a Secrets Manager secret ARN"),
    ({"nvcr.io": {"source": "secretsmanager"}},
     r"\['nvcr.io'\]: \{'source': 'secretsmanager'\} is not a secretsmanager credential; "
     r'write it as \{"source": "secretsmanager", "secret_arn": "<a Secrets Manager secret ARN>"\}'),
    ({"nvcr.io": {}}, r"\['nvcr.io'\]: \{\} matches none of the allowed shapes"),
    ({"bad host/": {"source": "ecr"}}, r"registry 'bad host/' is not a registry host\[:port\], or a pattern"),
])
def test_bad_credentials_name_the_registry_and_the_problem(value: object, message: str) -> None:
    with pytest.raises(InvalidInputs, match=message):
        validate_registry_credentials(value)


def test_credential_shapes_come_from_the_schema() -> None:
    assert ", ".join(credential_shapes()) == SHAPES


def test_endpoints_are_urls_by_exact_host() -> None:
    endpoints = {ECR: "http://127.0.0.1:5000", "docker.io": "https://mirror.example.com:8443"}
    assert validate_registry_endpoints(endpoints) == endpoints
    assert validate_registry_endpoints({"NVCR.io": "https://m.example.com"}) == {"nvcr.io": "https://m.example.com"}
    with pytest.raises(InvalidInputs, match=r"registry_endpoints names 'nvcr\.io' twice \(spelled 'NVCR\.io' too\)"):
        validate_registry_endpoints({"nvcr.io": "https://a.example.com", "NVCR.io": "https://b.example.com"})
    with pytest.raises(InvalidInputs, match=r"registry_endpoints\['docker.io'\]: 'https://m.example.com/v2' is not"):
        validate_registry_endpoints({"docker.io": "https://m.example.com/v2"})
    with pytest.raises(InvalidInputs, match=r"registry_endpoints: '\*.example.com' is not a registry host"):
        validate_registry_endpoints({"*.example.com": "https://m.example.com"})


# ---- image refs: the schema is the builder's narrowing of images.py's grammar ----

BOTH_ACCEPT = [
    "busybox", "nvcr.io/nvidia/pytorch:24.05-py3", "public.ecr.aws/docker/library/busybox:1.37",
    "123456789012.dkr.ecr.us-west-2.amazonaws.com/team/train:v1", f"localhost:5000/a/b@{SHA}",
    f"ghcr.io/a/b_c__d--e.f:1@{SHA}", "localhost/a:1", "registry.k8s.io/pause:3.10",
    "quay.io/a/b:" + "t" * 128, "docker.io/library/busybox@sha512:" + "a" * 128,
]
IMAGES_ONLY = [  # images.py accepts these, the builder cannot pull them: the schema rejects
    "[::1]:5000/a:1", "r.example.com:123456/a:1", "r.example.com/a@sha384:" + "a" * 96,
]
BOTH_REJECT = ["r.example.com/A:1", "r.example.com/a:1;id", "r.example.com/a:-x", f"r.example.com/a@{SHA[:-1]}"]


@pytest.mark.parametrize("ref", BOTH_ACCEPT + IMAGES_ONLY + BOTH_REJECT)
def test_schema_refs_agree_with_images_py(ref: str) -> None:
    image_ref = jsonschema.Draft202012Validator({**spec_schema()["$defs"]["image_ref"], "$defs": {}})
    try:
        canonical = str(parse_reference(ref))
    except InvalidInputs:
        canonical = None
    if ref in BOTH_REJECT:
        assert canonical is None and not image_ref.is_valid(ref)
    else:
        assert canonical is not None
        assert image_ref.is_valid(canonical) is (ref in BOTH_ACCEPT)
