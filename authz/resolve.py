"""Endpoint resolution: the route's context_extensions first, else method + path templates."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(slots=True)
class PathTemplate:
    """A compiled path template such as /v1/orders/{orderId}.

    Matched segment by segment without a backtracking regex: `{name}` is one or more
    characters other than '/', and the captures are exactly those of the regex
    `literal(?P<name>[^/]+)literal...` (each parameter as long as possible, left to right),
    but in linear time: a template such as `/{a}{b}{c}` or `/{name}.{ext}` against a long
    path made the regex backtrack for minutes (ReDoS)."""

    text: str
    # None for a template without parameters (exact match); else per '/'-separated segment,
    # (literals, names): literals[0] name[0] literals[1] ... name[k-1] literals[k]
    segments: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] | None

    def match(self, path: str) -> dict[str, str] | None:
        if self.segments is None:
            return {} if path == self.text else None
        parts = path.split("/", len(self.segments))
        if len(parts) != len(self.segments):
            return None
        out: dict[str, str] = {}
        for part, (literals, names) in zip(parts, self.segments, strict=True):
            if not names:
                if part != literals[0]:
                    return None
                continue
            values = _match_segment(part, literals)
            if values is None:
                return None
            for name, value in zip(names, values, strict=True):
                out[name] = unquote(value)
        return out

    @property
    def has_parameters(self) -> bool:
        return self.segments is not None

    def regex(self) -> str:
        """The template as a regex over the whole path, each `{name}` one or more characters
        other than '/' (RE2 syntax too: Envoy's route matcher): `/v1/orders/{id}` ->
        `/v1/orders/[^/]+`."""
        if self.segments is None:
            return re.escape(self.text)
        return "/".join("[^/]+".join(map(re.escape, lits)) for lits, _ in self.segments)


def _match_segment(seg: str, literals: tuple[str, ...]) -> list[str] | None:
    """Values of the k = len(literals) - 1 parameters of one segment (no '/' in `seg`).

    The inner literals are placed right to left, each at its rightmost possible position:
    that is the only candidate worth trying (it leaves the most room on the left) and gives
    the greedy captures of a backtracking regex. O(k * len(seg))."""
    k = len(literals) - 1
    first, last = literals[0], literals[-1]
    lo, hi = len(first), len(seg) - len(last)
    if hi - lo < k or not seg.startswith(first) or seg[hi:] != last:
        return None
    values: list[str] = []
    end = hi  # the end of the parameter being captured
    for j in range(k - 1, 0, -1):  # the literal between parameter j and parameter j + 1
        lit = literals[j]
        # parameters 1..j need >= 1 character each before it, parameter j + 1 one after it
        pos = seg.rfind(lit, lo + j, end - 1)
        if pos < 0:
            return None
        values.append(seg[pos + len(lit) : end])
        end = pos
    values.append(seg[lo:end])
    values.reverse()
    return values


def compile_path_template(text: str) -> PathTemplate:
    """Raise ValueError for a malformed template."""
    names = _PARAM.findall(text)
    if len(set(names)) != len(names):
        raise ValueError("a path parameter name appears twice")
    rest = _PARAM.sub("", text)
    if "{" in rest or "}" in rest:
        raise ValueError("unbalanced or invalid '{name}' in the path template")
    if not names:
        return PathTemplate(text, None)
    segments = []
    for seg in text.split("/"):
        literals, seg_names, pos = [], [], 0
        for m in _PARAM.finditer(seg):
            literals.append(seg[pos : m.start()])
            seg_names.append(m.group(1))
            pos = m.end()
        literals.append(seg[pos:])
        segments.append((tuple(literals), tuple(seg_names)))
    return PathTemplate(text, tuple(segments))


@dataclass(slots=True)
class Route:
    service: str
    endpoint: str
    methods: frozenset[str] | None  # None: any method
    template: PathTemplate | None
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
            if r.template.segments is None:
                self._exact.setdefault(r.template.text, []).append(r)
            else:
                self._templated.append(r)

    def resolve(
        self, method: str, path: str, context: Mapping[str, str]
    ) -> tuple[Any, dict[str, str]] | None:
        """(endpoint, path parameters), or None when no endpoint matches."""
        service = context.get("service")
        name = context.get("endpoint")
        if service and name:
            route = self._by_name.get((service, name))
            if route is None or (route.methods is not None and method not in route.methods):
                return None
            template = route.template
            if template is None or template.segments is None:
                return route.target, {}  # no parameters to read from the path
            return route.target, template.match(path) or {}
        for route in self._exact.get(path, ()):
            if (not service or route.service == service) and _method_ok(route, method):
                return route.target, {}
        for route in self._templated:
            if service and route.service != service:
                continue
            if _method_ok(route, method) and route.template is not None:  # always: templated
                params = route.template.match(path)
                if params is not None:
                    return route.target, params
        return None


def _method_ok(route: Route, method: str) -> bool:
    return route.methods is None or method in route.methods
