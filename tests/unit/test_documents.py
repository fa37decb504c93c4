"""authz/documents.py: field paths in JSON documents, response actions, replay."""

import base64

import pytest

from authz.config.schema import CryptoKey, CryptoSettings
from authz.crypto import Keyring
from authz.documents import (
    RESPONSE,
    FieldChange,
    FieldPath,
    PathError,
    ResponseAction,
    apply_response,
    find,
    json_type,
    replay,
    set_value,
)
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


def fp(text: str) -> FieldPath:
    root, *keys = text.split(".")
    return FieldPath.of(root, tuple(keys), text)


@pytest.mark.parametrize(
    ("doc", "path", "where"),
    [
        ("text", "res.a", "a string at the top level"),
        ({"a": 5}, "res.a.b", "a number at a"),
        ({"a": [{"b": True}]}, "res.a.0.b.c", "a boolean at a.0.b"),
        ({"a": [1]}, "res.a.x", "a list at a"),
    ],
)
def test_strict_find_names_what_the_response_has_where(doc, path, where):
    with pytest.raises(PathError) as e:
        find(doc, fp(path), strict=True)
    assert str(e.value) == f"the response has {where}"


def test_strict_find_walks_arrays_by_index_and_stops_at_their_end():
    doc = {"a": [{"b": 1}, {"b": 2}]}
    assert [m.path for m in find(doc, fp("res.a.1.b"), strict=True)] == [("a", 1, "b")]
    assert find(doc, fp("res.a.2.b"), strict=True) == []
    assert find(doc, fp("res.a.2")) == []  # exactly the length: not there
    assert find({"a": None}, fp("res.a.b"), strict=True) == []


def test_a_match_through_a_case_variant_is_not_exact_at_any_depth():
    doc = {"A": {"b": 1}, "a": {"B": 2, "b": 3}}
    found = {m.path: m.exact for m in find(doc, fp("params.a.b"))}
    assert found == {("a", "b"): True, ("a", "B"): False, ("A", "b"): False}


def test_set_value_errors():
    with pytest.raises(PathError, match=r"^no index 1 in an array of 1$"):
        set_value({"a": [1]}, ("a", "1"), 5)
    with pytest.raises(PathError, match=r"^cannot set 'b' inside a string$"):
        set_value({"a": "x"}, ("a", "b"), 5)
    with pytest.raises(PathError, match=r"^empty path$"):
        set_value({}, (), 5)


@pytest.mark.parametrize(
    ("value", "name"),
    [(None, "null"), (True, "boolean"), ("s", "string"), (1, "number"), (1.5, "number"),
     ([], "list"), ({}, "dict")],
)  # fmt: skip
def test_json_type(value, name):
    assert json_type(value) == name


def test_changes_and_actions_print_as_their_json():
    doc = {"a": 1}
    change = FieldChange("params", doc, "a", 1, 2, ("a",))
    assert (
        repr(change) == "FieldChange({'op': 'set', 'target': 'params', 'path': ['a'], 'value': 2})"
    )
    action = ResponseAction("remove", fp("res.a"))
    assert repr(action) == f"ResponseAction({action.to_json()!r})" and "'remove'" in repr(action)


def test_a_response_action_on_a_field_the_response_lacks_changes_nothing():
    body = {"name": "A", "list": []}
    for op in ("encrypt", "decrypt", "hash"):
        apply_response([ResponseAction(op, fp("res.email"), KEYRING)], body)
    assert body == {"name": "A", "list": []}
