"""The builder's stdout report: what passes, and every way it must fail."""

import json

import pytest

from ml_cache.report import (
    SSM_STDOUT_LIMIT,
    BuildReportError,
    parse_build_report,
    parse_quiesce_report,
)

SHA_A = "sha256:" + "a" * 64
SHA_B = "sha256:" + "b" * 64
VOLUME = "vol-0123456789abcdef0"
EXPECTED = ["busybox:1.37", f"nvcr.io/nvidia/pytorch:24.08-py3@{SHA_B}"]


VOLUME_REPORT = {
    "restored": True, "reformatted_reason": None, "filesystem_bytes_before": 1000, "filesystem_bytes_after": 2000,
    "grown": True, "trimmed": True, "removed_images": ["r.example.com/old:1"], "removed_images_total": 3,
    "reused_images": [EXPECTED[0]], "reused_images_total": 1, "bytes_pruned": 10, "bytes_pulled": 20,
}


def build_report(**overrides):
    report = {
        "schema": 1,
        "action": "build",
        "status": "ok",
        "platform": "linux/amd64",
        "volume_id": VOLUME,
        "images": [
            {"ref": "docker.io/library/busybox:1.37", "digest": SHA_A, "unpacked": True, "bytes": 100},
            {
                "ref": f"nvcr.io/nvidia/pytorch:24.08-py3@{SHA_B}",
                "digest": SHA_B,
                "unpacked": True,
                "bytes": 23,
            },
        ],
        "totals": {"images": 2, "bytes": 123, "filesystem_used_bytes": 5678},
        "timings": {
            "prepare_seconds": 1.2,
            "pull_seconds": 20.1,
            "verify_seconds": 0.4,
            "quiesce_seconds": 0.8,
        },
        "quiesced": True,
        "volume": dict(VOLUME_REPORT),
    }
    report.update(overrides)
    return report


def stdout_of(report):
    return json.dumps(report) + "\n"


def with_image(index, **changes):
    report = build_report()
    report["images"][index] = {**report["images"][index], **changes}
    return report


def test_valid_report_is_returned_normalised():
    parsed = parse_build_report(stdout_of(build_report()), EXPECTED, volume_id=VOLUME, platform="linux/amd64")
    assert [i["ref"] for i in parsed["images"]] == [
        "docker.io/library/busybox:1.37",
        f"nvcr.io/nvidia/pytorch:24.08-py3@{SHA_B}",
    ]
    assert [i["digest"] for i in parsed["images"]] == [SHA_A, SHA_B]
    assert parsed["totals"] == {"images": 2, "bytes": 123, "filesystem_used_bytes": 5678}
    assert parsed["timings"]["pull_seconds"] == 20.1
    assert parsed["quiesced"] is True
    assert parsed["volume"] == VOLUME_REPORT
    json.dumps(parsed)  # XCom-safe


def test_a_report_without_volume_comes_back_with_none_and_list_totals_default_to_the_lists():
    assert parse_build_report(stdout_of(build_report(volume=None)), EXPECTED)["volume"] is None
    volume = {**VOLUME_REPORT, "restored": False, "reformatted_reason": "mount failed: bad superblock"}
    del volume["removed_images_total"], volume["reused_images_total"]
    parsed = parse_build_report(stdout_of(build_report(volume=volume)), EXPECTED)["volume"]
    assert parsed == {**volume, "removed_images_total": 1, "reused_images_total": 1}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"restored": 1}, "volume.restored must be true or false, got 1"),
        ({"grown": None}, "volume.grown must be true or false"),
        ({"trimmed": "yes"}, "volume.trimmed must be true or false"),
        ({"reformatted_reason": "mount failed"}, r"on a volume not restored, a non-empty reason.*restored=True"),
        ({"restored": False, "reformatted_reason": ""}, "reformatted_reason"),
        ({"restored": False, "reformatted_reason": 3}, "reformatted_reason"),
        ({"bytes_pulled": -1}, "volume.bytes_pulled must be a non-negative integer"),
        ({"bytes_pruned": 1.5}, "volume.bytes_pruned must be a non-negative integer"),
        ({"filesystem_bytes_after": None}, "volume.filesystem_bytes_after"),
        ({"removed_images": "a b"}, "volume.removed_images must be a list of image names"),
        ({"reused_images": [1]}, "volume.reused_images must be a list of image names"),
        ({"removed_images_total": 0}, "volume.removed_images_total is 0 but 1 names are listed"),
        ({"reused_images_total": True}, "volume.reused_images_total must be a non-negative integer"),
    ],
)
def test_bad_volume_object_is_named(changes, message):
    report = build_report(volume={**VOLUME_REPORT, **changes})
    with pytest.raises(BuildReportError, match=message):
        parse_build_report(stdout_of(report), EXPECTED)


