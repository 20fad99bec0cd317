"""OCI image references: parse, normalise and police them before anything reaches a registry.

`ctr` accepts references carrying shell metacharacters and forwards them to the registry, so
every ref is checked here against the distribution/reference grammar (the one Docker and
containerd implement) before a builder is launched. Pure Python: cheap to import and test.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

PLATFORMS = {"x86_64": "linux/amd64", "arm64": "linux/arm64"}

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = ("index.docker.io",)
_OFFICIAL_REPO_PREFIX = "library/"
_DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255
_MESSAGE_VALUE_MAX = 120

# The distribution/reference grammar as Docker and containerd implement it (reference.go's grammar,
# regexp.go's expressions, v0.6.0: https://github.com/distribution/reference/blob/v0.6.0/regexp.go),
# ASCII only (Python's \w would otherwise accept Unicode). reference.go writes the separator `[-]*`;
# between two alpha-numerics that is regexp.go's `[-]+`.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_DOMAIN_RE = re.compile(_DOMAIN, re.ASCII)
_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*", re.ASCII)
_TAG_RE = re.compile(_TAG, re.ASCII)
_DIGEST_RE = re.compile(_DIGEST, re.ASCII)
_SHA256_RE = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
_BARE_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}", re.ASCII)
# Every character the reference grammar uses anywhere (names, host:port, [IPv6], tag, digest).
_OUTSIDE_GRAMMAR_RE = re.compile(r"[^A-Za-z0-9._\-/:@+\[\]]")
# The grammar admits any algorithm; containerd parses a digest with opencontainers/go-digest, which
# knows only these (algorithm.go: sha256, sha384, sha512, lower-case hex of the hash's length) and
# refuses every other one: https://github.com/opencontainers/go-digest/blob/master/algorithm.go
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


class InvalidInputs(ValueError):
    """A run's inputs are unusable; raised before any AWS call."""


class InvalidImageReference(InvalidInputs):
    """An image reference breaks the OCI distribution reference grammar."""


def show(value: object) -> str:
    """repr() a value for an error message, shortened so a 10 kB attack string stays readable."""
    text = repr(value)
    if len(text) > _MESSAGE_VALUE_MAX:
        return f"{text[:_MESSAGE_VALUE_MAX]}... ({len(text)} chars)"
    return text


@dataclass(frozen=True)
class ImageRef:
    """A parsed, normalised image reference; str() gives the canonical full form."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def pinned(self) -> bool:
        """True when the content is fixed by digest, whatever the tag says."""
        return self.digest is not None

    @property
    def name(self) -> str:
        """registry/repository, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def describe_character(char: str) -> str:
    """`character ';'`, `whitespace (' ')`, `control character U+0007`: what a user can find in their input."""
    if char.isspace():
        return f"whitespace ({char!r})"
    if not char.isprintable():
        return f"control character U+{ord(char):04X}"
    return f"character {char!r}" if char.isascii() else f"non-ASCII character {char!r}"


def _invalid(ref: str, why: str) -> InvalidImageReference:
    return InvalidImageReference(f"invalid image reference {show(ref)}: {why}")


def _split_domain(name: str) -> tuple[str, str]:
    """Docker's rule: the first component is a registry when it has '.' or ':', is 'localhost',
    or is not all lowercase; otherwise the name lives on Docker Hub."""
    first, slash, rest = name.partition("/")
    is_domain = slash and ("." in first or ":" in first or first == "localhost" or first.lower() != first)
    if not is_domain:
        return DOCKER_HUB, name
    return first, rest


def _validate_digest(ref: str, digest: str) -> None:
    if not _DIGEST_RE.fullmatch(digest):
        raise _invalid(ref, f"digest {show(digest)} is not algorithm:hex")
    algorithm, _, encoded = digest.partition(":")
    length = DIGEST_HEX_LENGTHS.get(algorithm)
    if length is None:
        raise _invalid(ref, f"digest algorithm {algorithm!r} is not one containerd accepts "
                            f"({', '.join(DIGEST_HEX_LENGTHS)})")
    if len(encoded) != length or encoded.lower() != encoded:
        raise _invalid(ref, f"a {algorithm} digest is {length} lower-case hex characters, got {len(encoded)}"
                            + ("" if encoded.lower() == encoded else " with upper case"))


def parse_reference(ref: str) -> ImageRef:
    """Parse `[registry/]repository[:tag][@digest]`, normalising Docker Hub names and the registry host to
    lower case (DNS names are case-insensitive; the grammar keeps the path lower case, refused otherwise)."""
    if not isinstance(ref, str):
        raise InvalidImageReference(f"image reference must be a string, got {show(ref)}")
    if not ref:
        raise InvalidImageReference("image reference is empty")
    outside = _OUTSIDE_GRAMMAR_RE.search(ref)
    if outside:  # the first offending character, so `busybox;rm -rf /` blames the `;`
        raise _invalid(ref, f"{describe_character(outside.group())} at position {outside.start() + 1} "
                            "is not allowed in an image reference")
    if _BARE_IDENTIFIER_RE.fullmatch(ref):
        raise _invalid(ref, "a bare 64-hex identifier is not a repository name")

    remainder, at, digest = ref.partition("@")
    digest_value: str | None = None
    if at:
        _validate_digest(ref, digest)
        digest_value = digest

    tag_value: str | None = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag_value = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.fullmatch(tag_value):
            raise _invalid(ref, f"tag {show(tag_value)} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")

    registry, repository = _split_domain(remainder)
    if not _DOMAIN_RE.fullmatch(registry):
        raise _invalid(ref, f"registry {show(registry)} is not host[:port]")
    if repository.lower() != repository:
        raise _invalid(ref, "repository name must be lowercase")
    if not _PATH_RE.fullmatch(repository):
        raise _invalid(ref, f"repository {show(repository)} breaks the path-component grammar")

    registry = registry.lower()
    if registry in _DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = _OFFICIAL_REPO_PREFIX + repository
    if len(registry) + 1 + len(repository) > NAME_TOTAL_LENGTH_MAX:
        raise _invalid(ref, f"name is longer than {NAME_TOTAL_LENGTH_MAX} characters")
    if tag_value is None and digest_value is None:
        tag_value = _DEFAULT_TAG
    return ImageRef(registry=registry, repository=repository, tag=tag_value, digest=digest_value)


