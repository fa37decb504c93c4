"""`authz validate`: every problem of a config file in one run, and with `--connect` the
tables and columns its `query` rules name, checked against the real datastores.

Loading stops at the first stage that fails (an unset variable, then the schema, then the
rules), which is right for `serve` and makes fixing a file a loop of runs. Here each stage
goes on with what it can: an unset variable is reported and its value left empty (problems
at that path are its consequence, not reported again); a part that does not fit the schema
is reported and set aside (a rule becomes `deny`, else its endpoint, service, datastore or
top-level key is left out) so the rest can still be validated and compiled.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydantic import ValidationError

from authz.config.env import interpolate
from authz.config.load import format_errors, parse_document
from authz.config.schema import Config
from authz.errors import ConfigError

_ROUNDS = 20  # schema passes at most (each sets aside what failed)


class Report:
    """What validating one file found: the problems and, when the schema passed, the config."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.config: Config | None = None
        self.authorizer: Any = None
        self._quiet: list[str] = []  # paths whose problems follow from one already reported
        self._dropped: set[str] = set()  # datastore aliases set aside

    def add(self, lines: list[str]) -> None:
        for line in lines:
            if not self._follows(line):
                self.problems.append(line)

    def _follows(self, line: str) -> bool:
        """Does `line` only follow from a problem already reported?"""
        path = line.split(":", 1)[0]
        if any(path == q or path.startswith((q + ".", q + "[")) for q in self._quiet):
            return True
        return any(f"unknown database alias {a!r}" in line for a in self._dropped)


def validate_file(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Report:
    report = Report()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        raw = parse_document(text, str(p))
    except OSError as exc:
        report.problems.append(f"{p}: cannot read: {exc.strerror or exc}")
        return report
    except UnicodeDecodeError:
        report.problems.append(f"{p}: not UTF-8 text")
        return report
    except ConfigError as exc:  # not YAML: nothing else can be read
        report.problems.extend(exc.errors)
        return report
    errors: list[str] = []
    filled: set[str] = set()
    raw = interpolate(raw, os.environ if env is None else env, errors, filled=filled)
    report.add(errors)
    report._quiet.extend(line.split(":", 1)[0] for line in errors)
    config = _schema(raw, report)
    if config is None:
        return report
    config._version = hashlib.sha256(text.encode()).hexdigest()[:12]
    config._base_dir = p.parent
    config._interpolated = frozenset(filled)
    report.config = config
    _compile(config, report)
    return report


def _schema(raw: dict[str, Any], report: Report) -> Config | None:
    """The config model, setting aside each part that does not fit (reported) until the
    rest does; None when what is left still does not."""
    pruned: list[tuple[Any, ...]] = []
    for _ in range(_ROUNDS):
        try:
            return Config.model_validate(raw)
        except ValidationError as exc:
            fresh = [
                (err, line)
                for err, line in zip(exc.errors(), format_errors(exc), strict=True)
                if not any(tuple(err["loc"][: len(p)]) == p for p in pruned)
            ]
            report.add([line for _, line in fresh])
            progress = False
            for err, _ in fresh:
                where = _set_aside(raw, err["loc"], report)
                if where is not None:
                    pruned.append(where)
                    report._quiet.append(_path(where))  # what it leads to is not news
                    progress = True
            if not progress:
                return None
        except RecursionError:
            report.problems.append("<root>: the document is nested too deeply")
            return None
    return None


def _set_aside(raw: dict[str, Any], loc: tuple[Any, ...], report: Report) -> tuple[Any, ...] | None:
    """Remove the smallest part around `loc` that can go; its location, or None."""
    trail: list[tuple[Any, Any]] = []  # (container, key) from the root down
    obj: Any = raw
    for part in loc:  # parts that are not keys are tags pydantic inserts: skipped
        if (isinstance(obj, dict) and part in obj) or (
            isinstance(obj, list) and isinstance(part, int) and 0 <= part < len(obj)
        ):
            trail.append((obj, part))
            obj = obj[part]
    keys = tuple(k for _, k in trail)
    for i in range(len(trail) - 1, -1, -1):
        container, key = trail[i]
        value = container[key]
        if isinstance(value, dict) and isinstance(value.get("rule"), str):
            if value == {"rule": "deny"}:
                break
            container[key] = {"rule": "deny"}
            return keys[: i + 1]
    depth = 4 if keys[:1] == ("services",) and keys[2:3] == ("endpoints",) else 2
    if keys[:1] in (("services",), ("databases",)) and len(keys) >= depth:
        if keys[0] == "databases":
            report._dropped.add(str(keys[1]))
        container, key = trail[depth - 1]
        del container[key]
        return keys[:depth]
    if keys and keys[0] != "project":
        del raw[keys[0]]
        return keys[:1]
    return None


def _path(keys: tuple[Any, ...]) -> str:
    """`("a", 0, "b")` as the config paths of messages: `a[0].b`."""
    out = ""
    for k in keys:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


def _compile(config: Config, report: Report) -> None:
    from authz.authorizer import Authorizer
    from authz.runtime import Runtime

    runtime: Any
    try:
        runtime = Runtime(config)
    except ConfigError as exc:
        report.add(exc.errors)
        runtime = SimpleNamespace(identity=SimpleNamespace(can_sign=True))
    try:
        report.authorizer = Authorizer(config, runtime)
    except ConfigError as exc:
        report.add(exc.errors)


# --- --connect ---------------------------------------------------------------------------


def connect_problems(config: Config) -> tuple[list[str], int]:
    """Problems of the tables and columns the rules name, and how many tables were read."""
    return asyncio.run(_connect(config))


async def _connect(config: Config) -> tuple[list[str], int]:
    from authz.datastores.factory import close_datastores, open_datastores, ping_datastores
    from authz.datastores.schema import check_uses, query_uses

    uses = query_uses(_rules(config))
    stores = await open_datastores(config)
    try:
        reachable = await ping_datastores(stores)
        problems = [
            f"databases.{alias}: cannot connect to the {stores[alias].type} datastore"
            for alias, ok in reachable.items()
            if not ok
        ]
        found = await check_uses(uses, {a: s for a, s in stores.items() if reachable[a]})
        for alias_problems in found.values():
            problems.extend(alias_problems)
    finally:
        await close_datastores(stores)
    return problems, len({(u.alias, u.col) for u in uses})


def _rules(config: Config) -> list[Any]:
    """Every endpoint's compiled rule, errors or not (they were reported already)."""
    from authz.rules.compiler import compile_rule
    from authz.rules.compiling import CompileContext

    rules = []
    for sname, service in config.services.items():
        for ename, ep in service.endpoints.items():
            if ep.rule is not None:
                path = f"services.{sname}.endpoints.{ename}.rule"
                rules.append(compile_rule(ep.rule, CompileContext(config=config), path))
    return rules
