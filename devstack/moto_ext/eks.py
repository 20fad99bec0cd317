"""EKS node group updates (placeholder until UpdateNodegroupVersion / DescribeUpdate land)."""

from __future__ import annotations


def reset() -> None:
    """Nothing to forget yet."""


def install() -> None:
    """Nothing to patch yet."""
