"""CacheEbsHook: block counts of snapshots written with the EBS direct APIs on moto; paging over HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from ml_cache.hooks.ebs import MAX_RESULTS, BlockCount, CacheEbsHook
from tests.conftest import use_aws_connection
from tests.http_fakes import send_json
from tests.plugins.ml_cache.cloud_snapshots import ebs_direct_snapshot


def test_block_count_bytes_are_blocks_times_block_size() -> None:
    assert BlockCount(blocks=3, block_size=524288).bytes == 3 * 524288
    assert BlockCount(blocks=0, block_size=524288).bytes == 0


def test_snapshot_blocks_and_changed_blocks_against_the_parent(moto_conn) -> None:
    ebs = moto_conn.client("ebs")
    parent = ebs_direct_snapshot(ebs, {0: b"a" * 64, 1: b"b" * 64, 2: b"c" * 64, 3: b"d" * 64})
    child = ebs_direct_snapshot(ebs, {0: b"a" * 64, 1: b"B" * 64, 2: b"c" * 64, 3: b"D" * 64})
    hook = CacheEbsHook(aws_conn_id=moto_conn.conn_id)

    full = hook.list_snapshot_blocks(child)
    changed = hook.list_changed_blocks(parent, child)

    block_size = ebs.list_snapshot_blocks(SnapshotId=child)["BlockSize"]
    assert full == BlockCount(blocks=4, block_size=block_size)
    assert changed == BlockCount(blocks=2, block_size=block_size)  # blocks 1 and 3
    assert hook.list_changed_blocks(child, child).blocks == 0


class _PagedBlocks(BaseHTTPRequestHandler):
    """ListSnapshotBlocks over REST-JSON: 250 blocks in pages of 100 and an empty one, linked by NextToken
    (moto does not page)."""

    requests: list[dict[str, list[str]]] = []

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)
        self.requests.append(query)
        token = query.get("pageToken", ["0"])[0]
        if token == "sparse":  # AWS may answer an empty page that still has a next one
            body = {"Blocks": [], "VolumeSize": 1, "BlockSize": 524288, "NextToken": "100"}
        else:
            start = int(token)
            end = min(start + 100, 250)
            following = "sparse" if end == 100 else str(end)
            body = {"Blocks": [{"BlockIndex": i, "BlockToken": f"t{i}"} for i in range(start, end)],
                    "VolumeSize": 1, "BlockSize": 524288, **({"NextToken": following} if end < 250 else {})}
        send_json(self, 200, body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def paged_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PagedBlocks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_pages_are_followed_until_no_next_token(paged_endpoint, monkeypatch) -> None:
    aws = use_aws_connection(monkeypatch, "ml_cache_paged_ebs", paged_endpoint, "us-east-2")
    _PagedBlocks.requests = []

    count = CacheEbsHook(aws_conn_id=aws.conn_id).list_snapshot_blocks("snap-0123456789abcdef0")

    assert count == BlockCount(blocks=250, block_size=524288)
    assert [r.get("pageToken") for r in _PagedBlocks.requests] == [None, ["sparse"], ["100"], ["200"]]
    assert all(r["maxResults"] == [str(MAX_RESULTS)] for r in _PagedBlocks.requests)
