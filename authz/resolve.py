"""Endpoint resolution: the route's context_extensions first, else method + path templates."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(slots=True)
class Template:
    """A compiled path template such as /v1/orders/{orderId}."""

    text: str
    regex: re.Pattern[str] | None  # None for a template without parameters (exact match)

    def match(self, path: str) -> dict[str, str] | None:
        if self.regex is None:
            return {} if path == self.text else None
        m = self.regex.fullmatch(path)
        return None if m is None else {k: unquote(v) for k, v in m.groupdict().items()}


def compile_template(text: str) -> Template:
    """Raise ValueError for a malformed template."""
    names = _PARAM.findall(text)
    if len(set(names)) != len(names):
        raise ValueError("a path parameter name appears twice")
    rest = _PARAM.sub("", text)
    if "{" in rest or "}" in rest:
        raise ValueError("unbalanced or invalid '{name}' in the path template")
    if not names:
        return Template(text, None)
    pattern, pos = "", 0
    for m in _PARAM.finditer(text):
        pattern += re.escape(text[pos : m.start()]) + f"(?P<{m.group(1)}>[^/]+)"
        pos = m.end()
    pattern += re.escape(text[pos:])
    return Template(text, re.compile(pattern))


@dataclass(slots=True)
class Route:
    service: str
    endpoint: str
    methods: frozenset[str] | None  # None: any method
    template: Template | None
    target: Any  # what resolution returns (the compiled endpoint)


@dataclass
class Router:
    routes: list[Route]
    _by_name: dict[tuple[str, str], Route] = field(default_factory=dict)
    _exact: dict[str, list[Route]] = field(default_factory=dict)
    _templated: list[Route] = field(default_factory=list)

    def __post_init__(self) -> None:
        for r in self.routes:
            self._by_name[(r.service, r.endpoint)] = r
            if r.template is None:
                continue
            if r.template.regex is None:
                self._exact.setdefault(r.template.text, []).append(r)
            else:
                self._templated.append(r)

    def resolve(
        self, method: str, path: str, context: dict[str, str]
    ) -> tuple[Any, dict[str, str]] | None:
        """(endpoint, path parameters), or None when no endpoint matches."""
        service = context.get("service")
        name = context.get("endpoint")
        if service and name:
            route = self._by_name.get((service, name))
            if route is None or not _method_ok(route, method):
                return None
            params = route.template.match(path) if route.template else None
            return route.target, params or {}
        for route in self._exact.get(path, ()):
            if (not service or route.service == service) and _method_ok(route, method):
                return route.target, {}
        for route in self._templated:
            if service and route.service != service:
                continue
            if _method_ok(route, method):
                params = route.template.match(path)  # type: ignore[union-attr]
                if params is not None:
                    return route.target, params
        return None


def _method_ok(route: Route, method: str) -> bool:
    return route.methods is None or method in route.methods
