"""Load a config file: parse (YAML or JSON), interpolate `${VAR}`, validate, report every
error with its exact path. Compiling the rules (authz.authorizer) adds semantic errors."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from authz.config.env import interpolate
from authz.config.schema import RULE_KINDS, Config
from authz.errors import ConfigError

_DB_TYPES = {"sqlite", "postgres", "mongo"}


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:  # `{[a]: 1}` or `{{a: 1}: 2}`: YAML allows it, a config cannot
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a scalar", key_node.start_mark
            ) from None
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)

# YAML 1.2 booleans: only true/false. YAML 1.1's yes/no/on/off would turn an endpoint named
# `on` or a value `no` (a country code, an answer) into a boolean with a baffling error.
_BOOL = "tag:yaml.org,2002:bool"
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{p}: not UTF-8 text"]) from None
    return load_config_text(text, env, name=str(p), base_dir=p.parent)


def load_config_text(
    text: str,
    env: Mapping[str, str] | None = None,
    name: str = "<config>",
    base_dir: Path | None = None,
) -> Config:
    try:
        raw = parse_document(text, name)
        errors: list[str] = []
        filled: set[str] = set()
        raw = interpolate(raw, os.environ if env is None else env, errors, filled=filled)
        if errors:
            raise ConfigError(errors)
        try:
            config = Config.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(format_errors(exc)) from None
    except RecursionError:  # PyYAML, interpolation and pydantic all recurse per level
        raise ConfigError([f"{name}: the document is nested too deeply"]) from None
    config._version = hashlib.sha256(text.encode()).hexdigest()[:12]
    config._base_dir = base_dir or Path.cwd()
    config._interpolated = frozenset(filled)
    return config


def parse_document(text: str, name: str = "<config>") -> dict[str, Any]:
    """YAML (a superset of JSON for our purposes) into a dict, duplicate keys rejected."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{name}: invalid YAML/JSON{where}: {problem}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"{name}: the config must be a mapping (got {type(raw).__name__})"])
    return raw


def format_errors(exc: ValidationError) -> list[str]:
    """Pydantic errors as 'path: message' lines, with the config's own vocabulary."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(err["loc"])
        kind = err["type"]
        ctx = err.get("ctx") or {}
        if kind == "extra_forbidden":
            path, msg = _format_path(loc[:-1]), f"unknown key '{loc[-1]}'"
        elif kind == "union_tag_invalid":
            what = "rule" if ctx.get("discriminator") == "'rule'" else "type"
            path, msg = _format_path(loc), f"unknown {what} {ctx.get('tag')!r}"
        elif kind == "union_tag_not_found":
            path, msg = _format_path(loc), f"missing key {ctx.get('discriminator')}"
        elif kind == "literal_error" and loc and loc[-1] == "eval":
            path, msg = _format_path(loc), f"unknown operator {err['input']!r}"
        elif kind == "literal_error" and loc and loc[-1] == "type":
            path, msg = _format_path(loc), f"unknown type {err['input']!r}"
        elif kind == "too_short":
            path, msg = _format_path(loc), "must not be empty"
        elif kind == "missing":
            path, msg = _format_path(loc[:-1]), f"missing key '{loc[-1]}'"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            path = _format_path(loc)
        lines.append(f"{path or '<root>'}: {msg}")
    return lines


def _clean_loc(loc: tuple[Any, ...]) -> list[Any]:
    """Drop the discriminator tags pydantic inserts (…rule.match.eval -> …rule.eval)."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        prev = loc[i - 1] if i else None
        if part in RULE_KINDS and (prev in ("rule", "clause") or isinstance(prev, int)):
            continue
        if part in _DB_TYPES and i >= 2 and loc[i - 2] == "databases":
            continue
        out.append(part)
    return out


def _format_path(loc: list[Any]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path
