"""Decisions as Envoy's HTTP authorization responses."""

from __future__ import annotations

import json

from authz.decision import Decision
from authz.envoy.http.encode import REMOVE_HEADER, response
from authz.plan import PLAN_HEADER


def _parse(data: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
    return int(lines[0].split(" ")[1]), headers, body  # type: ignore[return-value]


def test_allow_sets_and_removes_headers() -> None:
    d = Decision(True, headers=[("x-sc-token", "t")], headers_to_remove=["x_sc_token", "x-a"])
    status, headers, body = _parse(response(d))
    assert status == 200 and body == b""
    assert ("x-sc-token", "t") in headers
    assert (REMOVE_HEADER, "x_sc_token,x-a") in headers
    assert ("content-length", "0") in headers


def test_allow_carries_the_plan() -> None:
    plan = {"v": 1, "bodyHash": "h", "request": [], "response": []}
    _, headers, _ = _parse(response(Decision(True, plan=plan)))
    assert json.loads(dict(headers)[PLAN_HEADER]) == plan


def test_denial_has_status_json_body_and_challenge() -> None:
    d = Decision(False, 401, "no token", "missing token", request_id="r1",
                 response_headers_to_add=[("www-authenticate", 'Bearer realm="x"')])  # fmt: skip
    status, headers, body = _parse(response(d))
    assert status == 401
    assert json.loads(body) == {"error": "missing token", "requestId": "r1"}
    assert ("content-type", "application/json") in headers
    assert ("www-authenticate", 'Bearer realm="x"') in headers
    assert ("content-length", str(len(body))) in headers


def test_a_denial_is_never_2xx() -> None:
    assert _parse(response(Decision(False, 200, "x", "x")))[0] == 403


def test_what_http_cannot_carry_is_a_denial_not_dropped() -> None:
    for d in (
        Decision(True, query_parameters_to_set=[("a", "b")]),
        Decision(True, query_parameters_to_remove=["a"]),
    ):
        status, _, body = _parse(response(d))
        assert status == 400 and b"query" in body
    assert _parse(response(Decision(True, response_headers_to_add=[("x", "y")])))[0] == 500


def test_no_header_splitting() -> None:
    d = Decision(True, headers=[("x-user", "a\r\nx-admin: 1")])
    status, headers, _ = _parse(response(d))
    assert status == 500
    assert not any(k == "x-admin" for k, _ in headers)
