"""ReDoS: no request text can make a regular expression run for
long, and no request can supply a pattern.

The rule language has no regex operator: `match` evals are `== != < <= > >= in notIn`, and a
`query`'s `find` allows `$eq $ne $gt $gte $lt $lte $in $nin $and $or $exists` only, so
`$regex` in the config is a load error (tests/adversarial/test_datastore_injection.py,
`test_operators_outside_the_language_are_config_errors`) and `$regex` from the request is a
type error (same file, every slot and source). The regexes that *do* meet request text are:

- endpoint path templates (`/files/{name}.{ext}`): they were compiled to a backtracking
  regex, `(?P<name>[^/]+)\\.(?P<ext>[^/]+)`, and a template with adjacent or several
  parameters in one segment took O(n^2)..O(n^k) on a crafted path (`/a/{x}{y}{z}` against a
  4 000-character segment: 100 s). Now matched segment by segment in linear time, with the
  same captures (checked against the regex by a property test);
- the decision log's secret masking (`observability.masking._SECRET_VALUE`), run on reasons that
  quote request values: `search` was quadratic (60 KB of `a`: seconds with the GIL held by
  the writer thread). Now linear, with the same verdicts (property test against the old
  expression);
- fixed, linear patterns on bounded input (token syntax, durations in the config).

Tests assert behaviour, never timings: a generous alarm only turns a hang into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import signal
import time
from collections.abc import Iterator
from urllib.parse import unquote

import jwt
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.authorizer import Authorizer
from authz.config.load import load_config_text
from authz.errors import ConfigError
from authz.observability.decisionlog import DecisionLog
from authz.observability.masking import MASK, mask
from authz.request import Request
from authz.resolve import compile_path_template
from tests.helpers import examples

HANG = 20  # seconds: far above the milliseconds these take; only catches a hang
LONG = 50_000  # Envoy's default header limit is 60 KiB: a path of this size reaches authz
SECRET = "redos-tests-secret-0123456789abcdef0123"


@contextlib.contextmanager
def no_hang(seconds: float = HANG) -> Iterator[None]:
    """Fail instead of hanging (CPython's regex engine checks for signals while it runs)."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: catastrophic backtracking?")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- path templates ----------------------------------------------------------------------

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def regex_match(template: str, path: str) -> dict[str, str] | None:
    """The old (backtracking) semantics: the reference for the captures."""
    pattern, pos = "", 0
    for m in _PARAM.finditer(template):
        pattern += re.escape(template[pos : m.start()]) + f"(?P<{m.group(1)}>[^/]+)"
        pos = m.end()
    pattern += re.escape(template[pos:])
    m = re.fullmatch(pattern, path)
    return None if m is None else {k: unquote(v) for k, v in m.groupdict().items()}


EVIL = [
    # (template, adversarial path, expected)
    ("/a/{x}{y}{z}", "/a/" + "x" * LONG + "/", None),
    ("/a/{x}{y}{z}", "/a/" + "x" * LONG, {"x": "x" * (LONG - 2), "y": "x", "z": "x"}),
    ("/files/{name}.{ext}", "/files/" + "." * LONG + "/", None),
    ("/files/{name}.{ext}", "/files/" + "." * LONG, {"name": "." * (LONG - 2), "ext": "."}),
    ("/v1/{a}-{b}-{c}.json", "/v1/" + "-" * LONG + "x", None),
    ("/v1/{a}-{b}-{c}.json", "/v1/" + "-" * LONG, None),
    ("/v1/{a}-{b}", "/v1/" + "-" * LONG + "/", None),
    ("/{a}{b}{c}{d}{e}{f}", "/" + "a" * LONG + "/b", None),
    ("/x/{a}.{b}.{c}.{d}", "/x/" + "a." * (LONG // 2) + "/", None),
    ("/orders/{id}", "/orders/" + "o" * LONG, {"id": "o" * LONG}),
    ("/orders/{id}/items", "/orders/" + "/" * LONG, None),
]


@pytest.mark.parametrize(("template", "path", "expected"), EVIL, ids=[t for t, _, _ in EVIL])
def test_templates_against_crafted_paths(template, path, expected):
    tpl = compile_path_template(template)
    with no_hang():
        assert tpl.match(path) == expected
        assert tpl.match("!" + path) is None


def test_template_captures_are_the_greedy_ones():
    assert compile_path_template("/f/{name}.{ext}").match("/f/a.b.tar.gz") == {
        "name": "a.b.tar",
        "ext": "gz",
    }
    assert compile_path_template("/f/{a}{b}").match("/f/xyz") == {"a": "xy", "b": "z"}
    assert compile_path_template("/f/{a}-{b}").match("/f/-x") is None  # each one non-empty
    assert compile_path_template("/f/v{a}.json").match("/f/v%2F1.json") == {"a": "/1"}
    assert compile_path_template("/f/{a}").match("/f/") is None
    assert compile_path_template("/f/{a}/").match("/f/b/") == {"a": "b"}


_LIT = st.sampled_from(["", "a", "b", "-", ".", "ab", "a.", "%2F", "x-"])


@st.composite
def template_and_path(draw):
    segments, n = [], 0
    for _ in range(draw(st.integers(1, 3))):
        parts = [draw(_LIT)]
        for _ in range(draw(st.integers(0, 3))):
            parts += [f"{{p{n}}}", draw(_LIT)]
            n += 1
        segments.append("".join(parts))
    template = "/" + "/".join(segments)
    path = draw(
        st.one_of(
            st.text(alphabet="ab-./x%2F", max_size=24).map(lambda s: "/" + s),
            # a near miss: the template with parameters filled from the same alphabet
            st.builds(
                lambda fills: _PARAM.sub(lambda m: fills.pop() if fills else "a", template),
                st.lists(st.text(alphabet="ab-.x%2F", min_size=1, max_size=5), max_size=12),
            ),
        )
    )
    return template, path


@settings(max_examples=examples(600))
@given(template_and_path())
def test_template_matching_equals_the_regex(case):
    template, path = case
    assert compile_path_template(template).match(path) == regex_match(template, path)


def _authorizer() -> Authorizer:
    endpoints = {
        name: {"method": "GET", "path": path, "rule": {"rule": "allow"}}
        for name, path in [
            ("files", "/files/{name}.{ext}"),
            ("adjacent", "/a/{x}{y}{z}"),
            ("dashes", "/v1/{a}-{b}-{c}.json"),
        ]
    }
    doc = {
        "project": "redos",
        "auth": {
            "secrets": [{"alg": "HS256", "secret": SECRET, "primary": True}],
            "serviceToken": {"enabled": False},
        },
        "services": {"s": {"endpoints": endpoints}},
    }
    return Authorizer(load_config_text(yaml.safe_dump(doc)))


@pytest.mark.parametrize(
    ("path", "context", "status"),
    [
        ("/a/" + "x" * LONG + "/", {}, 403),
        ("/files/" + "." * LONG + "/", {}, 403),
        ("/v1/" + "-" * LONG + "x", {}, 403),
        # Envoy named the route: the template only extracts parameters (none match here)
        ("/a/" + "x" * LONG + "/", {"service": "s", "endpoint": "adjacent"}, 200),
        ("/files/" + "." * LONG + "/", {"service": "s", "endpoint": "files"}, 200),
        ("/files/" + "a" * LONG + ".txt", {}, 200),
    ],
)
def test_crafted_paths_through_the_authorizer(path, context, status):
    authorizer = _authorizer()
    req = Request.from_target("GET", path, context=context, request_id="r")
    with no_hang():
        d = asyncio.run(authorizer.check(req))
    assert d.status == status, d.reason


# --- decision-log masking ----------------------------------------------------------------

OLD_SECRET = re.compile(
    r"(?:eyJ|ew)[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
    r"|[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"
    r"|\bv1\.[^.\s]+\.[A-Za-z0-9_-]{20,}"
)
REAL_TOKEN = jwt.encode({"id": "u1"}, SECRET, "HS256")

CRAFTED = [
    ("a" * 200_000, False),  # quadratic before: ~1 min
    ("ew" * 100_000, False),
    ("eyJ" + "a" * 60_000, False),
    ("v1." + "x" * 200_000, False),
    ("v1.x." * 12_000, False),
    ("eyJ-." * 12_000, False),
    (("a" * 15 + ".") * 4_000, False),
    ("a" * 60_000 + " " + REAL_TOKEN, True),
    ("x" * 60_000 + REAL_TOKEN, True),  # glued to a run: still a secret shape
    ("ew" * 30_000 + "." + "a" * 10 + ".", True),
]


@pytest.mark.parametrize(
    ("text", "secret"), CRAFTED, ids=[f"{t[:8]}..{len(t)}" for t, _ in CRAFTED]
)
def test_masking_crafted_request_text(text, secret):
    with no_hang():
        assert (mask(text) == MASK) is secret
        assert mask({"reason": f"f1 {text!r} == 'x' is false"})["reason"] == (
            MASK if secret else f"f1 {text!r} == 'x' is false"
        )


_PIECES = ["e", "w", "y", "J", "v", "1", ".", "a", "-", "_", " ", "é", "=", "b" * 8, "eyJ", "ew"]
_SECRETISH = st.lists(st.sampled_from([*_PIECES, "v1."]), max_size=30).map("".join)


@settings(max_examples=examples(1500))
@given(_SECRETISH)
def test_masking_verdicts_equal_the_old_expression(text):
    assert (mask(text) == MASK) == bool(OLD_SECRET.search(text))


def test_decision_log_writes_a_huge_reason_promptly():
    """The writer thread (which holds the GIL while masking) gets 60 KB reasons."""
    sink = io.StringIO()
    log = DecisionLog("off", sink=sink, flush_interval=0.01)
    try:
        for i in range(20):
            log.log({"requestId": "r" * 60_000, "reason": f"{'a' * 60_000!r} {i}"})
        with no_hang():
            while sink.getvalue().count("\n") < 20:
                time.sleep(0.01)
    finally:
        log.close()
    lines = [json.loads(x) for x in sink.getvalue().splitlines()]
    assert len(lines) == 20 and all(x["requestId"] == "r" * 60_000 for x in lines)


# --- the language has no regex; request text is data -------------------------------------


@pytest.mark.parametrize("bad", ["=~", "regex", "matches", "like", "~"])
def test_match_has_no_regex_eval(bad):
    doc = {
        "project": "p",
        "services": {"s": {"endpoints": {"e": {"rule": {
            "rule": "match", "type": "string", "eval": bad, "f1": "args.auth.id", "f2": "(a+)+$",
        }}}}},
    }  # fmt: skip
    with pytest.raises(ConfigError) as exc:
        Authorizer(load_config_text(yaml.safe_dump(doc)))
    assert any("services.s.endpoints.e.rule" in e and "eval" in e for e in exc.value.errors), (
        exc.value.errors
    )


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("(a+)+$", True),  # the config's literal, compared as text
        ("a" * LONG + "!", False),
        ("(a|aa)*c" + "a" * LONG, False),
    ],
)
def test_request_text_against_a_pattern_looking_literal(header, allowed):
    doc = {
        "project": "p",
        "auth": {
            "secrets": [{"alg": "HS256", "secret": SECRET, "primary": True}],
            "serviceToken": {"enabled": False},
        },
        "services": {"s": {"endpoints": {"e": {"method": "GET", "path": "/e", "rule": {
            "rule": "or", "clauses": [
                {"rule": "match", "type": "string", "eval": "==",
                 "f1": "args.headers.x-v", "f2": "(a+)+$"},
                {"rule": "match", "type": "string", "eval": "in",
                 "f1": "args.headers.x-v", "f2": ["^(a+)+$", "(a|aa)*c"]},
            ]}}}}},
    }  # fmt: skip
    authorizer = Authorizer(load_config_text(yaml.safe_dump(doc)))
    tok = jwt.encode({"id": "u", "exp": int(time.time()) + 60}, SECRET, "HS256")
    req = Request.from_target(
        "GET", "/e", headers={"authorization": f"Bearer {tok}", "x-v": header}, request_id="r"
    )
    with no_hang():
        d = asyncio.run(authorizer.check(req))
    assert d.allowed is allowed, d.reason
    assert d.status in (200, 403)


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer " + "a" * 100_000,
        "Bearer " + "a." * 50_000,
        "Bearer " + "eyJ" * 30_000 + ".x.y",
        "Bearer  " + " \t" * 30_000 + "x",
    ],
)
def test_crafted_tokens_are_refused_before_any_scan(authorization):
    authorizer = _authorizer()
    doc_path = "/files/a.txt"
    req = Request.from_target(
        "GET", doc_path, headers={"authorization": authorization}, request_id="r"
    )
    with no_hang():
        d = asyncio.run(authorizer.check(req))
    assert d.status == 200  # `allow` never reads the token (docs/rules.md, tokens)
    auth_doc = {
        "project": "p",
        "auth": {
            "secrets": [{"alg": "HS256", "secret": SECRET, "primary": True}],
            "serviceToken": {"enabled": False},
        },
        "services": {"s": {"endpoints": {"e": {"path": "/e", "rule": {"rule": "authenticated"}}}}},
    }
    strict = Authorizer(load_config_text(yaml.safe_dump(auth_doc)))
    with no_hang():
        d = asyncio.run(
            strict.check(Request.from_target("GET", "/e", headers={"authorization": authorization}))
        )
    assert d.status == 401 and not d.allowed
