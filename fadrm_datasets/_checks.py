"""Argument checks shared by the library and the builders, so every refusal reads the same way."""

from __future__ import annotations

from typing import Iterable, TypeVar

T = TypeVar("T")


def one_of(what: str, value: T, choices: Iterable[T]) -> T:
    """``value`` if it is among ``choices``; otherwise a ValueError naming them all."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


__all__ = ["one_of"]
