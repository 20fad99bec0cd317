"""build_cache_helpers.py: the spec check the builder runs, the report, the verify parsing.

No root, no containerd: `ctr` is a stand-in on PATH where one is needed.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from ml_cache.scripts import build_cache_helpers as helpers

HELPERS = Path(helpers.__file__)
SCHEMA = json.loads(helpers.SCHEMA_PATH.read_text())
VOL = "vol-0123456789abcdef0"
SHA = "sha256:" + "ab" * 32
REF = f"registry.example.com:5000/team/pytorch:24.05@{SHA}"
ECR = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
ARN = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:ml-cache/ngc-AbCdEf"
VALID = {"action": "build", "images": [REF], "platform": "linux/amd64", "volume_id": VOL, "parallel": 3,
         "registry_credentials": {"registry.example.com:5000": {"source": "ssm_secure_parameter",
                                                                "parameter_name": "/ml-cache/reg"}}}


def spec(**changes: object) -> dict:
    changed = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is None:
            changed.pop(key)
        else:
            changed[key] = value
    return changed


VALID_SPECS = [
    VALID,
    spec(parallel=None, registry_credentials=None),
    spec(parallel=3.0),  # JSON Schema: 3.0 is an integer
    spec(images=[REF, REF, f"localhost/a:1@{SHA}", f"docker.io/library/busybox:1.37@{SHA}", f"ghcr.io/a/b@{SHA}"]),
    spec(platform="linux/arm64/v8", parallel=32, registry_credentials={}),
    spec(registry_credentials={ECR: {"source": "ecr"}, "nvcr.io": {"source": "secretsmanager", "secret_arn": ARN},
                               "docker.io": {"source": "anonymous"}},
         registry_endpoints={ECR: "http://127.0.0.1:5000", "docker.io": "https://mirror.example.com"}),
    spec(registry_endpoints={}),
    {"action": "quiesce", "volume_id": VOL},
    spec(action="quiesce"),
]
INVALID_SPECS = [
    [],
    "build",
    {"action": "build", "volume_id": VOL, "platform": "linux/amd64"},  # build needs images
    {"action": "build", "volume_id": VOL, "images": [REF]},  # and a platform
    {"volume_id": VOL},
    spec(action="BUILD"),
    spec(action=None),
    spec(volume_id="vol-1"),
    spec(volume_id=f"{VOL}\n"),
    spec(platform="linux/s390x"),
    spec(platform="windows/amd64"),
    spec(parallel=0),
    spec(parallel=33),
    spec(parallel=True),
    spec(parallel="3"),
    spec(parallel=2.5),
    spec(images=[]),
    spec(images=REF),
    spec(images=[REF, 7]),
    spec(images=["registry.example.com/a:1;touch /tmp/x"]),
    spec(images=["registry.example.com/a/$(id):1"]),
    spec(images=["registry.example.com/a:`id`"]),
    spec(images=["registry.example.com/a:1\ntouch /tmp/x"]),
    spec(images=["registry.example.com/a:1\n"]),
    spec(images=["registry.example.com/a:1"]),  # not pinned by digest
    spec(images=[f"registry.example.com/a:1@{SHA}\n"]),
    spec(images=["busybox:1.37"]),  # no registry host
    spec(images=["team/busybox:1.37"]),  # "team" is not a host: no dot, port or localhost
    spec(images=["registry.example.com/a"]),  # neither tag nor digest
    spec(images=["registry.example.com/A:1"]),
    spec(images=["registry.example.com/a@sha256:abc"]),
    spec(images=["registry.example.com/" + "a" * 600 + ":1"]),
    spec(extra="x"),
    spec(registry_credentials=[]),
    spec(registry_credentials={"registry.example.com": "/ml-cache/reg"}),
    spec(registry_credentials={"registry.example.com": {"ssm_secure_parameter": "/ml-cache/reg"}}),  # old shape
    spec(registry_credentials={"registry.example.com": {"source": "ssm_secure_parameter", "parameter_name": "/a b"}}),
    spec(registry_credentials={"registry.example.com": {"source": "ssm_secure_parameter"}}),
    spec(registry_credentials={"registry.example.com": {"source": "ecr", "x": 1}}),
    spec(registry_credentials={"registry.example.com": {"source": "anonymous", "secret_arn": ARN}}),
    spec(registry_credentials={"registry.example.com": {"source": "secretsmanager"}}),
    spec(registry_credentials={"registry.example.com": {"source": "secretsmanager", "secret_arn": "arn:aws:x"}}),
    spec(registry_credentials={"registry.example.com": {"source": "vault"}}),
    spec(registry_credentials={"registry.example.com": {}}),
    spec(registry_credentials={"bad host;": {"source": "ecr"}}),
    spec(registry_credentials={"*.dkr.ecr.*.amazonaws.com": {"source": "ecr"}}),  # patterns: settings only
    spec(registry_endpoints=[]),
    spec(registry_endpoints={ECR: "ftp://127.0.0.1:5000"}),
    spec(registry_endpoints={ECR: "http://127.0.0.1:5000/v2"}),
    spec(registry_endpoints={ECR: 'http://a"]\n[x'}),
    spec(registry_endpoints={"bad host;": "http://127.0.0.1:5000"}),
]


def run_helpers(*args: str, stdin: str = "", env: dict[str, str] | None = None, python: str = "python3"
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, str(HELPERS), *args], input=stdin, capture_output=True, text=True,
                          env=env, check=False)


def parse(tmp_path: Path, value: object, python: str = "python3") -> subprocess.CompletedProcess[str]:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(value))
    return run_helpers("parse-spec", str(spec_file), python=python)


# ---- the mini validator agrees with jsonschema on the shipped schema ----


@pytest.mark.parametrize("value", VALID_SPECS + INVALID_SPECS, ids=range(len(VALID_SPECS + INVALID_SPECS)))
def test_mini_validator_agrees_with_jsonschema(value: object) -> None:
    expected_valid = value in VALID_SPECS
    assert jsonschema.Draft202012Validator(SCHEMA).is_valid(value) is expected_valid
    if expected_valid:
        helpers.SpecValidator(SCHEMA).validate(value)
    else:
        with pytest.raises(helpers.SpecError):
            helpers.SpecValidator(SCHEMA).validate(value)


def test_shipped_schema_is_a_valid_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_mini_validator_refuses_keywords_it_does_not_implement() -> None:
    with pytest.raises(helpers.SpecError, match="uniqueItems"):
        helpers.SpecValidator({"type": "array", "uniqueItems": True}).validate([1])
    with pytest.raises(helpers.SpecError, match="local"):
        helpers.SpecValidator({"$ref": "https://example.com/s.json"}).validate(1)


def test_one_of_reports_every_branch_when_none_matches() -> None:
    schema = {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 5}]}
    helpers.SpecValidator(schema).validate(7)
    with pytest.raises(helpers.SpecError, match=r"matches none of.*'string'.*minimum of 5"):
        helpers.SpecValidator(schema).validate(1)
    with pytest.raises(helpers.SpecError, match="more than one"):
        helpers.SpecValidator({"oneOf": [{"type": "integer"}, {"minimum": 0}]}).validate(1)


# ---- parse-spec, as the script runs it ----


def test_parse_spec_prints_safe_lines(tmp_path: Path) -> None:
    proc = parse(tmp_path, spec(images=[REF, f"localhost/a@{SHA}", REF], parallel=2.0))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "action=build", f"volume_id={VOL}", "platform=linux/amd64", "parallel=2",
        f"image={REF}", f"image=localhost/a@{SHA}",  # duplicates pulled once
        "credential=registry.example.com:5000 ssm_secure_parameter - /ml-cache/reg",
    ]


def test_parse_spec_prints_each_source_with_its_region_and_the_endpoints(tmp_path: Path) -> None:
    credentials = {ECR: {"source": "ecr"}, "nvcr.io": {"source": "secretsmanager", "secret_arn": ARN},
                   "docker.io": {"source": "anonymous"},
                   "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com": {"source": "ecr"},
                   "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn": {"source": "ecr"}}
    endpoints = {ECR: "http://127.0.0.1:5000", "docker.io": "https://mirror.example.com:8443"}
    proc = parse(tmp_path, spec(registry_credentials=credentials, registry_endpoints=endpoints))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[5:] == [
        f"credential={ECR} ecr us-west-2 -",
        f"credential=nvcr.io secretsmanager eu-central-1 {ARN}",  # anonymous: nothing to fetch
        "credential=123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com ecr us-gov-west-1 -",
        "credential=123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn ecr cn-north-1 -",
        f"endpoint={ECR} http://127.0.0.1:5000", "endpoint=docker.io https://mirror.example.com:8443",
    ]


@pytest.mark.parametrize(("host", "region"), [
    (ECR, "us-west-2"),
    ("123456789012.dkr.ecr.ap-southeast-3.amazonaws.com", "ap-southeast-3"),
    ("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com", "us-east-1"),
    ("123456789012.dkr.ecr.cn-northwest-1.amazonaws.com.cn", "cn-northwest-1"),
    ("123456789012.DKR.ECR.US-EAST-2.AMAZONAWS.COM", "us-east-2"),
    ("12345678901.dkr.ecr.us-west-2.amazonaws.com", None),  # accounts have 12 digits
    ("123456789012.dkr.ecr.us-west-2.amazonaws.com:443", None),
    ("123456789012.dkr.ecr.us-west-2.amazonaws.com.evil.example", None),
    ("public.ecr.aws", None),  # ECR Public: another API, anonymous pulls
    ("123456789012.dkr.ecr.uswest2.amazonaws.com", None),
    ("ghcr.io", None),
])
def test_ecr_host_rule_gives_the_region_of_the_token(host: str, region: str | None) -> None:
    assert helpers.ecr_region(host) == region


def test_parse_spec_refuses_ecr_as_the_source_of_another_registry(tmp_path: Path) -> None:
    proc = parse(tmp_path, spec(registry_credentials={"ghcr.io": {"source": "ecr"}}))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("invalid spec: spec['registry_credentials']['ghcr.io']: source ecr needs an ECR "
                                  "registry host (<account>.dkr.ecr.<region>.amazonaws.com), got 'ghcr.io'")


def test_parse_spec_defaults_and_quiesce(tmp_path: Path) -> None:
    assert parse(tmp_path, spec(parallel=None)).stdout.splitlines()[3] == "parallel=0"  # 0: the vCPUs
    proc = parse(tmp_path, {"action": "quiesce", "volume_id": VOL})
    assert proc.returncode == 0 and proc.stdout.splitlines() == ["action=quiesce", f"volume_id={VOL}"]


@pytest.mark.parametrize(("value", "message"), [
    (spec(images=[REF, "registry.example.com/a:1;id"]),
     "spec['images'][1]: 'registry.example.com/a:1;id' is not an image reference pinned by digest"),
    (spec(registry_credentials={"registry.example.com": "/ml-cache/reg"}),
     "spec['registry_credentials']['registry.example.com']: '/ml-cache/reg' is not of type 'object'"),
    (spec(images=["registry.example.com/a:1"]),
     "spec['images'][0]: 'registry.example.com/a:1' is not an image reference pinned by digest"),
    (spec(registry_endpoints={ECR: "ftp://x"}),
     f"spec['registry_endpoints']['{ECR}']: 'ftp://x' is not a registry URL like https://mirror.example.com"),
    (spec(registry_credentials={"nvcr.io": {"source": "secretsmanager"}}),
     "spec['registry_credentials']['nvcr.io']: 'secret_arn' is a required property"),
    (spec(registry_credentials={ECR: {"source": "ecr", "secret_arn": ARN}}),
     f"spec['registry_credentials']['{ECR}']: property 'secret_arn' is not allowed"),
    (spec(parallel=99), "spec['parallel']: 99 is greater than the maximum of 32"),
    (spec(extra=1), "spec: property 'extra' is not allowed"),
    ({"action": "build", "volume_id": VOL, "platform": "linux/amd64"}, "spec: 'images' is a required property"),
])
def test_parse_spec_rejects_naming_path_and_value(tmp_path: Path, value: dict, message: str) -> None:
    proc = parse(tmp_path, value)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"invalid spec: {message}"), proc.stderr


def test_parse_spec_rejects_unreadable_json(tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text("{not json")
    proc = run_helpers("parse-spec", str(tmp_path / "spec.json"))
    assert proc.returncode == 2 and "invalid spec: cannot read JSON" in proc.stderr


def python39() -> str | None:
    """A working Python 3.9 (on PATH, or installed by pyenv), the EKS AL2023 AMI's python3."""
    candidates = [shutil.which("python3.9"), *map(str, sorted(Path.home().glob(".pyenv/versions/3.9.*/bin/python3")))]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-V"], capture_output=True, check=False).returncode == 0:
            return candidate
    return None


