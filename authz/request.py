"""The neutral request every stage after decode works on, and the request variables (`args`).

No Envoy types past decode: the CLI, the debug API and the tests build `Request`s directly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from authz import strictjson
from authz.config.schema import Limits
from authz.errors import RequestError, UnsupportedMediaType
from authz.param_names import (
    every_name,
    fold,
    has_control_character,
    multipart_names,
    readings,
)
from authz.peer import Peer


def split_target(target: str) -> tuple[str, str]:
    """`/path?query#fragment` -> (path, query); the fragment is dropped."""
    if "#" in target:
        target = target.partition("#")[0]
    path, _, query = target.partition("?")
    return path, query


@dataclass(slots=True)
class Request:
    method: str
    path: str  # without the query string
    query_string: str = ""
    # Lower-case names. Read-only: decode passes Envoy's protobuf map as it is (converting
    # every header costs more than the rest of decode); args.headers is a dict copy.
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    body_partial: bool = False  # Envoy sent only the first max_request_bytes
    context: Mapping[str, str] = field(default_factory=dict)  # the route's context_extensions
    request_id: str = ""
    peer: Peer | None = None  # the TLS client as the transport reports it; None: unknown

    @classmethod
    def from_target(
        cls,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        body_partial: bool = False,
        context: Mapping[str, str] | None = None,
        request_id: str = "",
        peer: Peer | None = None,
    ) -> Request:
        """Split `/path?query#fragment` as it arrives from the CLI or a test."""
        path, query = split_target(target)
        return cls(
            method,
            path,
            query,
            {} if headers is None else headers,
            body,
            body_partial,
            {} if context is None else context,
            request_id,
            peer,
        )


# --- one interpretation ------------------------------------------------------------------
#
# The request the rules judge must be the request the upstream reads. `interpret` is the one
# place that turns a Request into what the rules read (args.headers, args.query, args.params),
# and it refuses, rather than passes on, what an upstream framework could read another way
# (SECURITY.md, "One interpretation").

# Headers through which Express (method-override), ASP.NET Core, gorilla/handlers, Symfony,
# Spring and Flask recipes let a client replace the method the rules judged.
METHOD_OVERRIDE_HEADERS = tuple(
    spelling
    for name in ("x-http-method-override", "x-http-method", "x-method-override")
    for spelling in (name, name.replace("-", "_"))
)
# The form/query field Spring, Symfony/Laravel, Rails and gorilla read for the same purpose.
METHOD_OVERRIDE_PARAM = "_method"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/")


@dataclass(frozen=True, slots=True)
class Reading:
    """What one endpoint's rules read or change, fixed at config load: how much of a request
    `interpret` parses and whose spellings must be unambiguous.

    Names are the rules' own spellings; None means "any name" (the rules read the whole
    object, e.g. a webhook forwarding `args`)."""

    headers: bool = False
    query: bool = False
    params: bool = False
    query_names: Mapping[str, str] | None = field(default_factory=dict)  # folded -> rules'
    header_names: frozenset[str] | None = frozenset()
    # folded top-level args.params names: with a body they must not come in the query too
    params_names: frozenset[str] | None = frozenset()

    @classmethod
    def of(cls, reads: set[str], names: Mapping[str, set[str] | None]) -> Reading:
        whole = "*" in reads

        def spelled(*keys: str) -> set[str] | None:
            found: set[str] = set()
            for key in keys:
                some = names.get(key, set())
                if whole or some is None:
                    return None
                found |= some
            return found

        return cls(
            headers=whole or "headers" in reads,
            query=whole or "query" in reads or "params" in reads,
            params=whole or "params" in reads,
            # without a body, args.params is the query: its names are query names
            query_names=_folded(spelled("query", "params")),
            header_names=_frozen(spelled("headers")),
            params_names=_folded_set(spelled("params")),
        )


def _folded(names: set[str] | None) -> dict[str, str] | None:
    return None if names is None else {fold(n): n for n in sorted(names)}


def _folded_set(names: set[str] | None) -> frozenset[str] | None:
    return None if names is None else frozenset(fold(n) for n in names)


def _frozen(names: set[str] | None) -> frozenset[str] | None:
    return None if names is None else frozenset(n.lower() for n in names)


Interpreted = tuple[dict[str, str] | None, dict[str, Any] | None, Any]


def interpret(req: Request, reading: Reading, limits: Limits) -> Interpreted:
    """(args.headers, args.query, args.params) as the rules read them, None for what they do
    not read; RequestError (400/415) for a request an upstream could read another way."""
    _check_method(req)
    headers = query = params = None
    if reading.headers:
        headers = copy_headers(req.headers)
        _check_header_names(headers, reading.header_names)
    if reading.query:
        if ";" in req.query_string:
            # Rack 2 and Python before 3.9.2 (Django, Flask on it) split the query on `;` too:
            # `?owner=u1&x=;owner=bob` would carry a second owner the rules never saw.
            raise RequestError("the query string has a ';' (send it encoded, as %3B)")
        query = parse_query(req.query_string)
        if _is_form(req.headers.get("content-type")):
            # Spring's getParameter, PHP's $_REQUEST, Flask's request.values and ASP.NET model
            # binding read form fields and query parameters as one: a form field would shadow
            # the query the rules judged.
            raise UnsupportedMediaType("a form body is not accepted where the rules read the query")
        if reading.params:
            params = request_params(req, query, limits)
            if params is not query and req.query_string:
                # before the spelling check: `Owner=bob` beside a body is this, not a spelling
                _check_body_names_not_in_query(req.query_string, params, reading.params_names)
        if req.query_string:
            _check_query_names(req.query_string, reading.query_names)
    return headers, query, params


def request_params(req: Request, query: dict[str, Any], limits: Limits) -> Any:
    """args.params: the body when there is one (a JSON object, declared JSON), else the query."""
    if req.body_partial:
        raise RequestError("the request body is larger than the authorization limit")
    if not req.body:
        length = req.headers.get("content-length")
        if length is not None and length.strip() not in ("", "0"):
            # the upstream will read a body authz never saw (Envoy not set to send it)
            raise RequestError("the request body did not reach authorization")
        return query
    _check_json_type(req.headers.get("content-type"))
    if req.headers.get("content-encoding", "identity").strip().lower() != "identity":
        # the upstream would decode it; authz would judge the encoded bytes
        raise UnsupportedMediaType("a request body the rules read must not be content-encoded")
    body = parse_json_body(req.body, limits)
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


def _check_method(req: Request) -> None:
    headers = req.headers
    for name in METHOD_OVERRIDE_HEADERS:
        # `in` first: a protobuf map's get() goes through Python, `in` does not
        if name in headers and headers[name].strip().upper() != req.method:
            raise RequestError(f"the {name} header overrides the request method")
    query = req.query_string
    if query and ("method" in query.lower() or "%" in query or not query.isprintable()):
        # Checked whatever the rules read: overrides and names that no framework reads alike.
        for name in _raw_names(query):
            if has_control_character(name):
                raise RequestError("a query parameter name has a control character")
            if METHOD_OVERRIDE_PARAM in every_name(name):
                raise RequestError(
                    f"the {METHOD_OVERRIDE_PARAM} query parameter overrides the method"
                )
    if req.body and _form_overrides_method(req.body, headers.get("content-type")):
        raise RequestError(f"the {METHOD_OVERRIDE_PARAM} form field overrides the method")


_METHODISH = re.compile(rb"method|%", re.IGNORECASE)


def _form_overrides_method(body: bytes, content_type: str | None) -> bool:
    """A `_method` field in a form body, in any spelling (Envoy may send bodies for endpoints
    whose rules do not read them: the override is refused wherever authz can see it)."""
    media = (content_type or "").strip().lower()
    if not media.startswith(_FORM_TYPES) or _METHODISH.search(body) is None:
        return False
    multipart = media.startswith("multipart/")
    names = multipart_names(body) if multipart else _raw_names(body.decode("latin-1"))
    return any(METHOD_OVERRIDE_PARAM in every_name(name) for name in names)


def _check_json_type(content_type: str | None) -> None:
    media, _, parameters = (content_type or "").partition(";")
    media = media.strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise UnsupportedMediaType("the request body must be declared application/json")
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise UnsupportedMediaType("the request body must be UTF-8 JSON")


def _is_form(content_type: str | None) -> bool:
    return content_type is not None and content_type.strip().lower().startswith(_FORM_TYPES)


def _check_header_names(headers: Mapping[str, str], names: frozenset[str] | None) -> None:
    # CGI/WSGI (Flask, Django), PHP and Rack map `x_user_id` and `x-user-id` to one variable.
    for name in headers:
        if "_" in name and (names is None or name.replace("_", "-") in names):
            raise RequestError(f"the header name {name!r} has an underscore")


def _raw_names(query: str) -> Iterable[str]:
    # `;` separates too for Rack 2 and old Python (refused where the rules read the query)
    return (part.partition("=")[0] for part in query.replace(";", "&").split("&") if part)


def _check_query_names(query: str, rules: Mapping[str, str] | None) -> None:
    """A name the rules read or change must come only in the rules' own spelling: Envoy sets
    and removes parameters by their raw spelling, and the upstream decodes and may fold
    names (`param_names.readings`)."""
    if rules is None:
        _check_one_spelling_per_name(query)
        return
    for raw in _raw_names(query):
        for name in every_name(raw):
            ours = rules.get(name)
            if ours is not None and raw != ours:
                raise _another_spelling(raw)


def _check_one_spelling_per_name(query: str) -> None:
    """Where the rules read every name: no two raw names that a framework could read as one
    name, or as a name and a part of it (`a=1&a[x]=2`); `a[x]` beside `a[y]` is fine."""
    names_of: dict[str, str] = {}  # a name -> the raw name read as it
    tops_of: dict[str, str] = {}  # a top-level name -> a raw name nested under it
    for raw in dict.fromkeys(_raw_names(query)):
        names, tops = readings(raw)
        for name in names:
            if names_of.setdefault(name, raw) != raw or tops_of.get(name, raw) != raw:
                raise _another_spelling(raw)
        for top in tops:
            if names_of.get(top, raw) != raw:
                raise _another_spelling(raw)
            tops_of.setdefault(top, raw)


def _another_spelling(raw: str) -> RequestError:
    return RequestError(
        f"the query parameter name {raw[:64]!r} is another spelling of a name the rules read"
    )


def _check_body_names_not_in_query(
    query: str, body: dict[str, Any], names: frozenset[str] | None
) -> None:
    """With a body, args.params is the body; Laravel's input(), PHP's $_REQUEST, Go's
    FormValue and Spring's @RequestParam read a query parameter of the same name (beside the
    body's, or instead of it when the body lacks it or is JSON). So a query name the rules
    read through args.params (any top-level body key, where they read args.params whole) is
    refused in any spelling."""
    if names is None:
        names = frozenset(fold(key) for key in body)
    if not names:
        return
    for raw in _raw_names(query):
        if not names.isdisjoint(every_name(raw)):
            raise RequestError(
                f"the query parameter {raw[:64]!r} names a body field the rules read "
                "(args.params is the body): send it in one place"
            )


def copy_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """`args.headers`: a dict the rules may read and field rules may change."""
    # Key by key: for a protobuf map, dict(headers) goes through the Mapping mixin's keys()
    # view in Python, which costs more.
    return {k: headers[k] for k in headers}


def parse_query(query_string: str) -> dict[str, Any]:
    """Query parameters; a repeated key gives a list (docs/rules.md, the args model)."""
    out: dict[str, Any] = {}
    for key, value in _pairs(query_string):
        if key in out:
            prev = out[key]
            if isinstance(prev, list):
                prev.append(value)
            else:
                out[key] = [prev, value]
        else:
            out[key] = value
    return out


def _pairs(query_string: str) -> Iterable[tuple[str, str]]:
    """parse_qsl(keep_blank_values=True); without escapes ('%', '+') a plain split gives the
    same pairs in a fraction of the time (the common case: ids and names)."""
    if "%" in query_string or "+" in query_string:
        return parse_qsl(query_string, keep_blank_values=True)
    return [(k, v) for k, _, v in (p.partition("=") for p in query_string.split("&") if p)]


class _ObjectHook:
    """object_pairs_hook: rejects duplicate members and members differing only in case, and
    counts members and objects as the parser goes, so an oversized body stops early (the
    parser calls this for every object, empty ones too)."""

    __slots__ = ("members", "values")

    def __init__(self, limits: Limits):
        self.members = limits.maxJsonKeys
        self.values = limits.maxJsonValues

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        self.members -= len(pairs)
        self.values -= len(pairs) + 1
        if self.members < 0:
            raise RequestError("the JSON body has too many object members")
        if self.values < 0:
            raise RequestError("the JSON body has too many values")
        obj = dict(pairs)
        if len(obj) != len(pairs):
            raise RequestError("the JSON body has duplicate object members")
        if len(pairs) > 1 and len({k.casefold() for k in obj}) != len(obj):
            # Go's encoding/json, ASP.NET and Jackson (case-insensitive mode) read either
            raise RequestError("the JSON body has object members that differ only in case")
        return obj


_BODY_ERRORS = {
    "utf8": "the request body is not UTF-8",
    "depth": "the JSON body is nested too deeply",
    "range": "the JSON body has a number out of range",
}


def parse_json_body(data: bytes, limits: Limits) -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate members, bounded size, depth and members.

    Every failure is a RequestError (-> 400), never another exception."""
    if len(data) > limits.maxBodyBytes:
        raise RequestError("the request body is too large")
    try:
        value = strictjson.loads(data, _ObjectHook(limits))
    except strictjson.JSONError as exc:
        if exc.kind == "constant":
            raise RequestError(f"the JSON body contains {exc.value}, which is not JSON") from None
        message = _BODY_ERRORS.get(exc.kind)
        if message is None:
            message = f"the request body is not valid JSON: {str(exc)[:80]}"
        raise RequestError(message) from None
    _check_shape(value, limits, b"\\ud" in data or b"\\uD" in data)
    return value


def _check_shape(value: Any, limits: Limits, escaped_surrogates: bool) -> None:
    """Depth, array elements (the hook counted objects and members) and, when the text has
    surrogate escapes, lone surrogates; stops as soon as a bound is passed, so refusing a body
    costs no more than the values allowed."""
    left = limits.maxJsonValues
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        children: Iterable[Any]
        if isinstance(v, dict):
            children = v.values()
            if escaped_surrogates:
                _check_text(v)
        elif isinstance(v, list):
            children = v
            left -= len(v)
            if left < 0:
                raise RequestError("the JSON body has too many values")
        else:
            if escaped_surrogates and isinstance(v, str):
                _check_text(v)
            continue
        if d > limits.maxJsonDepth:
            raise RequestError("the JSON body is nested too deeply")
        stack.extend((c, d + 1) for c in children)


def _check_text(value: str | dict[str, Any]) -> None:
    # A lone surrogate (\ud800) is a string Python and JavaScript keep and Go reads as U+FFFD:
    # two keys that differ only there are one key to Go.
    for text in value if isinstance(value, dict) else (value,):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(
                "the JSON body has an invalid \\u escape (a lone surrogate)"
            ) from None
