"""The progress contract read back: one definition (build_cache_helpers) for the builder and Airflow."""

from __future__ import annotations

import logging

import pytest

from ml_cache.build_progress import ProgressReader, describe, parse_progress, stream_name
from ml_cache.scripts.build_cache_helpers import PROGRESS_PREFIX, progress_line


def test_a_line_round_trips_through_the_one_definition() -> None:
    line = progress_line("fetch", image="nvcr.io/nvidia/pytorch:24.05-py3", done=1_200_000_000,
                         total=3_400_000_000, images_done=1, images=3, layers_applied=4)
    assert line.startswith(PROGRESS_PREFIX) and "\n" not in line
    assert describe(parse_progress(line)) == ("fetching: 1.2 GB of 3.4 GB (35%), 1 of 3 image(s) in, "
                                              "4 layer(s) applied; now nvcr.io/nvidia/pytorch:24.05-py3")


@pytest.mark.parametrize(("fields", "expected"), [
    ({"phase": "image", "image": "a/b:1", "ok": True, "bytes": 812_300_000}, "image a/b:1 fetched: 812.3 MB"),
    ({"phase": "image", "image": "a/b:1", "ok": False, "bytes": 0}, "image a/b:1 not prefetched (ctr pulls it): 0 B"),
    ({"phase": "pulled", "image": "a/b:1", "ok": True}, "image a/b:1 pulled"),
    ({"phase": "pulled", "image": "a/b:1", "ok": False}, "image a/b:1 failed to pull"),
    ({"phase": "fetch", "image": "a/b:1", "done": 0, "total": 0}, "fetching: 0 B of 0 B, 0 of ? image(s) in, "
                                                                  "0 layer(s) applied; now a/b:1"),
])
def test_describe(fields, expected) -> None:
    assert describe(fields) == expected


@pytest.mark.parametrize("line", ["07:00:00 build_cache: build: 1 image(s)", PROGRESS_PREFIX + "not json",
                                  PROGRESS_PREFIX + "[1, 2]", PROGRESS_PREFIX + '{"image": "a"}',
                                  " " + progress_line("pulled", image="a", ok=True)])
def test_other_lines_are_not_progress(line) -> None:
    assert parse_progress(line) is None


def test_a_field_of_another_shape_is_logged_as_it_came(caplog) -> None:
    reader = ProgressReader("/g", "s", logging.getLogger("test_build_progress"))
    with caplog.at_level(logging.INFO, logger="test_build_progress"):
        reader._line(progress_line("fetch", image="a", done="lots", total=None))
        reader._line("07:00:01 build_cache: ERROR: pull failed: a")
    assert [r.getMessage() for r in caplog.records] == [
        'builder progress: {"phase":"fetch","image":"a","done":"lots","total":null}',
        "builder: 07:00:01 build_cache: ERROR: pull failed: a"]
    assert reader.stderr_tail() == "07:00:01 build_cache: ERROR: pull failed: a"


def test_stream_names_follow_the_agent() -> None:
    assert stream_name("c-1", "i-0abc", "aws:runShellScript") == "c-1/i-0abc/aws-runShellScript/stderr"
    assert stream_name("c-1", "i-0abc", "buildCache", "stdout") == "c-1/i-0abc/buildCache/stdout"