def test_runs_on_the_builders_python_3_9(tmp_path: Path) -> None:
    python = python39()
    if python is None:
        pytest.skip("no Python 3.9 (the EKS AL2023 AMI's python3) installed")
    proc = parse(tmp_path, spec(), python=python)
    assert proc.returncode == 0, proc.stderr
    assert parse(tmp_path, spec(parallel=0), python=python).returncode == 2
    report = run_helpers("report", "quiesce", "schema=1", f"volume_id={VOL}", "device=d", "filesystem=none",
                         "xfs_repair=skipped", "unmounted=", python=python)
    assert json.loads(report.stdout)["unmounted"] == []


def test_unknown_subcommand_prints_usage() -> None:
    proc = run_helpers("frobnicate")
    assert proc.returncode == 64 and "usage:" in proc.stderr


# ---- report ----


PRUNED = {"removed_images": ["r.example.com/old:1"], "removed_images_total": 1, "reused_images": [],
          "reused_images_total": 0, "bytes_pruned": 10, "bytes_pulled": 20}


def test_build_report_is_one_json_line_with_phase_timings(tmp_path: Path) -> None:
    (tmp_path / "prune.json").write_text(json.dumps(PRUNED))
    rows = f"{REF}\t{SHA}\ttrue\t1500\talias\nlocalhost/a:1\t{SHA}\ttrue\t500\tlocalhost/a@{SHA}\n"
    proc = run_helpers("report", "build", "schema=1", "platform=linux/amd64", f"volume_id={VOL}",
                       "fs_used=9000", "restored=1", "reason=", "fs_before=1000", "fs_after=3000", "trimmed=1",
                       f"prune={tmp_path / 'prune.json'}", "started=100.0", "prepared=101.5", "pulled=110.25",
                       "verified=111", "quiesced=111.333", stdin=rows)
    assert proc.returncode == 0 and proc.stdout.count("\n") == 1
    report = json.loads(proc.stdout)
    assert report["images"] == [{"ref": REF, "digest": SHA, "unpacked": True, "bytes": 1500},
                                {"ref": "localhost/a:1", "digest": SHA, "unpacked": True, "bytes": 500}]
    assert report["totals"] == {"images": 2, "bytes": 2000, "filesystem_used_bytes": 9000}
    assert report["timings"] == {"prepare_seconds": 1.5, "pull_seconds": 8.75, "verify_seconds": 0.75,
                                 "quiesce_seconds": 0.33}
    assert (report["schema"], report["action"], report["status"], report["quiesced"]) == (1, "build", "ok", True)
    assert report["volume"] == {"restored": True, "reformatted_reason": None, "filesystem_bytes_before": 1000,
                                "filesystem_bytes_after": 3000, "grown": True, "trimmed": True, **PRUNED}


