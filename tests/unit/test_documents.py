"""authz/documents.py: field paths in JSON documents, response actions, replay."""

import base64

import pytest

from authz.config.schema import CryptoKey, CryptoSettings
from authz.crypto import Keyring
from authz.documents import RESPONSE, FieldPath, PathError, ResponseAction, find, replay, set_value
from authz.errors import ResponseError
from authz.values import MISSING

KEYRING = Keyring.from_settings(
    CryptoSettings(keys=[CryptoKey(id="k1", key=base64.b64encode(bytes(range(32))).decode())])
)


def test_find_reaches_exact_keys_and_case_variants():
    doc = {"user": {"Email": "a", "email": "b"}, "list": [{"email": "c"}]}
    found = find(doc, FieldPath.of("params", ("user", "email"), "args.params.user.email"))
    assert [(m.key, m.exact) for m in found] == [("email", True), ("Email", False)]
    found = find(doc, FieldPath.of("params", ("list", "0", "email"), "args.params.list.0.email"))
    assert [(m.path, m.exact) for m in found] == [(("list", 0, "email"), True)]


def test_strict_find_refuses_a_differently_shaped_document():
    with pytest.raises(PathError):
        find({"a": "scalar"}, FieldPath.of(RESPONSE, ("a", "b"), "res.a.b"), strict=True)


def test_set_value_creates_parents_and_reports_the_slot_written():
    doc: dict = {"a": None}
    container, key, old, new, path = set_value(doc, ("a", "b", "c"), 1)
    assert doc == {"a": {"b": {"c": 1}}}
    assert (container is doc, key, old, new, path) == (True, "a", None, {"b": {"c": 1}}, ("a",))
    _, _, old, _, path = set_value(doc, ("a", "b", "d"), 2)
    assert (old, path) == (MISSING, ("a", "b", "d"))


def test_replay_applies_set_and_remove_in_order():
    doc = {"a": {"b": 1}, "l": [1, 2]}
    replay(doc, [
        {"op": "set", "path": ["a", "c"], "value": {"x": 1}},
        {"op": "remove", "path": ["l", 0]},
        {"op": "remove", "path": ["a", "b"]},
    ])  # fmt: skip
    assert doc == {"a": {"c": {"x": 1}}, "l": [2]}


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ({"op": "encrypt", "path": ["n"]}, {"n": 5}),
        ({"op": "decrypt", "path": ["n"]}, {"n": "v1.k1.AAAA"}),
        ({"op": "decrypt", "path": ["n"]}, {"n": KEYRING.encrypt("x", "other")}),
        ({"op": "hash", "path": ["n"]}, {"N": "x"}),
        ({"op": "force", "path": ["n", "m"]}, {"n": "scalar"}),
    ],
)
def test_failing_response_actions_raise(action, body):
    with pytest.raises(ResponseError):
        ResponseAction.from_json(action, KEYRING).apply(body)


@pytest.mark.parametrize(
    "data",
    [None, {}, {"op": "drop", "path": ["a"]}, {"op": "remove", "path": []},
     {"op": "remove", "path": [1]}, {"op": "hash", "path": ["a"], "encoding": "b32"}],
)  # fmt: skip
def test_malformed_plans_are_rejected(data):
    with pytest.raises(ResponseError):
        ResponseAction.from_json(data)
