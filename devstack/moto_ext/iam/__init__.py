"""IAM for the local cloud: the managed policy size quota AWS enforces on CreatePolicy(Version)."""

from __future__ import annotations

from moto.iam.models import IAMBackend

from devstack.moto_ext import _patch
from devstack.moto_ext.iam import models


def install() -> None:
    _patch.replace(IAMBackend, "create_policy", models.create_policy)
    _patch.replace(IAMBackend, "create_policy_version", models.create_policy_version)
