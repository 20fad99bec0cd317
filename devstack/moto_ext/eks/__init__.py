"""EKS for the local cloud: managed node group updates that move nodes (devstack.nodes), and EKS's copy
of a node group's launch template."""

from __future__ import annotations

from moto.eks import urls as eks_urls
from moto.eks.responses import EKSResponse

from devstack.moto_ext import _patch
from devstack.moto_ext.eks import models, responses


def install() -> None:
    for route in responses.ROUTES:
        eks_urls.url_paths.setdefault(route, eks_urls.response.dispatch)
    _patch.replace(EKSResponse, "update_nodegroup_version", lambda _orig: responses.update_nodegroup_version)
    _patch.replace(EKSResponse, "describe_update", lambda _orig: responses.describe_update)
    _patch.replace(EKSResponse, "list_updates", lambda _orig: responses.list_updates)
    _patch.replace(EKSResponse, "describe_nodegroup", responses.describe_nodegroup)
    _patch.replace(EKSResponse, "create_nodegroup", responses.create_nodegroup)
    _patch.replace(EKSResponse, "list_nodegroups", responses.list_nodegroups)
    _patch.replace(EKSResponse, "update_nodegroup_config", lambda _orig: responses.update_nodegroup_config)


def reset() -> None:
    models.reset()
