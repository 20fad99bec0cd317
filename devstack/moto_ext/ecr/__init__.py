"""ECR for the local cloud: authorization tokens with AWS's lifetime, region and account, checked by
devstack.registries' ECR-style front; a push (PutImage) puts ECR's event on the default event bus."""

from __future__ import annotations

from moto.ecr.models import ECRBackend
from moto.ecr.responses import ECRResponse

from devstack.moto_ext import _patch
from devstack.moto_ext.ecr import events, models, responses


def install() -> None:
    _patch.replace(ECRResponse, "get_authorization_token", lambda _orig: responses.get_authorization_token)
    _patch.replace(ECRBackend, "put_image", events.put_image)


def reset() -> None:
    models.reset()