def test_volume_that_is_not_an_object():
    with pytest.raises(BuildReportError, match="report volume is not an object"):
        parse_build_report(stdout_of(build_report(volume=[])), EXPECTED)


def test_images_come_back_in_the_requested_order_and_as_given_refs_match():
    report = build_report()
    report["images"].reverse()
    report["images"][1]["ref"] = "busybox:1.37"  # the script echoed the short form
    parsed = parse_build_report(stdout_of(report), EXPECTED)
    assert [i["digest"] for i in parsed["images"]] == [SHA_A, SHA_B]


def test_reported_ref_with_digest_matches_a_tag_only_request():
    report = with_image(0, ref=f"busybox:1.37@{SHA_A}")
    parsed = parse_build_report(stdout_of(report), EXPECTED)
    assert parsed["images"][0]["ref"] == "docker.io/library/busybox:1.37"


def test_logs_before_the_report_line_are_ignored():
    stdout = "pulling...\nstill pulling\n" + stdout_of(build_report()) + "\n\n"
    assert parse_build_report(stdout, EXPECTED)["status"] == "ok"


def test_missing_totals_and_timings_are_derived():
    report = build_report()
    del report["totals"], report["timings"]
    parsed = parse_build_report(stdout_of(report), EXPECTED)
    assert parsed["totals"] == {"images": 2, "bytes": 123}
    assert parsed["timings"] == {}


@pytest.mark.parametrize("stdout", ["", "   \n\n", None])
def test_no_report(stdout):
    with pytest.raises(BuildReportError, match="no report"):
        parse_build_report(stdout, EXPECTED)


def test_stdout_at_the_ssm_limit_is_truncated():
    line = stdout_of(build_report())
    stdout = "x" * (SSM_STDOUT_LIMIT - len(line) - 1) + "\n" + line
    assert len(stdout) == SSM_STDOUT_LIMIT
    with pytest.raises(BuildReportError, match="report truncated at 24,000 characters of SSM stdout"):
        parse_build_report(stdout, EXPECTED)
    parse_build_report(stdout[1:], EXPECTED)  # one character less is fine


def test_json_line_cut_anywhere_is_truncated():
    line = json.dumps(build_report())
    for cut in range(1, len(line)):
        with pytest.raises(BuildReportError, match="report truncated"):
            parse_build_report(line[:cut] + "\n", EXPECTED)


@pytest.mark.parametrize(
    ("stdout", "message"),
    [
        ("done\n", "not JSON"),
        ("[1, 2]\n", "not a JSON object"),
        ('{"schema": 1} trailing\n', "not JSON"),
    ],
)
def test_not_a_json_object(stdout, message):
    with pytest.raises(BuildReportError, match=message):
        parse_build_report(stdout, EXPECTED)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"schema": 2}, "schema"),
        ({"schema": "1"}, "schema"),
        ({"schema": True}, "schema"),
        ({"action": "quiesce"}, "action"),
        ({"status": "failed", "error": "disk full"}, "status 'failed': disk full"),
        ({"status": None}, "status"),
        ({"volume_id": "vol-other"}, "vol-other"),
        ({"quiesced": False}, "not quiesced"),
        ({"quiesced": "true"}, "not quiesced"),
        ({"platform": "linux/s390x"}, "platform"),
        ({"images": None}, "no images"),
        ({"images": ["busybox"]}, "not an object"),
        ({"totals": {"images": 3}}, "totals.images"),
        ({"totals": {"bytes": -1}}, "totals.bytes"),
        ({"totals": []}, "totals"),
        ({"timings": {"pull_seconds": -1}}, "pull_seconds"),
        ({"timings": {"pull_seconds": "fast"}}, "pull_seconds"),
    ],
)
def test_bad_header_or_summary(overrides, message):
    with pytest.raises(BuildReportError, match=message):
        parse_build_report(stdout_of(build_report(**overrides)), EXPECTED, volume_id=VOLUME)


