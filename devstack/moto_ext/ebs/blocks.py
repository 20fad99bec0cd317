"""Block-level view of a volume file as EBS stores it: 512 KiB blocks, holes are never stored.

https://docs.aws.amazon.com/ebs/latest/userguide/how_snapshots_work.html: a snapshot of a volume
created from a snapshot stores only the blocks changed since that snapshot. The EBS direct APIs
(https://docs.aws.amazon.com/ebs/latest/APIReference/API_ListChangedBlocks.html) report blocks of
BlockSize 524288 bytes. Holes are skipped with SEEK_DATA/SEEK_HOLE, so a sparse file costs only
what it holds.
"""

from __future__ import annotations

import os
from pathlib import Path

BLOCK_SIZE = 524288


def data_blocks(path: Path) -> list[int]:
    """Sorted indexes of the 512 KiB blocks that hold any data (not entirely a hole)."""
    found: list[int] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            first, last = start // BLOCK_SIZE, (end - 1) // BLOCK_SIZE
            if found and found[-1] >= first:
                first = found[-1] + 1
            found.extend(range(first, last + 1))
            offset = end
    finally:
        os.close(fd)
    return found


def diff(parent: Path, parent_blocks: list[int], child: Path, child_blocks: list[int]
         ) -> tuple[list[int], list[int]]:
    """(changed, removed): child data blocks whose bytes differ from the parent's (stored anew), and
    parent data blocks that are holes in the child (trimmed or zeroed: nothing stored)."""
    in_parent = set(parent_blocks)
    changed = []
    with parent.open("rb") as old, child.open("rb") as new:
        for index in child_blocks:
            if index not in in_parent or _read(old, index) != _read(new, index):
                changed.append(index)
    in_child = set(child_blocks)
    return changed, [index for index in parent_blocks if index not in in_child]


def _read(handle, index: int) -> bytes:  # type: ignore[no-untyped-def]
    handle.seek(index * BLOCK_SIZE)
    return handle.read(BLOCK_SIZE).ljust(BLOCK_SIZE, b"\0")
