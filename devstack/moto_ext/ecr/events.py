"""ECR's "ECR Image Action" event on the default event bus, as AWS sends it after an image push.

AWS puts one event per successful push on the account's default bus in the repository's region
(https://docs.aws.amazon.com/AmazonECR/latest/userguide/ecr-eventbridge.html): source `aws.ecr`,
detail-type `ECR Image Action`, detail {result, repository-name, image-digest, action-type,
image-tag, manifest-media-type}. moto 5.2.5 sends none; here PutImage (the API form of a push)
does, through moto's EventBridge, whose rules deliver to moto SQS and the other targets it knows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

DETAIL_TYPE = "ECR Image Action"


def image_pushed(account: str, region: str, repository: str, tag: str | None, digest: str,
                 manifest_media_type: str | None = None) -> None:
    """Put the push event on the default bus of `account` in `region` (its rules route it)."""
    from moto.events.models import events_backends

    detail: dict[str, Any] = {"result": "SUCCESS", "repository-name": repository, "image-digest": digest,
                              "action-type": "PUSH"}
    if tag:
        detail["image-tag"] = tag
    if manifest_media_type:
        detail["manifest-media-type"] = manifest_media_type
    events_backends[account][region].put_events(
        [{"Source": "aws.ecr", "DetailType": DETAIL_TYPE, "Detail": json.dumps(detail), "Resources": []}])


def put_image(original: Callable[..., Any]) -> Callable[..., Any]:
    """ECRBackend.put_image that, once the image is stored, announces the push as ECR does."""

    def put_image(self: Any, repository_name: str, image_manifest: str, image_tag: str,
                  image_manifest_mediatype: str | None = None, digest: str | None = None) -> Any:
        image = original(self, repository_name, image_manifest, image_tag, image_manifest_mediatype, digest)
        image_pushed(self.account_id, self.region_name, repository_name, image_tag, image.image_digest,
                     image_manifest_mediatype or getattr(image, "image_manifest_mediatype", None))
        return image

    return put_image
