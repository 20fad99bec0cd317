"""What `resolve_images` found, the one definition every later step reads: the images pinned by
the digests that were checked, the data volume sized for them, and what the builder needs to
reach their registries (credential references and endpoints, keyed by exact host; never a secret).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from ml_cache.images import InvalidInputs, parse_reference
from ml_cache.registry import ResolvedImage, credential_for, volume_size_gib
from ml_cache.settings import BuildSettings
from ml_cache.settings.fields import check_gp3


class ImageResolution(BaseModel):
    """The `resolve_images` result (its XCom)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    images: list[ResolvedImage]
    volume_size_gib: int
    registry_credentials: dict[str, dict[str, str]]
    registry_endpoints: dict[str, str]

    @property
    def pinned_images(self) -> list[str]:
        """What the builder pulls: each ref pinned by the digest resolved for it."""
        return [image.pinned for image in self.images]

    def configured_ref(self, pinned: str) -> str:
        """The ref as the settings wrote it, for a pinned one (published metadata shows that)."""
        wanted = str(parse_reference(pinned))
        return next(image.ref for image in self.images if str(parse_reference(image.pinned)) == wanted)

    def named_as_configured(self, report: dict[str, Any]) -> dict[str, Any]:
        """A verified build report (its refs are the pinned ones the builder pulled) with each image
        named by its ref as configured; the digest stays the one that was resolved and verified."""
        return {**report, "images": [{**image, "ref": self.configured_ref(image["ref"])} for image in report["images"]]}


def sized_volume(settings: BuildSettings, images: list[ResolvedImage]) -> int:
    """The configured size if it holds the images, else an error; no configured size: the computed one."""
    needed = volume_size_gib(images)
    size = settings.build.volume_size_gib
    if size is not None and size < needed:
        compressed = sum(image.compressed_bytes for image in images)
        raise InvalidInputs(f"volume_size_gib {size} is too small for these images: {compressed:,} compressed "
                            f"bytes need at least {needed} GiB (blobs + unpacked layers, with margin); "
                            f"raise it or leave it empty to size it from the images")
    size = size or needed
    check_gp3(size, settings.build.volume_iops, settings.build.volume_throughput_mibps)
    return size


def image_resolution(settings: BuildSettings, images: list[ResolvedImage]) -> ImageResolution:
    """The resolution of `images` under `settings`: the volume size and the builder's per-host references."""
    hosts = list(dict.fromkeys(parse_reference(image.ref).registry for image in images))
    credentials = {host: credential_for(host, settings.aws.registry_credentials) for host in hosts}
    return ImageResolution(
        images=images,
        volume_size_gib=sized_volume(settings, images),
        registry_credentials={host: c for host, c in credentials.items() if c["source"] != "anonymous"},
        registry_endpoints={host: settings.aws.registry_endpoints[host] for host in hosts
                            if host in settings.aws.registry_endpoints},
    )
