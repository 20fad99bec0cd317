"""The Python half of build_cache.sh: JSON in and out, so no shell ever reads a ref as code.

Runs on the builder (EKS-optimized AL2023: python3 3.9, no pip packages), hence stdlib only and
Python 3.9 syntax. The bash script stays the orchestrator and calls
`python3 build_cache_helpers.py <subcommand> ...`; see each subcommand's docstring.
The spec contract is build_spec.schema.json beside this file (Airflow checks it with jsonschema);
`SpecValidator` implements exactly the JSON Schema keywords that file uses, and refuses others.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

SCHEMA_PATH = Path(__file__).resolve().with_name("build_spec.schema.json")
INDEXES = {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
LIST_CAP = 20  # names per list in the report: SSM keeps 24,000 characters of stdout
TIMING_MARKS = ("started", "prepared", "pulled", "verified", "quiesced")
ANNOTATIONS = {"$schema", "$defs", "title", "description", "$comment"}
# keyword -> SpecValidator method, in the order they are checked (type first: clearer errors)
KEYWORDS = {
    "type": "_type", "enum": "_enum", "minimum": "_minimum", "maximum": "_maximum", "maxLength": "_max_length",
    "pattern": "_pattern", "minItems": "_min_items", "maxItems": "_max_items", "items": "_items",
    "required": "_required", "properties": "_properties", "propertyNames": "_property_names",
    "additionalProperties": "_additional_properties", "if": "_if_then", "oneOf": "_one_of",
}
SUPPORTED = ANNOTATIONS | set(KEYWORDS) | {"$ref", "then"}
JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
# ECR registry hosts: the schema's $defs/ecr_registry_host (one definition with Airflow's side).
ECR_HOST = re.compile(json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))["$defs"]["ecr_registry_host"]["pattern"],
                      re.IGNORECASE)  # DNS names are case-insensitive

# Progress on the script's stderr while it pulls (SSM keeps only the first 24,000 characters of stdout,
# where the report goes): this prefix, then one JSON object with "phase" (fetch: bytes of the set;
# image: one image fetched; pulled: one image's ctr pull ended). Airflow reads them with parse_progress.
PROGRESS_PREFIX = "ml-cache-progress "


def progress_line(phase: str, **fields: object) -> str:
    return PROGRESS_PREFIX + json.dumps({"phase": phase, **fields}, separators=(",", ":"))


def parse_progress(line: str) -> dict | None:
    """The fields of a progress line; None for any other line."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    try:
        fields = json.loads(line[len(PROGRESS_PREFIX):])
    except ValueError:
        return None
    return fields if isinstance(fields, dict) and isinstance(fields.get("phase"), str) else None


class SpecError(ValueError):
    """The spec breaks the schema; the message names the path and the value."""


