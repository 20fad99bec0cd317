"""Helpers to replace a method on a moto class while keeping the original callable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_originals: dict[tuple[type, str], Callable[..., Any]] = {}


def replace(cls: type, name: str, make: Callable[[Callable[..., Any] | None], Callable[..., Any]]) -> None:
    """Set `cls.name = make(original)`; `original` is None for actions moto lacks."""
    key = (cls, name)
    if key not in _originals:
        _originals[key] = cls.__dict__.get(name) or getattr(cls, name, None)
    new = make(_originals[key])
    new.__name__ = name
    setattr(cls, name, new)


def original(cls: type, name: str) -> Callable[..., Any]:
    return _originals[(cls, name)]
