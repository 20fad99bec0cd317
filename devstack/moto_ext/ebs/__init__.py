"""EBS direct APIs for the local cloud: block lists and changed blocks of snapshots of sandbox volumes."""

from __future__ import annotations

from moto.ebs.responses import EBSResponse

from devstack.moto_ext import _patch
from devstack.moto_ext.ebs import models, responses


def install() -> None:
    _patch.replace(EBSResponse, "list_snapshot_blocks", responses.list_snapshot_blocks)
    _patch.replace(EBSResponse, "list_changed_blocks", responses.list_changed_blocks)


def reset() -> None:
    models.reset()