class SpecValidator:
    """JSON Schema 2020-12, restricted to the keywords build_spec.schema.json uses."""

    def __init__(self, schema: dict) -> None:
        self.root = schema

    def validate(self, instance: object) -> None:
        self._check(instance, self.root, "spec")

    def _check(self, value: object, schema: dict, where: str) -> None:
        unsupported = sorted(set(schema) - SUPPORTED)
        if unsupported:
            raise SpecError(f"schema keyword(s) {unsupported} not supported by this validator")
        if "$ref" in schema:
            self._check(value, self._resolve(schema["$ref"]), where)
        for keyword, method in KEYWORDS.items():
            if keyword in schema:
                getattr(self, method)(value, schema[keyword], schema, where)

    def _resolve(self, ref: str) -> dict:
        if not ref.startswith("#/$defs/"):
            raise SpecError(f"schema $ref {ref!r} is not a local #/$defs/ reference")
        return self.root["$defs"][ref[len("#/$defs/"):]]

    @staticmethod
    def _is(value: object, name: str) -> bool:
        if name in ("integer", "number"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False
            return name == "number" or isinstance(value, int) or value.is_integer()
        return isinstance(value, JSON_TYPES[name])

    def _type(self, value: object, name: str, schema: dict, where: str) -> None:
        if not self._is(value, name):
            raise SpecError(f"{where}: {value!r} is not of type {name!r}")

    def _enum(self, value: object, allowed: list, schema: dict, where: str) -> None:
        if not any(value == choice and isinstance(value, bool) == isinstance(choice, bool) for choice in allowed):
            raise SpecError(f"{where}: {value!r} is not one of {allowed!r}")

    def _minimum(self, value: object, low: float, schema: dict, where: str) -> None:
        if self._is(value, "number") and value < low:
            raise SpecError(f"{where}: {value!r} is less than the minimum of {low}")

    def _maximum(self, value: object, high: float, schema: dict, where: str) -> None:
        if self._is(value, "number") and value > high:
            raise SpecError(f"{where}: {value!r} is greater than the maximum of {high}")

    def _max_length(self, value: object, length: int, schema: dict, where: str) -> None:
        if isinstance(value, str) and len(value) > length:
            raise SpecError(f"{where}: {value!r} is longer than {length} characters")

    def _pattern(self, value: object, pattern: str, schema: dict, where: str) -> None:
        if isinstance(value, str) and not re.search(pattern, value):
            raise SpecError(f"{where}: {value!r} is not {schema.get('title', 'matching ' + pattern)}")

    def _min_items(self, value: object, count: int, schema: dict, where: str) -> None:
        if isinstance(value, list) and len(value) < count:
            raise SpecError(f"{where}: needs at least {count} item(s), got {len(value)}")

    def _max_items(self, value: object, count: int, schema: dict, where: str) -> None:
        if isinstance(value, list) and len(value) > count:
            raise SpecError(f"{where}: at most {count} item(s) allowed, got {len(value)}")

    def _items(self, value: object, item_schema: dict, schema: dict, where: str) -> None:
        for index, item in enumerate(value if isinstance(value, list) else []):
            self._check(item, item_schema, f"{where}[{index}]")

    def _required(self, value: object, names: list, schema: dict, where: str) -> None:
        missing = [name for name in names if isinstance(value, dict) and name not in value]
        if missing:
            raise SpecError(f"{where}: {missing[0]!r} is a required property")

    def _properties(self, value: object, properties: dict, schema: dict, where: str) -> None:
        for name, subschema in properties.items():
            if isinstance(value, dict) and name in value:
                self._check(value[name], subschema, f"{where}[{name!r}]")

    def _property_names(self, value: object, name_schema: dict, schema: dict, where: str) -> None:
        for name in value if isinstance(value, dict) else {}:
            self._check(name, name_schema, f"{where} key")

    def _additional_properties(self, value: object, extra: object, schema: dict, where: str) -> None:
        known = schema.get("properties", {})
        for name in value if isinstance(value, dict) else {}:
            if name in known:
                continue
            if extra is False:
                raise SpecError(f"{where}: property {name!r} is not allowed")
            if isinstance(extra, dict):
                self._check(value[name], extra, f"{where}[{name!r}]")

    def _if_then(self, value: object, condition: dict, schema: dict, where: str) -> None:
        try:
            self._check(value, condition, where)
        except SpecError:
            return
        self._check(value, schema.get("then", {}), where)

    def _one_of(self, value: object, choices: list, schema: dict, where: str) -> None:
        failures = []
        for choice in choices:
            try:
                self._check(value, choice, where)
            except SpecError as error:
                failures.append(str(error))
        matched = len(choices) - len(failures)
        if matched == 1:
            return
        if matched > 1:
            raise SpecError(f"{where}: {value!r} matches more than one of the allowed shapes")
        named = [failures[i] for i, choice in enumerate(choices) if self._selects(value, choice)]  # none matched
        distinct = named if len(named) == 1 else list(dict.fromkeys(failures))
        raise SpecError(distinct[0] if len(distinct) == 1 else f"{where}: {value!r} matches none of: "
                        + "; ".join(distinct))

    def _selects(self, value: object, choice: dict) -> bool:
        """The value names this oneOf branch: one of its properties' enum (e.g. "source") matches."""
        properties = self._resolve(choice["$ref"]).get("properties", {}) if "$ref" in choice else {}
        return isinstance(value, dict) and any(
            "enum" in rule and value.get(name) in rule["enum"] for name, rule in properties.items())


def ecr_region(host: str) -> str | None:
    """The region of an ECR registry host (where its token must come from), or None for another host."""
    match = ECR_HOST.match(host)
    return match.group(2).lower() if match else None


def credential_line(host: str, credential: dict) -> str | None:
    """`credential=HOST SOURCE REGION REFERENCE` (region and reference "-" where none; no secret ever)."""
    source = credential["source"]
    if source == "anonymous":
        return None
    if source == "ecr":
        region = ecr_region(host)
        if region is None:
            raise SpecError(f"spec['registry_credentials'][{host!r}]: source ecr needs an ECR registry host "
                            f"(<account>.dkr.ecr.<region>.amazonaws.com), got {host!r}")
        return f"credential={host} ecr {region} -"
    if source == "secretsmanager":
        return f"credential={host} secretsmanager {credential['secret_arn'].split(':')[3]} {credential['secret_arn']}"
    return f"credential={host} ssm_secure_parameter - {credential['parameter_name']}"


def parse_spec(spec_file: str) -> list[str]:
    """`parse-spec FILE`: check the spec against the schema; prints one safe key=value per line."""
    try:
        with open(spec_file, encoding="utf-8") as handle:
            spec = json.load(handle)
    except (OSError, ValueError) as error:
        raise SpecError(f"cannot read JSON: {error}") from error
    SpecValidator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))).validate(spec)
    lines = [f"action={spec['action']}", f"volume_id={spec['volume_id']}"]
    if spec["action"] == "build":
        lines += [f"platform={spec['platform']}", f"parallel={int(spec.get('parallel', 0))}"]  # 0: the vCPUs
        lines += [f"image={ref}" for ref in dict.fromkeys(spec["images"])]
        for host, credential in (spec.get("registry_credentials") or {}).items():
            lines += filter(None, [credential_line(host, credential)])
        lines += [f"endpoint={host} {url}" for host, url in (spec.get("registry_endpoints") or {}).items()]
    return lines


