"""ECR for the local cloud: authorization tokens with AWS's lifetime, region and account, checked by
devstack.registries' ECR-style front."""

from __future__ import annotations

from moto.ecr.responses import ECRResponse

from devstack.moto_ext import _patch
from devstack.moto_ext.ecr import models, responses


def install() -> None:
    _patch.replace(ECRResponse, "get_authorization_token", lambda _orig: responses.get_authorization_token)


def reset() -> None:
    models.reset()
