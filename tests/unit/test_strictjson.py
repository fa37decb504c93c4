"""authz/strictjson.py: the one strict JSON decoder."""

import json

import pytest

from authz import strictjson


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('{"a":1,"a":2}', "duplicate"),
        ('{"a":Infinity}', "constant"),
        ('{"a":-Infinity}', "constant"),
        ('{"a":NaN}', "constant"),
        ("[1e400]", "range"),
        ("[1,", "syntax"),
        ("[" * 100_000 + "]" * 100_000, "depth"),
    ],
)
def test_strict_json_rejects(text, kind):
    with pytest.raises(strictjson.JSONError) as err:
        strictjson.loads(text.encode())
    assert err.value.kind == kind


def test_invalid_utf8_is_rejected():
    with pytest.raises(strictjson.JSONError) as err:
        strictjson.loads(b'{"a": "\xff"}')
    assert err.value.kind == "utf8"


def test_a_constant_names_itself():
    with pytest.raises(strictjson.JSONError) as err:
        strictjson.loads(b"[-Infinity]")
    assert err.value.value == "-Infinity"


def test_strict_json_accepts_plain_json():
    value = {"a": [1, 2.5, None, True], "b": {"c": "d"}}
    assert strictjson.loads(json.dumps(value).encode()) == value


def test_a_hook_replaces_the_duplicate_check_and_its_errors_pass_through():
    class Refused(Exception):
        pass

    def hook(pairs):
        raise Refused

    with pytest.raises(Refused):
        strictjson.loads(b'{"a": 1}', hook)
    assert strictjson.loads(b'{"a": 1, "a": 2}', dict) == {"a": 2}