def canonical_reference(ref: str) -> str:
    """The full form of a reference (`busybox` -> `docker.io/library/busybox:latest`), to compare refs
    the way users and the kubelet write them; text that is no valid reference compares as written."""
    try:
        return str(parse_reference(ref.strip()))
    except InvalidImageReference:
        return ref.strip()


def _host_pattern_regex(pattern: str) -> re.Pattern[str]:
    """Each `*` stands for exactly one DNS label: `*.example.com` never matches
    `a.b.example.com`, `evil.com/x` or a name with a port the pattern did not allow."""
    label = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
    parts = [label if piece == "*" else re.escape(piece) for piece in re.split(r"(\*)", pattern.lower())]
    return re.compile("".join(parts), re.ASCII)


def registry_allowed(registry: str, allowed: list[str]) -> bool:
    """Whether a registry host[:port] matches an allow-list entry (exact, or `*` per DNS label).

    Matching is case-insensitive (DNS names are) and covers the whole host[:port]: an entry
    without a port does not allow the same host on another port.
    """
    if not isinstance(registry, str) or not _DOMAIN_RE.fullmatch(registry):
        return False
    host = registry.lower()
    for entry in allowed:
        if not isinstance(entry, str) or not entry:
            continue
        if "*" in entry:
            if _host_pattern_regex(entry).fullmatch(host):
                return True
        elif entry.lower() == host:
            return True
    return False


def check_allowed_registries(entries: list[str]) -> None:
    """An allow-list entry with a wildcard under amazonaws.com must name the account: ECR hosts are
    `<account>.dkr.ecr.<region>.amazonaws.com`, so `*.dkr.ecr.*.amazonaws.com` lets images (and the
    builder's ECR token requests) come from any AWS account, an attacker's included."""
    for entry in entries:
        host = entry.lower() if isinstance(entry, str) else ""
        if "*" in host and host.endswith((".amazonaws.com", ".amazonaws.com.cn")) \
                and not re.match(r"[0-9]{12}\.", host, re.ASCII):
            raise InvalidInputs(f"allowed_registries entry {entry!r} allows the ECR registries of any AWS account: "
                                f"name the account, e.g. '123456789012.dkr.ecr.*.amazonaws.com' (any region) or "
                                f"'123456789012.dkr.ecr.us-west-2.amazonaws.com'")


def validate_images(refs: list[str], allowed_registries: list[str], *, require_digest: bool = False) -> list[ImageRef]:
    """Parse and police a run's image list; the error names the first offending value. Refs equal after
    normalisation (`busybox` and `docker.io/library/busybox:latest`, `NVCR.io/x` and `nvcr.io/x`) are
    refused, naming both spellings: the list should say what is cached once."""
    if not isinstance(refs, list | tuple):
        raise InvalidInputs(f"images must be a list of image references, got {show(refs)}")
    if not refs:
        raise InvalidInputs("images is empty: give at least one image reference")
    if not isinstance(allowed_registries, list | tuple) or not allowed_registries:
        raise InvalidInputs(f"allowed_registries must be a non-empty list, got {show(allowed_registries)}")
    check_allowed_registries(list(allowed_registries))

    parsed: list[ImageRef] = []
    seen: dict[str, str] = {}
    for ref in refs:
        image = parse_reference(ref)
        if not registry_allowed(image.registry, list(allowed_registries)):
            raise InvalidInputs(
                f"image {show(ref)}: registry {show(image.registry)} is not in allowed_registries "
                f"{list(allowed_registries)}"
            )
        if require_digest and not image.pinned:
            raise InvalidInputs(f"image {show(ref)} is not pinned by digest (policy requires @sha256:...)")
        keys = [str(image)]
        if image.digest is not None:
            keys.append(f"{image.name}@{image.digest}")  # same content under two tags
        for key in keys:
            if key in seen:
                raise InvalidInputs(f"duplicate image {show(ref)}: same as {show(seen[key])} (both are {key})")
        for key in keys:
            seen[key] = ref
        parsed.append(image)
    return parsed


def is_sha256_digest(value: object) -> bool:
    """True for `sha256:` + 64 lowercase hex, the only digest form the pipeline records."""
    return isinstance(value, str) and _SHA256_RE.fullmatch(value) is not None


def image_set_digest(digests: list[str]) -> str:
    """Identify a set of images independent of order: sha256 over the sorted digests."""
    if not digests:
        raise InvalidInputs("image set is empty: no digests to identify it")
    for digest in digests:
        if not is_sha256_digest(digest):
            raise InvalidInputs(f"digest {show(digest)} is not sha256:<64 lowercase hex>")
    joined = "\n".join(sorted(digests))
    return "sha256:" + hashlib.sha256(joined.encode("ascii")).hexdigest()
