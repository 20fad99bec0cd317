"""EBS direct API handlers for snapshots of sandbox volumes: ListSnapshotBlocks (the full size) and
ListChangedBlocks (the incremental size against an ancestor), paginated like AWS.

https://docs.aws.amazon.com/ebs/latest/APIReference/API_ListChangedBlocks.html: MaxResults 100..10000
(default 10000), an opaque NextToken, StartingBlockIndex, BlockSize 524288, VolumeSize in GiB.
Snapshots moto made itself (StartSnapshot/PutSnapshotBlock) keep moto's answers.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult

from devstack.moto_ext.ebs import blocks, models

DEFAULT_MAX_RESULTS = 10000


class EbsError(JsonRESTError):
    def __init__(self, error_type: str, status: int, reason: str, message: str) -> None:
        super().__init__(error_type, message)
        self.code = status
        self.description = json.dumps({"__type": error_type, "message": message, "Reason": reason})


def _invalid(reason: str, message: str) -> EbsError:
    return EbsError("ValidationException", 400, reason, message)


def _block_token(snapshot_id: str, index: int) -> str:
    return base64.b64encode(f"{snapshot_id}/{index}".encode()).decode()


def _completed(self: Any, snapshot_id: str) -> models.SnapshotBlocks | None:
    """Our record of a completed sandbox snapshot; None for moto's own EBS-direct snapshots."""
    entry = models.get(snapshot_id)
    if entry is not None and entry.deleted is None and snapshot_id in self.ebs_backend.ec2_backend.snapshots:
        return entry
    if snapshot_id in self.ebs_backend.snapshots:
        return None
    snapshot = self.ebs_backend.ec2_backend.snapshots.get(snapshot_id)
    if snapshot is not None and snapshot.status == "pending":
        raise _invalid("INVALID_SNAPSHOT_ID", f"The snapshot {snapshot_id} is not in the completed state.")
    raise EbsError("ResourceNotFoundException", 404, "SNAPSHOT_NOT_FOUND", f"The snapshot {snapshot_id} was not found.")


def _page(self: Any, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str | None]:
    """One page of items sorted by BlockIndex, from StartingBlockIndex or the NextToken."""
    limit = self._get_param("MaxResults") or DEFAULT_MAX_RESULTS
    if not 100 <= int(limit) <= 10000:
        raise _invalid("INVALID_PARAMETER_VALUE", f"MaxResults must be between 100 and 10000, got {limit}.")
    start = int(self._get_param("StartingBlockIndex") or 0)
    token = self._get_param("NextToken")
    if token:
        try:
            start = int(json.loads(base64.b64decode(token))["next"])
        except (ValueError, KeyError, TypeError) as error:
            raise _invalid("INVALID_PAGE_TOKEN", "The pagination token is not valid.") from error
    rest = [item for item in items if item["BlockIndex"] >= start]
    page, more = rest[:int(limit)], rest[int(limit):]
    next_token = base64.b64encode(json.dumps({"next": more[0]["BlockIndex"]}).encode()).decode() if more else None
    return page, next_token


def _answer(self: Any, key: str, items: list[dict[str, Any]], entry: models.SnapshotBlocks) -> ActionResult:
    page, next_token = _page(self, items)
    result: dict[str, Any] = {key: page, "VolumeSize": entry.volume_size_gib, "BlockSize": blocks.BLOCK_SIZE}
    if next_token:
        result["NextToken"] = next_token
    return ActionResult(result)


def list_snapshot_blocks(original: Any) -> Any:
    def handler(self: Any) -> Any:
        snapshot_id = self._get_param("SnapshotId")
        entry = _completed(self, snapshot_id)
        if entry is None:
            return original(self)
        items = [{"BlockIndex": i, "BlockToken": _block_token(snapshot_id, i)} for i in entry.data_blocks]
        return _answer(self, "Blocks", items, entry)

    return handler


def list_changed_blocks(original: Any) -> Any:
    def handler(self: Any) -> Any:
        first_id, second_id = self._get_param("FirstSnapshotId"), self._get_param("SecondSnapshotId")
        second = _completed(self, second_id)
        if second is None:
            return original(self)
        if not first_id:
            changed, removed, first_blocks = second.data_blocks, [], set()
        else:
            first = _completed(self, first_id)
            if first is None or first_id not in models.lineage(second_id)[1:]:
                raise _invalid("UNRELATED_SNAPSHOTS",
                               f"The snapshots {first_id} and {second_id} are not of the same lineage.")
            changed, removed = models.changed_between(first, second)
            first_blocks = set(first.data_blocks)
        items = [{"BlockIndex": i, "SecondBlockToken": _block_token(second_id, i),
                  **({"FirstBlockToken": _block_token(first_id, i)} if i in first_blocks else {})} for i in changed]
        items += [{"BlockIndex": i, "FirstBlockToken": _block_token(first_id, i)} for i in removed]
        return _answer(self, "ChangedBlocks", sorted(items, key=lambda item: item["BlockIndex"]), second)

    return handler
