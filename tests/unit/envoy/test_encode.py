"""Decision -> CheckResponse: the prebuilt parts (cached allows, denial templates, the JSON
body) give exactly what building every message per Check gave."""

from __future__ import annotations

import json

import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

from authz.decision import Decision
from authz.envoy import encode as enc
from authz.envoy.encode import encode, serialize


def _allow(token: str = "t1", **changes) -> Decision:
    d = Decision(True, 200, "allowed", None, "s", "e", "rid")
    d.headers = [("x-sc-token", token)]
    d.headers_to_remove = ["x_sc_token", "x_authz_dry_run", "x-authz-dry-run"]
    for name, value in changes.items():
        setattr(d, name, value)
    return d


def _deny(status: int, message: str | None = "nope", rid: str = "rid", **changes) -> Decision:
    d = Decision(False, status, "reason", message, "s", "e", rid)
    for name, value in changes.items():
        setattr(d, name, value)
    return d


DECISIONS = [
    _allow(),
    _allow("t2"),
    _allow(headers=[("x-sc-token", "t1"), ("x-authz-dry-run", "deny 403")]),
    _allow(headers=[]),
    _allow(headers_to_remove=[]),
    _allow(headers=[], headers_to_remove=[]),
    _allow(query_parameters_to_set=[("q", "1")], query_parameters_to_remove=["z"]),
    _allow(response_headers_to_add=[("x-r", "v")]),
    _allow(plan={"v": 1, "bodyHash": "h", "request": [], "response": []}),
    _deny(403),
    _deny(403, None),
    _deny(400, 'bad "input" \\ é \u2028 😀', 'r"1'),
    _deny(401, "missing token", response_headers_to_add=[("www-authenticate", 'Bearer realm="p"')]),
    _deny(500, "internal error", ""),
    _deny(503),
]


@pytest.mark.parametrize("decision", DECISIONS)
def test_serialize_is_encode_serialized(decision):
    once, twice = serialize(decision), serialize(decision)  # the second from the caches
    assert once == twice == encode(decision).SerializeToString()


@pytest.mark.parametrize("decision", [d for d in DECISIONS if not d.allowed])
def test_denial_body_is_the_json_error_object(decision):
    response = CheckResponse.FromString(serialize(decision))
    body = json.loads(response.denied_response.body)
    assert body == {"error": decision.message or "access denied", "requestId": decision.request_id}
    assert response.denied_response.body == json.dumps(body)
    assert response.denied_response.status.code == decision.status
    assert response.status.code == (16 if decision.status == 401 else 7)


def test_a_cached_allow_is_keyed_by_header_values_not_by_list_identity():
    d = _allow("first")
    first = serialize(d)
    d.headers[0] = ("x-sc-token", "second")  # same list object, new value
    assert serialize(d) != first
    assert CheckResponse.FromString(serialize(d)).ok_response.headers[0].header.value == "second"


def test_encode_returns_a_copy_of_the_denial_template():
    d = _deny(403)
    encode(d).denied_response.headers.add().header.key = "x-mutated"
    assert "x-mutated" not in [h.header.key for h in encode(d).denied_response.headers]


def test_the_caches_are_bounded():
    cache = enc._Bounded(2)
    for i in range(5):
        cache.put(i, i)
    assert len(cache._entries) <= 2 and cache.get(4) == 4


@pytest.mark.parametrize(
    "value", ["a&role=admin", "x&role=admin#@evil.example", "a b", "%26", "a+b", "é/?=", ""]
)
def test_a_forced_query_value_is_encoded_so_the_upstream_decodes_it_exactly(value):
    from urllib.parse import parse_qs

    ok = encode(_allow(query_parameters_to_set=[("user", value)])).ok_response
    ((param,),) = [ok.query_parameters_to_set]
    # Envoy writes key=value into :path as given; what an upstream then decodes:
    assert parse_qs(f"{param.key}={param.value}", keep_blank_values=True) == {"user": [value]}
    assert not set(param.value) & set("&#+ %=?") - {"%"}