def test_report_of_a_reformatted_volume_keeps_the_reason_with_its_equal_signs(tmp_path: Path) -> None:
    (tmp_path / "prune.json").write_text(json.dumps(PRUNED))
    fields = {"restored": "0", "reason": "mount failed: a=b", "fs_before": "5", "fs_after": "5", "trimmed": "0",
              "prune": str(tmp_path / "prune.json")}
    assert helpers.volume_report(fields) == {
        "restored": False, "reformatted_reason": "mount failed: a=b", "filesystem_bytes_before": 5,
        "filesystem_bytes_after": 5, "grown": False, "trimmed": False, **PRUNED}


def test_prune_plan_keeps_the_new_names_and_old_versions_of_requested_repositories_until_after_the_pull() -> None:
    new, old, other = ("sha256:" + c * 64 for c in "abc")
    refs = [f"r.example.com/team/app:2@{new}", f"r.example.com/team/tool:1@{other}"]
    listed = {
        f"r.example.com/team/app:1@{old}": old, f"r.example.com/team/app@{old}": old,
        "r.example.com/team/app:2": old,  # the tag moved: its name stays, label_all points it at the new digest
        f"r.example.com/team/gone:1@{old}": old, "r.example.com/team/gone:1": old,
        f"r.example.com/team/tool:1@{other}": other, "r.example.com/team/tool-x:1": other,
    }
    now, later, reused = helpers.prune_plan(listed, refs)
    assert now == [f"r.example.com/team/gone:1@{old}", "r.example.com/team/gone:1", "r.example.com/team/tool-x:1"]
    assert later == [f"r.example.com/team/app:1@{old}", f"r.example.com/team/app@{old}"]
    assert reused == [f"r.example.com/team/tool:1@{other}"]
    assert helpers.prune_plan({}, refs) == ([], [], [])


