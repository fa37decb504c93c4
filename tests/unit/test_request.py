import random
from urllib.parse import parse_qsl

import pytest

from authz.config.schema import Limits
from authz.errors import RequestError
from authz.request import Request, _pairs, parse_json_body, parse_query


def test_from_target_splits_query_and_fragment():
    r = Request.from_target("GET", "/a/b?x=1&y=2#frag")
    assert (r.path, r.query_string) == ("/a/b", "x=1&y=2")


def test_repeated_query_keys_give_lists():
    assert parse_query("a=1&b=2&a=3&c=&a=4") == {"a": ["1", "3", "4"], "b": "2", "c": ""}


def test_query_pairs_are_parse_qsl_with_blank_values_kept():
    # the split fast path (no '%' or '+') and the parse_qsl path must agree on every string
    rng = random.Random(7)
    alphabet = "ab=&;%2B+ é"
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        assert list(_pairs(text)) == parse_qsl(text, keep_blank_values=True), repr(text)
    assert parse_query("a&&b=&=c&d==e") == {"a": "", "b": "", "": "c", "d": "=e"}


def test_good_body():
    assert parse_json_body(b'{"a": [1, {"b": null}]}', Limits()) == {"a": [1, {"b": None}]}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested too deeply"),
        (b'{"n": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b'{"n": NaN}', "NaN"),
        (b'{"n": Infinity}', "Infinity"),
        (b'{"a": 1, "a": 2}', "duplicate"),
        (b"{" + b",".join(b'"k%d": 1' % i for i in range(10_000)) + b"}", "too many"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"a": ', "not valid JSON"),
        (b"x" * (1 << 21), "too large"),
    ],
)
def test_body_bombs_are_request_errors(body, why):
    with pytest.raises(RequestError) as exc:
        parse_json_body(body, Limits())
    assert why in str(exc.value)
