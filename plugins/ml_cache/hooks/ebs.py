"""EBS direct APIs: how many blocks a snapshot holds, and how many it changed against its parent.

These are how AWS exposes a snapshot's size on its own (DescribeSnapshots gives only the volume size):
https://docs.aws.amazon.com/ebs/latest/userguide/ebs-accessing-snapshot.html
They are priced per request (ListSnapshotBlocks and ListChangedBlocks: $0.0006 per 1,000 requests,
https://docs.aws.amazon.com/ebs/latest/userguide/ebsapi-pricing.html); a page holds up to 10,000
blocks of 512 KiB, so sizing a 100 GiB snapshot takes about 20 requests. ListSnapshotBlocks lists only
blocks with data written, and a page may be empty yet carry a NextToken (the APIs' FAQ,
https://docs.aws.amazon.com/ebs/latest/userguide/ebsapi-faq.html): only a missing token ends the list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

MAX_RESULTS = 10000  # the APIs' page limit


@dataclass(frozen=True)
class BlockCount:
    """A number of snapshot blocks and their size (AWS: 524288 bytes)."""

    blocks: int
    block_size: int

    @property
    def bytes(self) -> int:
        return self.blocks * self.block_size


class CacheEbsHook(AwsBaseHook):
    """The `ebs` client (EBS direct APIs); botocore has no paginators for it, so the hook follows NextToken."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["client_type"] = "ebs"
        super().__init__(*args, **kwargs)

    def list_snapshot_blocks(self, snapshot_id: str) -> BlockCount:
        """Every block the snapshot holds (its full size, parents' blocks included); it must be completed."""
        return _count(self.conn.list_snapshot_blocks, "Blocks", SnapshotId=snapshot_id)

    def list_changed_blocks(self, first_snapshot_id: str, second_snapshot_id: str) -> BlockCount:
        """Blocks that differ between two snapshots of one lineage: what the second stores beyond the first."""
        return _count(self.conn.list_changed_blocks, "ChangedBlocks",
                      FirstSnapshotId=first_snapshot_id, SecondSnapshotId=second_snapshot_id)


def _count(call: Callable[..., dict[str, Any]], key: str, **request: Any) -> BlockCount:
    blocks, block_size = 0, 0
    for page in _pages(call, **request):
        blocks += len(page.get(key, []))
        block_size = page["BlockSize"]
    return BlockCount(blocks=blocks, block_size=block_size)


def _pages(call: Callable[..., dict[str, Any]], **request: Any) -> Iterator[dict[str, Any]]:
    token = None
    while True:
        page = call(**request, MaxResults=MAX_RESULTS, **({"NextToken": token} if token else {}))
        yield page
        token = page.get("NextToken")
        if not token:
            return
