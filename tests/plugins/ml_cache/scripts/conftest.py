"""Fixtures for the build_cache.sh tests live in build_cache_lab (importable by the tests)."""

from build_cache_lab import builder, containerd, make_builder, registry

__all__ = ["builder", "containerd", "make_builder", "registry"]
