"""The builder's report fits in SSM's 24,000 characters of stdout, or the image list is refused."""

import json

import pytest

from ml_cache.images import InvalidInputs
from ml_cache.report_budget import (
    LONGEST_STORED_NAME,
    SSM_STDOUT_MAX,
    check_report_fits,
    pinned,
    report_chars,
)
from ml_cache.scripts import build_cache_helpers as helpers

SHA512 = "sha512:" + "e" * 128


def refs_of(count: int) -> list[str]:
    """Realistic refs of different shapes: tagged, pinned by sha256 and by sha512."""
    shapes = ["nvcr.io/nvidia/pytorch-{i}:24.08-py3", "123456789012.dkr.ecr.us-west-2.amazonaws.com/ml/train-{i}:2.1",
              "busybox-{i}@" + SHA512]
    return [shapes[i % 3].format(i=i) for i in range(count)]


def real_report(refs: list[str], tmp_path) -> str:
    """The producer's own line (build_cache_helpers.report) at its longest for these refs: every byte count
    at a 16 TiB volume, 20 removed names of the grammar's longest, every ref reused."""
    top = 16384 * 1024**3
    names = [pinned(ref)[0] for ref in refs]
    prune = tmp_path / "prune.json"
    prune.write_text(json.dumps({
        "removed_images": [LONGEST_STORED_NAME] * helpers.LIST_CAP, "removed_images_total": 999_999,
        "reused_images": sorted(names, key=len, reverse=True)[:helpers.LIST_CAP], "reused_images_total": len(names),
        "bytes_pruned": top, "bytes_pulled": top}))
    fields = {"schema": "1", "platform": "linux/arm64", "volume_id": "vol-0123456789abcdef0", "fs_used": str(top),
              "restored": "1", "reason": "xfs_repair -n found problems", "fs_before": str(top),
              "fs_after": str(top), "trimmed": "1", "prune": str(prune), "started": "0", "prepared": "17280.5",
              "pulled": "50000.25", "verified": "150000.125", "quiesced": "172800.0"}
    rows = "\n".join(f"{name}\t{digest}\ttrue\t{top}\tnames" for name, digest in map(pinned, refs))
    return json.dumps(helpers.report("build", fields, rows), separators=(",", ":")) + "\n"


@pytest.mark.parametrize("count", [1, 3, 25, 40])
def test_the_budget_bounds_the_producers_real_report(count, tmp_path):
    refs = refs_of(count)
    line = real_report(refs, tmp_path)
    assert len(line) <= report_chars(refs)
    assert report_chars(refs) - len(line) < 80  # computed from the refs, not a guess with a wide margin


def test_a_tag_is_counted_with_the_digest_it_resolves_to():
    assert pinned("nvcr.io/nvidia/pytorch:24.08-py3") == (
        "nvcr.io/nvidia/pytorch:24.08-py3@sha256:" + "f" * 64, "sha256:" + "f" * 64)
    assert pinned(f"busybox@{SHA512}") == (f"docker.io/library/busybox@{SHA512}", SHA512)


def test_a_list_just_over_the_limit_is_refused_naming_images():
    refs = refs_of(200)
    fitting = max(n for n in range(len(refs) + 1) if report_chars(refs[:n]) <= SSM_STDOUT_MAX)
    assert 20 < fitting < 200
    check_report_fits(refs[:fitting])
    over = refs[:fitting + 1]
    assert report_chars(over) > SSM_STDOUT_MAX
    with pytest.raises(InvalidInputs, match=rf"images: the builder's report for these {fitting + 1} images can "
                                            rf"take [0-9,]+ characters, more than the 24,000 .* the first "
                                            rf"{fitting} fit"):
        check_report_fits(over)