def test_volume_missing_from_report_when_expected():
    report = build_report()
    del report["volume_id"]
    with pytest.raises(BuildReportError, match="volume"):
        parse_build_report(stdout_of(report), EXPECTED, volume_id=VOLUME)


def test_platform_mismatch():
    with pytest.raises(BuildReportError, match="linux/arm64"):
        parse_build_report(stdout_of(build_report()), EXPECTED, platform="linux/arm64")


def test_missing_image_is_named():
    report = build_report()
    del report["images"][1]
    report["totals"]["images"] = 1
    with pytest.raises(BuildReportError, match=r"missing.*nvcr\.io/nvidia/pytorch"):
        parse_build_report(stdout_of(report), EXPECTED)


def test_extra_image_is_named():
    report = build_report()
    report["images"].append({"ref": "ghcr.io/evil/miner:1", "digest": SHA_A, "unpacked": True, "bytes": 1})
    with pytest.raises(BuildReportError, match=r"not requested.*ghcr\.io/evil/miner:1"):
        parse_build_report(stdout_of(report), EXPECTED)


def test_image_listed_twice():
    report = build_report()
    report["images"].append(dict(report["images"][0]))
    with pytest.raises(BuildReportError, match="twice"):
        parse_build_report(stdout_of(report), EXPECTED)


@pytest.mark.parametrize("unpacked", [False, None, "true", 1])
def test_not_unpacked_is_named(unpacked):
    with pytest.raises(BuildReportError, match=r"'busybox:1.37' is not unpacked"):
        parse_build_report(stdout_of(with_image(0, unpacked=unpacked)), EXPECTED)


@pytest.mark.parametrize("digest", [None, "", "sha256:abc", "sha256:" + "A" * 64, "sha512:" + "a" * 128])
def test_bad_digest_is_named(digest):
    with pytest.raises(BuildReportError, match=r"'busybox:1.37' has no valid digest"):
        parse_build_report(stdout_of(with_image(0, digest=digest)), EXPECTED)


def test_pinned_ref_with_another_digest():
    report = with_image(1, digest=SHA_A)
    with pytest.raises(BuildReportError, match=rf"pinned to {SHA_B} but the builder reported {SHA_A}"):
        parse_build_report(stdout_of(report), EXPECTED)


def test_pinned_ref_reported_under_another_digest_ref():
    report = with_image(1, ref=f"nvcr.io/nvidia/pytorch:24.08-py3@{SHA_A}", digest=SHA_A)
    with pytest.raises(BuildReportError, match="pinned to"):
        parse_build_report(stdout_of(report), EXPECTED)


def test_bad_image_bytes():
    with pytest.raises(BuildReportError, match="bytes"):
        parse_build_report(stdout_of(with_image(0, bytes=-5)), EXPECTED)


def test_unparseable_ref_in_report():
    with pytest.raises(BuildReportError, match="report image ref"):
        parse_build_report(stdout_of(with_image(0, ref="busybox;id")), EXPECTED)


def test_no_expected_refs():
    with pytest.raises(BuildReportError, match="expected"):
        parse_build_report(stdout_of(build_report()), [])


def quiesce_report(**overrides):
    report = {
        "schema": 1,
        "action": "quiesce",
        "status": "ok",
        "volume_id": VOLUME,
        "mounted": False,
        "containerd_running": False,
    }
    report.update(overrides)
    return json.dumps(report) + "\n"


def test_quiesce_report_ok():
    assert parse_quiesce_report(quiesce_report(), volume_id=VOLUME)["mounted"] is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mounted": True}, "still mounted"),
        ({"mounted": None}, "still mounted"),
        ({"containerd_running": True}, "containerd is still running"),
        ({"volume_id": "vol-other"}, "vol-other"),
        ({"action": "build"}, "action"),
        ({"status": "error"}, "status"),
    ],
)
def test_quiesce_report_failures(overrides, message):
    with pytest.raises(BuildReportError, match=message):
        parse_quiesce_report(quiesce_report(**overrides), volume_id=VOLUME)


def test_quiesce_report_empty_and_cut():
    with pytest.raises(BuildReportError, match="no report"):
        parse_quiesce_report("", volume_id=VOLUME)
    with pytest.raises(BuildReportError, match="truncated"):
        parse_quiesce_report(quiesce_report()[:-10], volume_id=VOLUME)
