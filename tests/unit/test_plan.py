"""authz/plan.py: the body plan's format, hash, encoding and parsing."""

import hashlib
import json

import pytest

from authz import plan
from authz.documents import RESPONSE, FieldPath, ResponseAction
from authz.errors import PlanError


def test_a_plan_round_trips_through_its_encoding():
    action = ResponseAction("remove", FieldPath.of(RESPONSE, ("pw",), "res.pw"))
    ops = [{"op": "set", "target": "params", "path": ["a"], "value": 1}]
    text = plan.encode(plan.build(b'{"a":0}', ops, [action]))
    assert json.loads(text)["bodyHash"] == hashlib.sha256(b'{"a":0}').hexdigest()
    parsed = plan.parse(text, None)
    assert parsed.request == ops
    assert [a.to_json() for a in parsed.response] == [{"op": "remove", "path": ["pw"]}]
    assert parsed.authorizes(b'{"a":0}') and not parsed.authorizes(b'{"a":1}')


def test_the_empty_hash_is_the_hash_of_no_body():
    assert plan.EMPTY_HASH == plan.body_hash(b"") == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"v": 2, "bodyHash": "", "request": [], "response": []}',
        '{"v": 1, "request": [], "response": []}',
        '{"v": 1, "bodyHash": 5, "request": [], "response": []}',
        '{"v": 1, "bodyHash": "", "request": {}, "response": []}',
        '{"v": 1, "bodyHash": "", "request": [], "response": [{"op": "drop", "path": ["a"]}]}',
    ],
)
def test_malformed_plans_are_plan_errors(text):
    with pytest.raises(PlanError):
        plan.parse(text, None)
