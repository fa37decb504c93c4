"""What a compiled reference gives: a value, or `MISSING` when its path does not resolve.

Shared by the rule references (rules/refs.py), the `utils.*` functions and the JSON field
paths of field rules (authz/documents.py), so none of them imports another for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()
Getter = Callable[[dict[str, Any]], Any]  # args -> value | MISSING


def constant(value: Any) -> Getter:
    """The getter of a literal; `is_constant` knows it, `.value` holds the literal."""

    def get(args: dict[str, Any]) -> Any:
        return value

    get.constant = True  # type: ignore[attr-defined]
    get.value = value  # type: ignore[attr-defined]
    return get


def is_constant(getter: Getter) -> bool:
    return getattr(getter, "constant", False)


def literal(getter: Getter) -> Any:
    """The literal a `constant` getter returns, MISSING for any other getter."""
    return getattr(getter, "value", MISSING) if is_constant(getter) else MISSING


def array_index(key: str) -> int | None:
    """The array index a path key names (`0`, `12`), or None: only ASCII digits count."""
    return int(key) if key.isascii() and key.isdigit() else None
