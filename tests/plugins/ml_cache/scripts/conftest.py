"""Fixtures for the build_cache.sh tests live in build_cache_lab (importable by the tests)."""

from build_cache_lab import builder, make_builder, registry

__all__ = ["builder", "make_builder", "registry"]
