"""`${VAR}` and `${VAR:-default}` in string values, replaced from the environment.

Interpolation runs on parsed string values, not on the file text, so a secret containing
YAML syntax can never change the structure of the config. `$$` is a literal `$`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(
    node: Any,
    env: Mapping[str, str],
    errors: list[str],
    path: str = "",
    filled: set[str] | None = None,
) -> Any:
    """Return a copy of `node` with variables replaced; unset variables are reported.

    Every string that had a variable replaced is added to `filled`: such values usually are
    secrets (`"${INTERNAL_KEY}"`), and logs and traces never show them."""
    if isinstance(node, str):
        return _replace(node, env, errors, path, filled)
    if isinstance(node, dict):
        return {
            k: interpolate(v, env, errors, _join(path, str(k)), filled) for k, v in node.items()
        }
    if isinstance(node, list):
        return [interpolate(v, env, errors, f"{path}[{i}]", filled) for i, v in enumerate(node)]
    return node


def _replace(
    text: str, env: Mapping[str, str], errors: list[str], path: str, filled: set[str] | None
) -> str:
    if "$" not in text:
        return text
    replaced = False

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        nonlocal replaced
        replaced = True
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        errors.append(f"{path or '<root>'}: environment variable {name} is not set")
        return ""

    result = _VAR.sub(sub, text)
    if replaced and filled is not None and result:
        filled.add(result)
    return result


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
