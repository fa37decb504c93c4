"""Every name a framework behind Envoy could read a raw query or form parameter name as.

authz compares parameter names the way the most lenient of the studied frameworks would
(SECURITY.md, "One interpretation"): a name the rules read must not reach the upstream under
any spelling some framework reads as that name. One function, `readings`, gives the set;
every name check in `authz/request.py` compares each member.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import unquote, unquote_plus

# Names of letters, digits, `-` and `_` are read the same by every framework (up to case).
_PLAIN = re.compile(r"[A-Za-z0-9_-]+").fullmatch
# C0 controls, DEL and C1 controls, after percent-decoding.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]").search
# Rack 2's normalize_params: leading `[`/`]` skipped, the name up to the next bracket, `]`s
# after it skipped (`[name]`, `]name`, `name]` are all `name`).
_RACK2 = re.compile(r"[\[\]]*([^\[\]]+)\]*")
# Express's qs: a name that starts with a `[...]` group is keyed by the group's content.
_QS_LEADING_GROUP = re.compile(r"\[([^\[\]]*)\]")
# Where a nested name (`a[b]`, Rack 3 and PHP; `a.b`, Spring and ASP.NET binders) starts.
_NESTING = re.compile(r"[\[.]")
# A multipart part's name; `name*=utf-8''%5Fmethod` is RFC 2231's encoded form (Go reads it).
_MULTIPART_NAME = re.compile(rb'\bname\*?=\s*(?:"([^"]*)"|([^;\s]*))', re.IGNORECASE)

Readings = tuple[frozenset[str], frozenset[str]]


def readings(raw: str) -> Readings:
    """(names, tops) for a raw (still percent-encoded) parameter name, case-folded.

    `names`: each name some framework gives the parameter (`owner`, `owner[x]`, `owner.id`);
    `tops`: the top-level names a nested one is part of (`owner` for `owner[x]`), less
    `names`. Case-folded because ASP.NET reads query names case-insensitively."""
    if _PLAIN(raw):
        return frozenset((raw.casefold(),)), frozenset()
    found: set[str] = set()
    for text in _decodings(raw):
        found.add(text)  # Go, Spring's getParameter, ASP.NET, Flask, qs without brackets
        found.update(_php(text))
        found.add(_rack2(text))
        found.add(_qs(text))
        if text.startswith("!"):
            # Spring's WebDataBinder: `!name` is a default for `name` when it is absent
            found.add(text[1:])
        dot = text.find(".")
        if dot >= 0:
            # ASP.NET Core binds `order.owner` to property `owner` of a parameter `order`
            found.add(text[dot + 1 :])
    names = frozenset(name.casefold() for name in found if name)
    return names, frozenset(_top(name) for name in names) - names


def every_name(raw: str) -> frozenset[str]:
    """`readings` as one set: what a check for one particular name compares."""
    names, tops = readings(raw)
    return names | tops


def has_control_character(raw: str) -> bool:
    """A control character (NUL, CR, DEL, ...) in the name, raw or percent-encoded. PHP cuts
    a name at NUL (`owner%00x` is `owner`); no client has a reason to send one."""
    return _CONTROL(raw) is not None or ("%" in raw and _CONTROL(unquote(raw)) is not None)


def fold(name: str) -> str:
    """A rule's name as `readings` spells names: case-folded, `.` and space as `_` (PHP)."""
    return name.casefold().lstrip(" ").replace(".", "_").replace(" ", "_")


def multipart_names(body: bytes) -> Iterator[str]:
    """The names of a multipart body's parts, raw and RFC 2231-decoded (a superset)."""
    for quoted, bare in _MULTIPART_NAME.findall(body):
        value = (quoted or bare).decode("latin-1")
        yield value
        yield value.rpartition("'")[2]  # utf-8''%5Fmethod


def _decodings(raw: str) -> set[str]:
    # every framework reads `+` in a query as a space; a literal `+` in case one does not
    texts = {unquote_plus(raw)}
    if "+" in raw:
        texts.add(unquote(raw))
    return texts


def _php(name: str) -> tuple[str, ...]:
    """PHP's php_register_variable_ex: leading spaces dropped, cut at NUL, ` ` and `.` before
    the first `[` become `_`; a name starting with `[` is dropped; a `[` without a `]` after
    it becomes `_` (PHP 8 also turns the rest's ` `, `.` and `[` into `_`)."""
    name = name.lstrip(" ").partition("\x00")[0]
    head, bracket, rest = name.partition("[")
    head = head.replace(" ", "_").replace(".", "_")
    if not head:
        return ()
    if not bracket:
        return (head,)
    if "]" in rest:
        return (head + "[" + rest,)
    mangled = rest.replace(" ", "_").replace(".", "_").replace("[", "_")
    return (head + "_" + rest, head + "_" + mangled)


def _rack2(name: str) -> str:
    match = _RACK2.match(name)
    if match is None:
        return ""
    key, after = match.group(1), name[match.end() :]
    if not after:
        return key
    if after == "[":
        return name  # Rack 2 keeps `name[` whole
    return key + (after if after.startswith("[") else "[" + after + "]")


def _qs(name: str) -> str:
    match = _QS_LEADING_GROUP.match(name)
    if match is None:
        return name
    rest = name[match.end() :]
    return match.group(1) + (rest if rest.startswith("[") else "")


def _top(name: str) -> str:
    cut = _NESTING.search(name, 1)
    return name if cut is None else name[: cut.start()]