def test_blob_sizes_reads_the_content_store_files(tmp_path: Path) -> None:
    assert helpers.blob_sizes(str(tmp_path)) == {}  # a fresh volume has no content store yet
    blobs = tmp_path / "io.containerd.content.v1.content" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / ("a" * 64)).write_bytes(b"x" * 7)
    assert helpers.blob_sizes(str(tmp_path)) == {"sha256:" + "a" * 64: 7}


def test_quiesce_report() -> None:
    proc = run_helpers("report", "quiesce", "schema=1", f"volume_id={VOL}", "device=/dev/nvme1n1",
                       "filesystem=xfs", "xfs_repair=ok", "unmounted=/a /b ")
    assert json.loads(proc.stdout) == {
        "schema": 1, "action": "quiesce", "status": "ok", "volume_id": VOL, "device": "/dev/nvme1n1",
        "mounted": False, "containerd_running": False, "filesystem": "xfs", "xfs_repair": "ok",
        "unmounted": ["/a", "/b"],
    }


# ---- verify: parsing ctr's tables and content, with a stand-in ctr ----


def test_ctr_table_alias_and_platform_matching() -> None:
    table = helpers.ctr_table("REF TYPE DIGEST\nr1 t1 d1\n\nr2 t2 d2\n")
    assert table == {"r1": ["r1", "t1", "d1"], "r2": ["r2", "t2", "d2"]}
    assert helpers.image_names(f"localhost:5000/a/b:1.0@{SHA}", SHA) == [
        f"localhost:5000/a/b:1.0@{SHA}", f"localhost:5000/a/b@{SHA}", "localhost:5000/a/b:1.0"]
    assert helpers.image_names(f"localhost:5000/b@{SHA}", SHA) == [f"localhost:5000/b@{SHA}"]
    assert helpers.image_names("localhost:5000/a/b:1.0", SHA) == ["localhost:5000/a/b:1.0", f"localhost:5000/a/b@{SHA}"]
    assert helpers.platform_matches({"os": "linux", "architecture": "arm64", "variant": "v8"}, ["linux", "arm64"])
    assert helpers.platform_matches({"os": "linux", "architecture": "arm64"}, ["linux", "arm64", "v8"])
    assert not helpers.platform_matches({"os": "linux", "architecture": "arm64", "variant": "v7"},
                                         ["linux", "arm64", "v8"])
    assert not helpers.platform_matches({"os": "linux", "architecture": "amd64"}, ["linux", "arm64"])


