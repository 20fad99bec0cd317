"""The block rule itself: 512 KiB blocks, holes are not data, a diff stores only differing blocks."""

from __future__ import annotations

from devstack.moto_ext.ebs import blocks

BLOCK = blocks.BLOCK_SIZE


def _sparse(path, size_blocks: int, writes: dict[int, bytes]):
    with path.open("wb") as handle:
        handle.truncate(size_blocks * BLOCK)
        for offset, data in writes.items():
            handle.seek(offset)
            handle.write(data)
    return path


def test_block_size_is_the_ebs_direct_apis_one() -> None:
    assert BLOCK == 524288


def test_data_blocks_skip_holes_and_count_partly_written_blocks(tmp_path) -> None:
    path = _sparse(tmp_path / "v.img", 2048, {
        0: b"a",  # block 0
        BLOCK - 1: b"bc",  # straddles blocks 0 and 1
        700 * BLOCK + 123: b"d" * (2 * BLOCK),  # blocks 700, 701, 702
    })
    assert blocks.data_blocks(path) == [0, 1, 700, 701, 702]
    assert blocks.data_blocks(_sparse(tmp_path / "empty.img", 2048, {})) == []


def test_diff_keeps_only_blocks_whose_bytes_differ(tmp_path) -> None:
    parent = _sparse(tmp_path / "p.img", 64, {0: b"same", BLOCK: b"old", 2 * BLOCK: b"gone"})
    child = _sparse(tmp_path / "c.img", 64, {0: b"same", BLOCK: b"new", 9 * BLOCK: b"added"})
    changed, removed = blocks.diff(parent, blocks.data_blocks(parent), child, blocks.data_blocks(child))
    assert (changed, removed) == ([1, 9], [2])


def test_diff_reads_a_grown_child_beyond_the_parent_end(tmp_path) -> None:
    parent = _sparse(tmp_path / "p.img", 4, {0: b"x"})
    child = _sparse(tmp_path / "c.img", 8, {0: b"x", 6 * BLOCK: b"y"})
    assert blocks.diff(parent, [0], child, blocks.data_blocks(child)) == ([6], [])
