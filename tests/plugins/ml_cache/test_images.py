"""Image reference grammar, normalisation, allow-list and image-set identity."""

import hashlib
import re

import pytest

from ml_cache.images import (
    PLATFORMS,
    ImageRef,
    InvalidImageReference,
    InvalidInputs,
    image_set_digest,
    parse_reference,
    registry_allowed,
    validate_images,
)

SHA_A = "sha256:" + "a" * 64
SHA_B = "sha256:" + "b" * 64
ALLOWED = ["public.ecr.aws", "123456789012.dkr.ecr.*.amazonaws.com", "nvcr.io", "docker.io", "localhost:5000"]


@pytest.mark.parametrize(
    ("ref", "canonical"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.37", "docker.io/library/busybox:1.37"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
        ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
        ("public.ecr.aws/docker/library/busybox:1.37", "public.ecr.aws/docker/library/busybox:1.37"),
        ("nvcr.io/nvidia/pytorch:24.08-py3", "nvcr.io/nvidia/pytorch:24.08-py3"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/team/app:v1", "localhost:5000/team/app:v1"),
        ("127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:v1"),
        ("[::1]:5000/app:v1", "[::1]:5000/app:v1"),
        ("Registry.Example.com/app", "registry.example.com/app:latest"),  # DNS names are case-insensitive
        ("Docker.IO/busybox", "docker.io/library/busybox:latest"),
        ("INDEX.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
        (f"busybox@{SHA_A}", f"docker.io/library/busybox@{SHA_A}"),
        (f"busybox:1.37@{SHA_A}", f"docker.io/library/busybox:1.37@{SHA_A}"),
        ("a/b__c/d-e/f.g/h---i:TAG_1.x-y", "docker.io/a/b__c/d-e/f.g/h---i:TAG_1.x-y"),
        ("host:5000", "docker.io/library/host:5000"),  # Docker reads a lone colon as a tag
    ],
)
def test_parse_normalises_like_docker(ref, canonical):
    assert str(parse_reference(ref)) == canonical


def test_parse_splits_fields():
    image = parse_reference(f"123456789012.dkr.ecr.us-west-2.amazonaws.com/ml/train:2.1@{SHA_A}")
    assert image == ImageRef("123456789012.dkr.ecr.us-west-2.amazonaws.com", "ml/train", "2.1", SHA_A)
    assert image.pinned
    assert not parse_reference("busybox:1").pinned
    assert parse_reference(f"busybox@{SHA_A}").tag is None


@pytest.mark.parametrize("digest", ["sha256:" + "0" * 64, "sha384:" + "0" * 96, "sha512:" + "0" * 128])
def test_digests_containerd_accepts(digest):
    assert parse_reference(f"app@{digest}").digest == digest


@pytest.mark.parametrize(
    ("digest", "why"),
    [
        ("sha1:" + "0" * 40, r"digest algorithm 'sha1' is not one containerd accepts \(sha256, sha384, sha512\)"),
        ("md5:" + "0" * 32, r"algorithm 'md5' is not one containerd accepts"),
        ("multihash+base58:" + "0" * 32, r"algorithm 'multihash\+base58' is not one"),
        ("sha256:" + "A" * 64, r"a sha256 digest is 64 lower-case hex characters, got 64 with upper case"),
        ("sha384:" + "0" * 64, r"a sha384 digest is 96 lower-case hex characters, got 64"),
        ("sha512:" + "0" * 96, r"a sha512 digest is 128 lower-case hex characters, got 96"),
    ],
)
def test_digests_containerd_refuses_name_the_reason(digest, why):
    with pytest.raises(InvalidImageReference, match=why):
        parse_reference(f"app@{digest}")


@pytest.mark.parametrize(
    "ref",
    [
        "",
        " busybox",
        "busybox ",
        "busy box",
        "busybox\n",
        "a\nb",
        "busybox\tlatest",
        "busybox;rm -rf /",
        "busybox;reboot",
        "busybox|sh",
        "busybox&&id",
        "busybox&",
        "$(id)",
        "busybox:$(id)",
        "busybox$IFS",
        "${HOME}",
        "`id`",
        "busybox:`id`",
        "busybox>out",
        "busybox<in",
        "(busybox)",
        "'busybox'",
        '"busybox"',
        "busybox\\",
        "busybox#x",
        "busybox*",
        "busybox?",
        "~/busybox",
        "../busybox",
        "./busybox",
        "/busybox",
        "busybox/",
        "a//b",
        "--help",
        "-busybox",
        "busybox-",
        "busybox_",
        "busybox.",
        ".busybox",
        "a..b",
        "a___b",
        "a-_b",
        "BusyBox",
        "docker.io/Library/busybox",
        "registry.example.com/App",
        "busybox:",
        "busybox:-1",
        "busybox:.1",
        "busybox:" + "a" * 129,
        "busybox:a/b",
        "busybox@",
        "busybox@sha256:",
        "busybox@sha256:" + "A" * 64,
        "busybox@sha256:" + "a" * 63,
        "busybox@sha256:" + "a" * 65,
        "busybox@sha256:" + "g" * 64,
        "busybox@sha512:" + "a" * 64,
        "busybox@md5:abc",
        "busybox@:" + "a" * 64,
        f"busybox@{SHA_A}@{SHA_A}",
        "a" * 64,
        "bus\u0443box",  # Cyrillic lookalike
        "busybox:1\u200b",  # zero-width space
        "busybox:\uff11",  # fullwidth digit: \w would accept it without re.ASCII
        "\uff42usybox",  # fullwidth letter
        "docker\u2024io/busybox",  # one-dot leader instead of '.'
        "\x00busybox",
        "busybox\x7f",
        "exa_mple.com/app",
        "-bad.com/app",
        "bad-.com/app",
        "host:port/app",
        "host:5000:6000/app",
        "[fe80::1%eth0]/app",
        "a/" + "b" * 250,
        "registry.example.com/" + "/".join(["abc"] * 60),
    ],
)
def test_parse_rejects_bad_and_hostile_refs(ref):
    with pytest.raises(InvalidImageReference):
        parse_reference(ref)


def test_name_length_limit_is_255_after_normalisation():
    ok = "r.io/" + "a" * 250
    assert len(ok) == 255
    assert parse_reference(ok).repository == "a" * 250
    with pytest.raises(InvalidImageReference, match="255"):
        parse_reference("r.io/" + "a" * 251)
    # "docker.io/library/" is counted too, as Docker does
    with pytest.raises(InvalidImageReference, match="255"):
        parse_reference("a" * 240)


def test_error_names_the_value_and_stays_short():
    with pytest.raises(InvalidImageReference, match=r"busybox;rm -rf /"):
        parse_reference("busybox;rm -rf /")
    with pytest.raises(InvalidImageReference) as error:
        parse_reference("a\nb")
    assert "'a\\nb'" in str(error.value)  # repr: the newline is visible, not a line break
    with pytest.raises(InvalidImageReference) as error:
        parse_reference("x" * 10_000 + ";")
    assert len(str(error.value)) < 400


@pytest.mark.parametrize("value", [None, 5, b"busybox", ["busybox"]])
def test_parse_rejects_non_strings(value):
    with pytest.raises(InvalidImageReference):
        parse_reference(value)


def test_invalid_reference_is_an_invalid_input_and_a_value_error():
    assert issubclass(InvalidImageReference, InvalidInputs)
    assert issubclass(InvalidInputs, ValueError)


@pytest.mark.parametrize(
    ("registry", "expected"),
    [
        ("public.ecr.aws", True),
        ("PUBLIC.ECR.AWS", True),
        ("123456789012.dkr.ecr.us-west-2.amazonaws.com", True),
        ("docker.io", True),
        ("localhost:5000", True),
        ("localhost", False),  # the allow-list names a port
        ("localhost:5001", False),
        ("nvcr.io:443", False),
        ("public.ecr.aws.evil.com", False),
        ("evilpublic.ecr.aws", False),
        ("dkr.ecr.us-west-2.amazonaws.com", False),  # '*' needs a label
        ("a.b.dkr.ecr.us-west-2.amazonaws.com", False),  # '*' is one label, not several
        ("123.dkr.ecr.us-west-2.amazonaws.com.evil.com", False),
        ("210987654321.dkr.ecr.us-west-2.amazonaws.com", False),  # another account
        ("123.dkr.ecr.us-west-2.evil.com", False),
        ("123.dkr.ecr.evil.com/x.amazonaws.com", False),
        ("evil.com/x.dkr.ecr.us-west-2.amazonaws.com", False),
        ("123.dkr.ecr.us-west-2.amazonaws.com:444", False),
        ("", False),
        ("ghcr.io", False),
    ],
)
def test_registry_allowed(registry, expected):
    assert registry_allowed(registry, ALLOWED) is expected


def test_registry_allowed_ignores_junk_entries_and_empty_list():
    assert not registry_allowed("docker.io", [])
    assert not registry_allowed("docker.io", ["", None])
    assert registry_allowed("x.example.com:5000", ["*.example.com:5000"])


def test_validate_images_returns_parsed_refs_in_order():
    images = validate_images(["busybox:1.37", f"nvcr.io/nvidia/pytorch:24.08-py3@{SHA_A}"], ALLOWED)
    assert [str(i) for i in images] == [
        "docker.io/library/busybox:1.37",
        f"nvcr.io/nvidia/pytorch:24.08-py3@{SHA_A}",
    ]


@pytest.mark.parametrize("refs", [[], None, "busybox", {"busybox": 1}])
def test_validate_images_needs_a_non_empty_list(refs):
    with pytest.raises(InvalidInputs, match="images"):
        validate_images(refs, ALLOWED)


def test_validate_images_rejects_registry_outside_allow_list_naming_it():
    with pytest.raises(InvalidInputs, match=r"ghcr\.io/org/app:1.*ghcr\.io.*not in allowed_registries"):
        validate_images(["busybox", "ghcr.io/org/app:1"], ALLOWED)


def test_validate_images_reports_the_bad_ref_among_good_ones():
    with pytest.raises(InvalidImageReference, match=r"\$\(id\)"):
        validate_images(["busybox", "$(id)"], ALLOWED)


@pytest.mark.parametrize(
    ("refs", "duplicate"),
    [
        (["busybox", "docker.io/library/busybox:latest"], "docker.io/library/busybox:latest"),
        (["busybox:1", "index.docker.io/busybox:1"], "index.docker.io/busybox:1"),
        ([f"busybox:1@{SHA_A}", f"busybox:2@{SHA_A}"], f"busybox:2@{SHA_A}"),
        ([f"busybox@{SHA_A}", f"busybox:2@{SHA_A}"], f"busybox:2@{SHA_A}"),
        (["nvcr.io/nvidia/pytorch:1", "NVCR.IO/nvidia/pytorch:1"], "NVCR.IO/nvidia/pytorch:1"),
    ],
)
def test_validate_images_rejects_duplicates_after_normalisation(refs, duplicate):
    with pytest.raises(InvalidInputs, match="duplicate") as error:
        validate_images(refs, ALLOWED)
    assert repr(duplicate) in str(error.value)
    assert repr(refs[0]) in str(error.value)  # both spellings are named


@pytest.mark.parametrize("entry", ["*.dkr.ecr.*.amazonaws.com", "*.dkr.ecr.us-west-2.amazonaws.com",
                                   "*.dkr.ecr-fips.*.amazonaws.com", "*.dkr.ecr.*.amazonaws.com.cn",
                                   "*.*.*.*.amazonaws.com", "*.DKR.ECR.*.AMAZONAWS.COM"])
def test_ecr_allow_list_entries_must_name_the_account(entry):
    with pytest.raises(InvalidInputs, match=rf"allowed_registries entry '{re.escape(entry)}' allows the ECR "
                                            r"registries of any AWS account: name the account, e\.g\. "
                                            r"'123456789012\.dkr\.ecr\.\*\.amazonaws\.com'"):
        validate_images(["busybox"], ["docker.io", entry])


@pytest.mark.parametrize("entry", ["123456789012.dkr.ecr.*.amazonaws.com",
                                   "123456789012.dkr.ecr.us-west-2.amazonaws.com", "*.example.com", "public.ecr.aws"])
def test_allow_list_entries_that_name_the_account_or_are_not_ecr(entry):
    assert validate_images(["busybox"], ["docker.io", entry])


def test_same_tag_in_two_registries_is_not_a_duplicate():
    assert len(validate_images(["busybox:1", "public.ecr.aws/docker/library/busybox:1"], ALLOWED)) == 2


def test_validate_images_digest_policy():
    validate_images([f"busybox@{SHA_A}"], ALLOWED, require_digest=True)
    with pytest.raises(InvalidInputs, match=r"'busybox:1'.*not pinned"):
        validate_images([f"busybox@{SHA_A}", "busybox:1"], ALLOWED, require_digest=True)


def test_validate_images_needs_an_allow_list():
    with pytest.raises(InvalidInputs, match="allowed_registries"):
        validate_images(["busybox"], [])


def test_image_set_digest_is_order_independent_and_documented():
    expected = "sha256:" + hashlib.sha256(f"{SHA_A}\n{SHA_B}".encode()).hexdigest()
    assert image_set_digest([SHA_B, SHA_A]) == expected
    assert image_set_digest([SHA_A, SHA_B]) == expected
    assert image_set_digest([SHA_A]) == "sha256:" + hashlib.sha256(SHA_A.encode()).hexdigest()
    assert image_set_digest([SHA_A]) != image_set_digest([SHA_B])


@pytest.mark.parametrize("digests", [[], ["sha256:abc"], ["sha256:" + "A" * 64], [None]])
def test_image_set_digest_rejects_bad_digests(digests):
    with pytest.raises(InvalidInputs):
        image_set_digest(digests)


def test_platforms():
    assert PLATFORMS == {"x86_64": "linux/amd64", "arm64": "linux/arm64"}


@pytest.mark.parametrize(("ref", "blamed"), [
    ("busybox;rm -rf /", "character ';' at position 8"),  # the `;`, not the later space
    ("busybox rm", "whitespace (' ') at position 8"),
    ("busybox$(reboot)", "character '$' at position 8"),
    ("a\x07b", "control character U+0007 at position 2"),
    ("büsybox", "non-ASCII character 'ü' at position 2"),
])
def test_error_blames_the_first_character_outside_the_grammar(ref, blamed):
    with pytest.raises(InvalidImageReference) as error:
        parse_reference(ref)
    assert blamed in str(error.value)