FAKE_CTR = """#!{python}
import json, sys
args = sys.argv[5:]
blobs = json.load(open({blobs!r}))
if args[:2] == ["images", "ls"]:
    print("REF TYPE DIGEST SIZE PLATFORMS LABELS")
    for ref, (media_type, digest) in blobs["images"].items():
        print(ref, media_type, digest, "1.0 MiB", "linux/amd64", "-")
elif args[:2] == ["images", "check"]:
    print("REF TYPE DIGEST STATUS SIZE UNPACKED")
    for ref, (media_type, digest) in blobs["images"].items():
        print(ref, media_type, digest, "complete", "(1/1)", "1.0 MiB/1.0 MiB", "true")
elif args[:2] == ["content", "get"]:
    print(json.dumps(blobs["content"][args[2]]))
else:
    sys.exit("unexpected " + " ".join(args))
"""


def test_verify_measures_the_platforms_manifest_and_rejects_another_platform(tmp_path: Path) -> None:
    index, amd, arm, cfg_amd, cfg_arm = ("sha256:" + c * 64 for c in "12345")
    manifest = "application/vnd.oci.image.manifest.v1+json"
    content = {
        index: {"manifests": [{"digest": arm, "platform": {"os": "linux", "architecture": "arm64"}},
                              {"digest": amd, "platform": {"os": "linux", "architecture": "amd64"}}]},
        amd: {"config": {"digest": cfg_amd, "size": 100}, "layers": [{"size": 1000}, {"size": 24}]},
        arm: {"config": {"digest": cfg_arm, "size": 100}, "layers": [{"size": 7}]},
        cfg_amd: {"os": "linux", "architecture": "amd64"},
        cfg_arm: {"os": "linux", "architecture": "arm64"},
    }
    multi, stale = f"r.example.com/multi:1@{index}", f"r.example.com/stale:1@{amd}"
    images = {multi: ["application/vnd.oci.image.index.v1+json", index],
              "r.example.com/arm:1": [manifest, arm], stale: [manifest, arm]}
    (tmp_path / "blobs.json").write_text(json.dumps({"images": images, "content": content}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ctr").write_text(FAKE_CTR.format(python=sys.executable, blobs=str(tmp_path / "blobs.json")))
    (bin_dir / "ctr").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    (tmp_path / "refs").write_text(f"{multi}\n")
    proc = run_helpers("verify", "/run/c.sock", "k8s.io", "linux/amd64", str(tmp_path / "refs"), env=env)
    assert proc.returncode == 0, proc.stderr
    names = f"{multi} r.example.com/multi@{index} r.example.com/multi:1"
    assert proc.stdout == f"{multi}\t{index}\ttrue\t1124\t{names}\n"

    (tmp_path / "refs").write_text(f"{multi}\nr.example.com/arm:1\nr.example.com/gone:1\n{stale}\n")
    proc = run_helpers("verify", "/run/c.sock", "k8s.io", "linux/amd64", str(tmp_path / "refs"), env=env)
    assert proc.returncode == 1
    assert "r.example.com/arm:1: image is for linux/arm64, not for platform linux/amd64" in proc.stderr
    assert "r.example.com/gone:1: not in the image store after pull" in proc.stderr
    assert f"{stale}: resolved to {arm}, not the pinned digest" in proc.stderr
    assert proc.stdout.startswith(f"{multi}\t")


# --- the pull path for the running containerd ------------------------------------------------------

CTR_VERSION_1_6 = """Client:
  Version:  1.6.20~ds1
  Revision: 1.6.20~ds1-1+b1
  Go version: go1.19.8

Server:
  Version:  1.6.20~ds1
  Revision: 1.6.20~ds1-1+b1
  UUID: 0e1ad1b5-4d0d-4c43-9f7c-2f6f2f1b1c11
"""


@pytest.mark.parametrize(("text", "expected"), [
    (CTR_VERSION_1_6, (1, 6)),
    (CTR_VERSION_1_6.replace("Server:\n  Version:  1.6.20~ds1", "Server:\n  Version:  v2.0.5"), (2, 0)),
    (CTR_VERSION_1_6.replace("Server:\n  Version:  1.6.20~ds1", "Server:\n  Version:  2.1.4"), (2, 1)),
    (CTR_VERSION_1_6.split("Server:")[0], None),  # the client alone says nothing about the daemon
    ("", None),
])
def test_containerd_version_reads_the_server_not_the_client(text: str, expected: tuple[int, int] | None) -> None:
    assert helpers.containerd_version(text) == expected


@pytest.mark.parametrize(("version", "cpus", "parallel", "mode", "prefetch", "connections", "unpack", "early",
                          "says"), [
    ((1, 6), 2, 0, "auto", 1, 8, 2, 2, "layers applied as they come in"),  # this lab: the vCPUs
    ((1, 7), 8, 3, "auto", 1, 32, 3, 3, "prefetch over 32 connections"),    # the spec's parallel wins
    ((1, 6), 8, 0, "fetch", 1, 32, 8, 0, "then ctr unpack"),
    ((2, 0), 8, 0, "fetch", 1, 32, 8, 0, "then transfer service unpack"),
    ((2, 1), 64, 0, "auto", 1, 32, 64, 64, "layers applied as they come in"),  # connections capped, unpacks not
    ((1, 4), 8, 0, "auto", 0, 0, 8, 0, "plain ctr pull (containerd (1, 4))"),
    (None, 8, 0, "auto", 0, 0, 8, 0, "plain ctr pull (containerd unknown)"),
    ((1, 6), 8, 0, "off", 0, 0, 8, 0, "plain ctr pull (prefetch off)"),
])
def test_pull_plan_picks_the_path_by_version(version, cpus, parallel, mode, prefetch, connections, unpack, early,
                                             says) -> None:
    plan = helpers.pull_plan(version, cpus, parallel, mode)
    assert (plan["prefetch"], plan["connections"], plan["unpack"], plan["early_unpack"]) == (
        prefetch, connections, unpack, early)
    assert says in plan["path"]


def test_pull_plan_cli_asks_the_daemon(tmp_path: Path) -> None:
    """No containerd on that socket: the plain pull, never a failure."""
    proc = subprocess.run([sys.executable, str(HELPERS), "pull-plan", str(tmp_path / "none.sock"), "2", "auto"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["containerd=unknown", "prefetch=0", "connections=0", "unpack=2",
                                        "early_unpack=0", "path=plain ctr pull (containerd unknown)"]
