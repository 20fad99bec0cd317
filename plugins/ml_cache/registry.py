"""What a registry told us about an image, and the rules that pick a registry's credential and URL.

Pure Python (no Airflow): the resolve step's hook fills `ResolvedImage`, the DAG sizes the data
volume from it and pins the builder's refs by its digests. Credentials follow the one model of
build_spec.schema.json ($defs/credential); settings may key them by host pattern. The manifest
checks (digest, media type, platform, sizes) are here too, testable without a registry.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ml_cache.builder_spec import spec_schema
from ml_cache.images import DOCKER_HUB, parse_reference, registry_allowed

ANONYMOUS = {"source": "anonymous"}
# Docker Hub's registry API is not served at docker.io itself (Docker's and containerd's default host).
_DEFAULT_ENDPOINTS = {DOCKER_HUB: "https://registry-1.docker.io"}

CredentialSource = Literal["ecr", "secretsmanager", "ssm_secure_parameter", "anonymous"]
FailureReason = Literal["not found", "unauthorized", "no such platform", "rate-limited", "unreachable",
                        "invalid manifest"]
FAILURE_REASONS: tuple[str, ...] = get_args(FailureReason)
# What waiting does not cure (the others were retried already and may pass on a later try).
PERMANENT_REASONS = frozenset({"not found", "unauthorized", "no such platform", "invalid manifest"})

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT_MANIFESTS = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
DETAIL_MAX = 300

GIB = 1024**3
# containerd keeps the compressed blobs AND the unpacked snapshots (facts-aws.md). The README's
# figure for nvcr.io/nvidia/pytorch is 9.5 GB compressed and 20.4 GB on disk once unpacked, a
# ratio of 20.4 / 9.5 = 2.15; rounded up to 2.2. Images compress differently (random data barely,
# text and Python files 3-4x), hence the margin on the whole, plus a fixed allowance for XFS's
# log and metadata and containerd's own database.
UNPACK_RATIO = 2.2
SIZE_MARGIN = 1.25
FILESYSTEM_OVERHEAD_GIB = 1


def ecr_registry(host: str) -> tuple[str, str] | None:
    """(account, region) of an ECR registry host (the builder spec schema's $defs/ecr_registry_host),
    None for any other registry."""
    match = re.search(spec_schema()["$defs"]["ecr_registry_host"]["pattern"], host.lower())
    return (match[1], match[2]) if match else None


def credential_for(host: str, credentials: dict[str, dict]) -> dict:
    """The credential of a registry host: its exact entry, else the first matching host pattern
    (in the mapping's order, matched like images.registry_allowed), else anonymous."""
    for key, credential in credentials.items():
        if "*" not in key and key.lower() == host.lower():
            return credential
    for key, credential in credentials.items():
        if "*" in key and registry_allowed(host, [key]):
            return credential
    return dict(ANONYMOUS)


def endpoint_for(host: str, endpoints: dict[str, str]) -> str:
    """The URL a registry host's API is reached at: the mapping's (a mirror, the local cloud) or https://<host>."""
    return endpoints.get(host) or _DEFAULT_ENDPOINTS.get(host) or f"https://{host}"


class ResolvedImage(BaseModel):
    """One image as the registry resolved it for one platform, before any instance is launched."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ref: str = Field(description="the reference as configured")
    digest: str = Field(description="what the ref points at: the index digest of a multi-arch tag, else the manifest's")
    platform_digest: str = Field(description="the platform's image manifest")
    platform: str = Field(description="os/architecture[/variant], e.g. linux/amd64")
    compressed_bytes: int = Field(ge=0, description="config + layers of the platform manifest")
    authenticated: CredentialSource

    @model_validator(mode="after")
    def _pinned_ref_keeps_its_digest(self) -> ResolvedImage:
        pinned = parse_reference(self.ref).digest
        if pinned is not None and pinned != self.digest:
            raise ValueError(f"{self.ref} is pinned by digest but resolved to {self.digest}")
        return self

    @property
    def pinned(self) -> str:
        """`repo[:tag]@digest`: what the builder pulls, so what was checked is what is cached."""
        image = parse_reference(self.ref)
        tag = f":{image.tag}" if image.tag is not None else ""
        return f"{image.name}{tag}@{self.digest}"


def volume_size_gib(images: list[ResolvedImage]) -> int:
    """Whole GiB of data volume for the set: compressed blobs + unpacked snapshots, with margin."""
    compressed = sum(image.compressed_bytes for image in images)
    needed = compressed * (1 + UNPACK_RATIO) * SIZE_MARGIN / GIB + FILESYSTEM_OVERHEAD_GIB
    return max(1, math.ceil(needed))


class ImageResolutionFailed(Exception):
    """Images that could not be resolved, each with its reason; never carries a credential."""

    def __init__(self, failures: list[tuple[str, str, str]]) -> None:
        unknown = [reason for _, reason, _ in failures if reason not in FAILURE_REASONS]
        if not failures or unknown:
            raise ValueError(f"ImageResolutionFailed needs failures with reasons in {FAILURE_REASONS}, got {unknown}")
        self.failures = list(failures)
        lines = [f"{ref}: {reason} ({detail})" if detail else f"{ref}: {reason}" for ref, reason, detail in failures]
        super().__init__(f"{len(failures)} image(s) could not be resolved: " + "; ".join(lines))

    @property
    def permanent(self) -> bool:
        """Every failure is one that waiting does not cure: retrying the task cannot help."""
        return all(reason in PERMANENT_REASONS for _, reason, _ in self.failures)


class ResolutionError(Exception):
    """One image's failure: a reason of FAILURE_REASONS and a detail without secrets."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail[:DETAIL_MAX]


# --- manifests: what the registry sent, checked -------------------------------------------------

def verified_digest(body: bytes, header: str | None, pinned: str | None) -> str:
    """The content's digest, checked against the registry's Docker-Content-Digest and the ref's pin."""
    computed = "sha256:" + hashlib.sha256(body).hexdigest()
    if header and header.startswith("sha256:") and header != computed:
        raise ResolutionError("invalid manifest", f"the registry says {header}, the content hashes to {computed}")
    if pinned is None:
        return computed
    algorithm = pinned.partition(":")[0]
    if algorithm not in hashlib.algorithms_available:
        raise ResolutionError("invalid manifest", f"cannot verify a {algorithm} digest")
    actual = f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"
    if actual != pinned:
        raise ResolutionError("invalid manifest", f"asked for {pinned}, the content hashes to {actual}")
    return pinned


def json_object(body: bytes, what: str) -> dict:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise ResolutionError("invalid manifest", f"the {what} is not a JSON object")
    return document


def manifest_kind(document: dict, content_type: str) -> Literal["index", "manifest"]:
    """An index (OCI index, Docker manifest list) or an image manifest; OCI makes mediaType optional."""
    media_type = document.get("mediaType") or content_type.split(";")[0].strip()
    if media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST) or (not media_type and "manifests" in document):
        return "index"
    if media_type in (OCI_MANIFEST, DOCKER_MANIFEST) or (not media_type and "layers" in document):
        return "manifest"
    raise ResolutionError("invalid manifest", f"unsupported manifest media type {media_type!r}")


def platform_name(platform: dict) -> str:
    """os/architecture[/variant] of an index entry's platform or an image config."""
    return "/".join(str(platform[key]) for key in ("os", "architecture", "variant") if platform.get(key))


def platform_matches(platform: str, candidate: dict) -> bool:
    """os/architecture[/variant] as containerd matches it: arm64 without a variant is arm64/v8."""
    os_name, _, rest = platform.partition("/")
    architecture, _, variant = rest.partition("/")

    def normalised(var: str | None) -> str | None:
        return var or ("v8" if architecture == "arm64" else None)

    wanted_variant = normalised(variant or None)
    return (candidate.get("os") == os_name and candidate.get("architecture") == architecture
            and (wanted_variant is None or normalised(candidate.get("variant")) == wanted_variant))


def platform_descriptor(index: dict, platform: str) -> dict:
    """The index's first manifest for the platform (what containerd would pull)."""
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise ResolutionError("invalid manifest", "the index has no manifests list")
    offered = []
    for entry in entries:
        found = entry.get("platform") if isinstance(entry, dict) else None
        if not isinstance(found, dict):
            continue
        offered.append(platform_name(found))
        if platform_matches(platform, found) and isinstance(entry.get("digest"), str):
            return entry
    raise ResolutionError("no such platform", f"the index offers {', '.join(offered) or 'no platform'}, not {platform}")


def compressed_bytes(manifest: dict) -> int:
    """Config + layers as the image manifest lists them: what a pull downloads."""
    descriptors = [manifest.get("config"), *(manifest.get("layers") or [])]
    sizes = [item.get("size") if isinstance(item, dict) else None for item in descriptors]
    if not all(isinstance(size, int) and size >= 0 for size in sizes):
        raise ResolutionError("invalid manifest", "a config or layer descriptor has no valid size")
    return sum(sizes)