def platform_matches(found: dict, want: list[str]) -> bool:
    """An index entry's or a config's platform against ["os", "arch"(, "variant")] (variant optional)."""
    if found.get("os") != want[0] or found.get("architecture") != want[1]:
        return False
    return len(want) < 3 or not found.get("variant") or found.get("variant") == want[2]


def image_names(ref: str, digest: str) -> list[str]:
    """Every name the image is stored under: the ref as given, repo@digest (the name CRI looks a
    digest-pinned pod image up by) and, for a tagged ref, repo:tag (a pod that names the tag)."""
    name, _, pinned = ref.partition("@")
    head, _, last = name.rpartition("/")
    repository, _, tag = last.partition(":")
    names = [ref, f"{head}/{repository}@{digest}"]
    if tag and pinned:
        names.append(name)
    return list(dict.fromkeys(names))


def ctr_table(text: str) -> dict[str, list[str]]:
    """`ctr images ls|check` output -> rows by image name (the header line skipped)."""
    return {fields[0]: fields for fields in (line.split() for line in text.splitlines()[1:]) if fields}


def _ctr(socket: str, namespace: str) -> Callable[..., str]:
    def ctr(*args: str) -> str:
        proc = subprocess.run(["ctr", "-a", socket, "-n", namespace, *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"ctr {args[0]} {args[1]} failed: {proc.stderr.strip()[-300:]}")
        return proc.stdout
    return ctr


def repository(name: str) -> str:
    """host/repo[:tag][@digest] -> host/repo."""
    head, _, last = name.partition("@")[0].rpartition("/")
    return f"{head}/{last.partition(':')[0]}"


def prune_plan(listed: dict[str, str], refs: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Stored names (-> digest) to remove before the pull, to remove after it, and refs already present. An
    old version of a requested repository stays until the pull reused its layers (else pulled again)."""
    keep = {name for ref in refs for name in image_names(ref, ref.rpartition("@")[2])}
    repositories = {repository(ref) for ref in refs}
    stale = [name for name in listed if name not in keep]
    later = [name for name in stale if repository(name) in repositories]
    present = set(listed.values())
    return [name for name in stale if name not in later], later, [r for r in refs if r.rpartition("@")[2] in present]


def blob_sizes(root: str) -> dict[str, int]:
    """The content store's blobs on the volume, digest -> exact size (read from its files)."""
    blobs = Path(root, "io.containerd.content.v1.content", "blobs", "sha256")
    return {f"sha256:{blob.name}": blob.stat().st_size for blob in blobs.iterdir()} if blobs.is_dir() else {}


def _remove(ctr: Callable[..., str], names: list[str]) -> None:
    """Remove image names, then collect garbage now (deleting a lease with --sync runs the whole GC)."""
    if names:
        ctr("images", "rm", *names)
    ctr("leases", "rm", "--sync", ctr("leases", "create").split()[0])


def prune(phase: str, socket: str, namespace: str, root: str, state_file: str, refs_file: str = "") -> None:
    """`prune before|after SOCKET NAMESPACE ROOT STATE [REFS_FILE]` (around the pull): STATE gets the counts."""
    ctr, state = _ctr(socket, namespace), Path(state_file)
    if phase == "before":
        listed = {row[0]: row[2] for row in ctr_table(ctr("images", "ls")).values()}
        now, later, reused = prune_plan(listed, Path(refs_file).read_text(encoding="utf-8").split())
        before = blob_sizes(root)
        _remove(ctr, now)
        result = {"before": before, "pruned": blob_sizes(root), "removed": now, "later": later, "reused": reused}
    else:
        saved, pulled = json.loads(state.read_text()), blob_sizes(root)
        _remove(ctr, saved["later"])
        end = blob_sizes(root)
        removed, reused = saved["removed"] + saved["later"], saved["reused"]
        result = {"removed_images": removed[:LIST_CAP], "removed_images_total": len(removed),
                  "reused_images": reused[:LIST_CAP], "reused_images_total": len(reused),
                  "bytes_pruned": sum(size for digest, size in saved["before"].items() if digest not in end),
                  "bytes_pulled": sum(size for digest, size in pulled.items() if digest not in saved["pruned"])}
    state.write_text(json.dumps(result))


def volume_report(fields: dict[str, str]) -> dict:
    """The report's "volume": how the filesystem was found and what the build changed on it."""
    before, after = int(fields["fs_before"]), int(fields["fs_after"])
    return {"restored": fields["restored"] == "1", "reformatted_reason": fields["reason"] or None,
            "filesystem_bytes_before": before, "filesystem_bytes_after": after, "grown": after > before,
            "trimmed": fields["trimmed"] == "1", **json.loads(Path(fields["prune"]).read_text())}


def verify(socket: str, namespace: str, platform: str, refs_file: str) -> int:
    """`verify SOCKET NAMESPACE PLATFORM REFS_FILE`: per image resolved digest, platform, content size
    and `ctr images check`. Prints TSV rows: ref, digest, unpacked, bytes (config + layers), names
    (space-separated, see image_names)."""
    ctr = _ctr(socket, namespace)
    want = platform.split("/")
    listed, checked = ctr_table(ctr("images", "ls")), ctr_table(ctr("images", "check"))
    errors = []
    for ref in Path(refs_file).read_text(encoding="utf-8").split():
        if ref not in listed or ref not in checked:
            errors.append(f"{ref}: not in the image store after pull")
            continue
        media_type, digest = listed[ref][1], listed[ref][2]
        if "@" in ref and ref.rsplit("@", 1)[1] != digest:
            errors.append(f"{ref}: resolved to {digest}, not the pinned digest")
            continue
        document = json.loads(ctr("content", "get", digest))
        if media_type in INDEXES or "manifests" in document:
            chosen = [m for m in document.get("manifests", []) if platform_matches(m.get("platform") or {}, want)]
            if not chosen:
                errors.append(f"{ref}: no manifest for platform {platform}")
                continue
            document = json.loads(ctr("content", "get", chosen[0]["digest"]))
        config_desc = document["config"]
        config = json.loads(ctr("content", "get", config_desc["digest"]))
        if not platform_matches(config, want):
            found = f"{config.get('os')}/{config.get('architecture')}"
            errors.append(f"{ref}: image is for {found}, not for platform {platform}")
            continue
        size = config_desc["size"] + sum(layer["size"] for layer in document.get("layers", []))
        status, unpacked = checked[ref][3], checked[ref][-1]
        if status != "complete" or unpacked != "true":
            errors.append(f"{ref}: ctr images check says status={status} unpacked={unpacked} for {platform}")
            continue
        print(f"{ref}\t{digest}\ttrue\t{size}\t{' '.join(image_names(ref, digest))}")
    for error in errors:
        print(f"verify failed: {error}", file=sys.stderr)
    return 1 if errors else 0


def report(kind: str, fields: dict[str, str], rows: str) -> dict:
    """`report build|quiesce key=value...` (build: verify's TSV rows on stdin): the one-line report."""
    if kind == "quiesce":
        return {
            "schema": int(fields["schema"]), "action": "quiesce", "status": "ok",
            "volume_id": fields["volume_id"], "device": fields["device"], "mounted": False,
            "containerd_running": False, "filesystem": fields["filesystem"],
            "xfs_repair": fields["xfs_repair"], "unmounted": fields["unmounted"].split(),
        }
    images = []
    for line in rows.splitlines():
        ref, digest, unpacked, size = line.split("\t")[:4]
        images.append({"ref": ref, "digest": digest, "unpacked": unpacked == "true", "bytes": int(size)})
    marks = [float(fields[mark]) for mark in TIMING_MARKS]
    phases = ("prepare_seconds", "pull_seconds", "verify_seconds", "quiesce_seconds")
    return {
        "schema": int(fields["schema"]), "action": "build", "status": "ok",
        "platform": fields["platform"], "volume_id": fields["volume_id"], "images": images,
        "totals": {"images": len(images), "bytes": sum(i["bytes"] for i in images),
                   "filesystem_used_bytes": int(fields["fs_used"])},
        "timings": {phase: round(marks[i + 1] - marks[i], 2) for i, phase in enumerate(phases)},
        "quiesced": True, "volume": volume_report(fields),
    }


def containerd_version(text: str) -> tuple[int, int] | None:
    """(major, minor) of the server in `ctr version`'s output; None when it does not say."""
    match = re.search(r"Version:\s*v?(\d+)\.(\d+)", text.partition("Server:")[2])
    return (int(match.group(1)), int(match.group(2))) if match else None


def pull_plan(version: tuple[int, int] | None, cpus: int, parallel: int, mode: str = "auto") -> dict[str, object]:
    """How the pull phase runs on this containerd: the one place the version decides.

    1.5-1.7: `ctr images pull` fetches one connection per blob and applies one layer after another
    only when all are in, so build_cache_prefetch.py fetches first (parallel, Range parts) and
    build_cache_apply.py applies each layer as its blob comes in, `unpack` at once, straight into the
    overlayfs snapshots; the pull then only records the image.
    >= 2.0: the same; ctr pulls through the transfer service, which also unpacks while it fetches
    whatever is still missing (containerd's own parallel Range fetch needs 2.1 and daemon config).
    Older, unknown, or mode "off": the plain pull; "fetch": the prefetch, containerd applying.
    Unpacks at once: the spec's parallel, else the vCPUs."""
    unpack = parallel if parallel > 0 else max(1, cpus)
    connections = min(32, max(8, 4 * cpus))
    if mode == "off" or version is None or version < (1, 5):
        path = "plain ctr pull" + (" (prefetch off)" if mode == "off" else f" (containerd {version or 'unknown'})")
        return {"prefetch": 0, "connections": 0, "unpack": unpack, "early_unpack": 0, "path": path}
    early = 0 if mode == "fetch" else unpack
    service = "transfer service" if version >= (2, 0) else "ctr"
    how = "layers applied as they come in" if early else f"then {service} unpack"
    return {"prefetch": 1, "connections": connections, "unpack": unpack, "early_unpack": early,
            "path": f"prefetch over {connections} connections, {how}"}


def plan_pull(socket: str, parallel: str, mode: str) -> list[str]:
    """`pull-plan SOCKET PARALLEL MODE`: key=value lines of pull_plan for the running containerd."""
    proc = subprocess.run(["ctr", "--connect-timeout", "10s", "-a", socket, "version"], capture_output=True, text=True,
                          check=False)
    version = containerd_version(proc.stdout)
    plan = pull_plan(version, len(os.sched_getaffinity(0)), int(parallel), mode)
    return [f"containerd={'.'.join(map(str, version)) if version else 'unknown'}",
            *(f"{key}={value}" for key, value in plan.items())]


def imds_region() -> str:
    """`imds-region`: this instance's region from IMDSv2 (the token stays off argv)."""
    base = "http://169.254.169.254/latest"
    token = urllib.request.urlopen(urllib.request.Request(  # noqa: S310 - fixed IMDS URL
        f"{base}/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}), timeout=2).read()
    return urllib.request.urlopen(urllib.request.Request(  # noqa: S310 - fixed IMDS URL
        f"{base}/meta-data/placement/region", headers={"X-aws-ec2-metadata-token": token.decode()}), timeout=2
    ).read().decode()


def main(argv: list[str]) -> int:
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command == "parse-spec" and len(args) == 1:
        try:
            print("\n".join(parse_spec(args[0])))
        except SpecError as error:
            print(f"invalid spec: {error}", file=sys.stderr)
            return 2
        return 0
    if command == "prune" and len(args) in (5, 6) and args[0] in ("before", "after"):
        prune(*args)
        return 0
    if command == "verify" and len(args) == 4:
        return verify(*args)
    if command == "report" and args and args[0] in ("build", "quiesce"):
        fields = dict(arg.split("=", 1) for arg in args[1:])
        rows = sys.stdin.read() if args[0] == "build" else ""
        print(json.dumps(report(args[0], fields, rows), separators=(",", ":")))
        return 0
    if command == "pull-plan" and len(args) == 3 and args[1].isdigit():
        print("\n".join(plan_pull(*args)))
        return 0
    if command == "progress" and len(args) == 3 and args[2].isdigit():  # progress pulled REF EXIT_CODE
        print(progress_line(args[0], image=args[1], ok=args[2] == "0"), file=sys.stderr)
        return 0
    if command == "imds-region" and not args:
        print(imds_region())
        return 0
    print("usage: build_cache_helpers.py parse-spec FILE | verify SOCKET NAMESPACE PLATFORM REFS_FILE"
          " | prune before|after SOCKET NAMESPACE ROOT STATE [REFS_FILE]"
          " | report build|quiesce KEY=VALUE... | pull-plan SOCKET PARALLEL auto|fetch|off"
          " | progress PHASE REF EXIT_CODE | imds-region", file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
