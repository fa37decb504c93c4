"""One interpretation, through a real Envoy: the request the rules judge is the request the
upstream reads (SECURITY.md, "One interpretation"). A section per row of the table there:
each sends what some framework behind Envoy would read differently from authz, and the
request must be refused (nothing reaches the upstream) or reach it with the ambiguity gone.

The stack: envoy/envoy.yaml's listener settings and filters (`plain` listener: authz resolves
by path, ext_proc on) in front of `authz serve` with CONFIG below and the echo upstream,
which records what it received (its query as Python's parse_qs decodes it).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.support import claims, good_header, hs256
from tests.adversarial.test_envoy_attacks import assert_denied, auth, send
from tests.integration.harness import Stack, context_route, start_stack

pytestmark = pytest.mark.integration

CONFIG = """
project: oneread
auth:
  secrets:
    - {kid: main, alg: HS256, secret: "${AUTHZ_SECRET}", primary: true}
  serviceToken: {header: x-sc-token, ttl: 60s}
crypto:
  keys:
    - {id: k1, key: "${AUTHZ_AES_KEY}"}
services:
  oi:
    endpoints:
      body:
        method: POST
        path: /oi/body
        rule:
          rule: and
          clauses:
            - {rule: match, eval: "<=", type: number, f1: args.params.amount, f2: 100}
            - {rule: force, field: args.params.userId, value: args.auth.id}
            - {rule: hash, fields: [args.params.password]}
      query:
        method: GET
        path: /oi/query
        rule:
          rule: and
          clauses:
            - {rule: force, field: args.query.owner, value: args.auth.id}
            - {rule: force, field: args.query.owner_id, value: args.auth.id}
      readquery:
        method: [GET, POST]
        path: /oi/readquery
        rule: {rule: match, eval: "==", type: string, f1: args.query.owner, f2: args.auth.id}
      header:
        method: GET
        path: /oi/header
        rule: {rule: force, field: args.headers.x-user-id, value: args.auth.id}
      item:
        method: [GET, POST]
        path: /oi/item
        rule: {rule: authenticated}
      remove:
        method: DELETE
        path: /oi/item
        rule: {rule: match, eval: "==", type: string, f1: args.auth.role, f2: admin}
      docs:
        method: [GET, HEAD, POST]
        path: /oi/docs
        rule: {rule: match, eval: "==", type: string, f1: args.params.owner, f2: args.auth.id}
      nested:
        method: POST
        path: /oi/nested
        rule: {rule: match, eval: "==", type: string, f1: args.params.owner.id, f2: args.auth.id}
      whole:
        method: POST
        path: /oi/whole
        rule: {rule: match, eval: "<=", type: number, f1: "utils.length(args.params)", f2: 5}
      forcedvalue:
        method: GET
        path: /oi/forced
        rule: {rule: force, field: args.query.user, value: args.headers.x-in}
"""

JSON = ("content-type", "application/json")


@pytest.fixture(scope="module")
def stack(log_dir: Path) -> Iterator[Stack]:
    config = log_dir / "oneread.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    # a route that names oi.body but does not send bodies to authz (a deployment mistake)
    unbuffered = context_route("/unbuffered/", "oi", "body")
    settings = unbuffered["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
    settings["check_settings"]["disable_request_body_buffering"] = True
    s = start_stack(config, log_dir, plain=True, extra_routes=[unbuffered])
    yield s
    s.stop()


def user() -> list[tuple[str, str]]:
    return auth(hs256(good_header(), claims(id="u1", role="user")))


def go(stack: Stack, target: str, headers: list[tuple[str, str]] | None = None, **kw: Any) -> Any:
    """send() as user u1 to the `plain` listener (authz resolves the endpoint by path)."""
    return send(stack, target, [*user(), *(headers or [])], plain=True, **kw)


def upstream_json(seen: list[dict[str, Any]]) -> Any:
    (one,) = seen
    return json.loads(one["body"])


# --- bodies by content type and shape -----------------------------------------------------


def test_a_json_object_declared_json_gets_its_field_rules(stack: Stack) -> None:
    body = b'{"amount": 5, "password": "clear", "userId": "admin"}'
    status, _, seen = go(stack, "/oi/body", [JSON], method="POST", body=body)
    assert status == 200
    got = upstream_json(seen)
    assert got["userId"] == "u1" and got["password"] != "clear"


@pytest.mark.parametrize(
    "body",
    [
        b'[{"amount": 5000, "password": "clear"}]',  # the finding: params fell back to the query
        b'{"x": 1}[',
        b'"password=clear"',
        b"5",
        b"null",
        b'[{"amount": 5}, {"amount": 5000}]',
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(stack: Stack, body: bytes) -> None:
    status, data, seen = go(stack, "/oi/body?amount=5", [JSON], method="POST", body=body)
    assert_denied(status, data, seen, 400)


@pytest.mark.parametrize(
    "headers",
    [
        [("content-type", "application/x-www-form-urlencoded")],  # the finding: parsed as JSON
        [("content-type", "multipart/form-data; boundary=x")],
        [("content-type", "text/plain")],
        [],  # undeclared: Express's json parser skips it, Go decodes it
        [JSON, ("content-type", "application/x-www-form-urlencoded")],
        [("content-type", "application/json; charset=utf-16")],
        [("content-type", "application/jsonx")],
    ],
)
def test_a_body_not_declared_json_is_refused(stack: Stack, headers: list[tuple[str, str]]) -> None:
    body = b'{"amount": 5, "password": "clear", "userId": "admin"}'
    status, data, seen = go(stack, "/oi/body", headers, method="POST", body=body)
    assert_denied(status, data, seen, 415)


def test_a_content_encoded_body_is_refused(stack: Stack) -> None:
    # the upstream would inflate it; authz would judge the compressed bytes
    body = gzip.compress(b'{"amount": 5000, "password": "clear"}')
    headers = [JSON, ("content-encoding", "gzip")]
    status, data, seen = go(stack, "/oi/body", headers, method="POST", body=body)
    assert_denied(status, data, seen, 415)


def test_a_body_that_did_not_reach_authz_is_refused(stack: Stack) -> None:
    body = b'{"amount": 5000, "password": "clear"}'
    rid_headers = [*user(), JSON]
    status, data, seen = send(
        stack, "/unbuffered/x?amount=5", rid_headers, method="POST", body=body
    )
    assert_denied(status, data, seen, 400)


def test_a_form_body_where_the_rules_read_the_query_is_refused(stack: Stack) -> None:
    # Spring, PHP's $_REQUEST, Flask's request.values read owner from the body too
    form = [("content-type", "application/x-www-form-urlencoded")]
    status, data, seen = go(stack, "/oi/readquery?owner=u1", form, method="POST",
                            body=b"owner=admin")  # fmt: skip
    assert_denied(status, data, seen, 415)


# --- keys that differ only in case, at any depth ------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"amount": 5, "AMOUNT": 5000}',  # the finding: Go's encoding/json reads 5000
        b'{"AMOUNT": 5000, "amount": 5}',
        b'{"amount": 5, "aMoUnT": 5000}',
        b'{"amount": 5, "\\u0041MOUNT": 5000}',
        b'{"amount": 5, "password": "a", "pa\\u017f\\u017fword": "b"}',  # Go folds long s
        b'{"amount": 5, "meta": {"role": "user", "Role": "admin"}}',
        b'{"amount": 5, "items": [{"sku": "a"}, {"sku": "b", "SKU": "c"}]}',
        b'{"amount": 5, "a\\ud800": 1, "a\\udbff": 2}',  # lone surrogates: U+FFFD to Go
    ],
)
def test_a_body_with_case_variant_keys_is_refused(stack: Stack, body: bytes) -> None:
    status, data, seen = go(stack, "/oi/body", [JSON], method="POST", body=body)
    assert_denied(status, data, seen, 400)


# --- query names that decode or fold to a name the rules read or change -------------------


@pytest.mark.parametrize(
    "query",
    [
        "own%65r=admin",  # the finding: the upstream read owner=admin before the forced one
        "%6F%77%6E%65%72=admin",
        "Owner=admin",
        "OWNER=admin",
        "owner=x&Owner=admin",
        "owner.id=admin",  # PHP reads owner_id
        "owner+id=admin",
        "Owner%5Fid=admin",
        "owner[]=admin",  # PHP and Express's qs: owner is an array, the forced value joins it
        "owner[0]=admin",
        "%20owner=admin",  # PHP drops leading spaces from names
    ],
)
def test_another_spelling_of_a_forced_query_name_is_refused(stack: Stack, query: str) -> None:
    status, data, seen = go(stack, f"/oi/query?{query}")
    assert_denied(status, data, seen, 400)


@pytest.mark.parametrize("query", ["Owner=u1&owner=u1", "owner=u1&own%65r=admin", "OWNER=u1"])
def test_another_spelling_of_a_read_query_name_is_refused(stack: Stack, query: str) -> None:
    status, data, seen = go(stack, f"/oi/readquery?{query}")
    assert_denied(status, data, seen, 400)


def test_the_forced_names_themselves_are_overwritten(stack: Stack) -> None:
    status, _, seen = go(stack, "/oi/query?owner=admin&owner_id=admin&other%5B%5D=1")
    assert status == 200
    (one,) = seen
    assert one["query"] == {"owner": "u1", "owner_id": "u1", "other[]": "1"}


# --- names PHP, Rack 2 and Express's qs read as the plain name (the third attack) ---------
# PHP cuts a name at NUL and turns a `[` without `]` into `_`; Rack 2 skips brackets around a
# name; qs reads `[name]` as `name`. Each reached the upstream as the name the rules judged.


@pytest.mark.parametrize(
    "target",
    [
        "/oi/forced?user%00=evil",  # a second, unforced user (PHP)
        "/oi/forced?user]=evil",  # Rack 2
        "/oi/forced?[user]=evil",  # Rack 2, qs
        "/oi/forced?%5Duser=evil",
        "/oi/forced?%5buser%5d=evil",
        "/oi/query?owner[id=admin",  # PHP: owner_id
        "/oi/query?owner%00anything=admin",
        "/oi/query?[owner][x]=admin",
        "/oi/query?order.owner=admin",  # ASP.NET: property owner of a parameter order
        "/oi/readquery?owner=u1&owner%00=bob",  # the rules read owner=u1, PHP reads bob
        "/oi/readquery?owner=u1&[owner]=bob",
        "/oi/readquery?owner=u1&owner]=bob",
        "/oi/readquery?owner=u1&%5Downer=bob",
        "/oi/readquery?owner=u1&!owner=bob",  # Spring's WebDataBinder default
    ],
)
def test_a_name_a_framework_reads_as_a_used_query_name_is_refused(
    stack: Stack, target: str
) -> None:
    status, data, seen = go(stack, target, [("x-in", "me")])
    assert_denied(status, data, seen, 400)


@pytest.mark.parametrize(
    "query",
    ["amount%00=5000", "amount]=5000", "[amount]=5000", "userId%00=victim", "%5DuserId=victim"],
)
def test_a_name_a_framework_reads_as_a_body_field_is_refused(stack: Stack, query: str) -> None:
    body = b'{"amount": 1, "userId": "evil"}'
    status, data, seen = go(stack, f"/oi/body?{query}", [JSON], method="POST", body=body)
    assert_denied(status, data, seen, 400)


@pytest.mark.parametrize(
    "target", ["/oi/item?a%00=1", "/oi/item?x=1&b%0A=2", "/oi/item?%7F=1", "/oi/header?c%0D=1"]
)
def test_a_query_name_with_a_control_character_is_refused_anywhere(
    stack: Stack, target: str
) -> None:
    status, data, seen = go(stack, target)
    assert_denied(status, data, seen, 400)
    assert b"control character" in data


# --- header names that servers fold together ----------------------------------------------


@pytest.mark.parametrize(
    ("target", "name"),
    [
        ("/oi/header", "x_user_id"),  # the finding: WSGI reads it as X-User-Id
        ("/oi/header", "X_User_Id"),
        ("/oi/header", "x-user_id"),
        ("/oi/item", "x_sc_token"),
        ("/oi/item", "x_anything"),
    ],
)
def test_an_underscore_header_name_is_refused_at_the_edge(
    stack: Stack, target: str, name: str
) -> None:
    # Envoy's headers_with_underscores_action: REJECT_REQUEST; on HTTP/1 it closes the
    # connection, with or without a 400 (status 0)
    counter = "http1.requests_rejected_with_underscores_in_headers"
    before = stack.envoy.counter(counter)
    status, data, seen = go(stack, target, [(name, "admin")])
    assert status in (0, 400) and seen == [], (status, data[:300])
    assert stack.envoy.counter(counter) == before + 1


# --- method overrides ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/oi/item", [("x-http-method-override", "DELETE")]),
        ("/oi/item", [("X-HTTP-Method", "delete")]),
        ("/oi/item", [("x-method-override", "DELETE")]),
        ("/oi/item?_method=DELETE", []),
        ("/oi/item?%5Fmethod=DELETE", []),
        ("/oi/item?a=1&_METHOD=delete", []),
        ("/oi/item?_method[]=DELETE", []),
        ("/oi/item?_method%00=DELETE", []),  # the third attack: PHP, Rack 2, qs
        ("/oi/item?[_method]=DELETE", []),
        ("/oi/item?_method]=DELETE", []),
        ("/oi/item?%5D_method=DELETE", []),
        ("/oi/item?%5b_method%5d=DELETE", []),
        ("/oi/item?_method%00x=DELETE", []),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_method_override_is_refused(
    stack: Stack, target: str, headers: list[tuple[str, str]], method: str
) -> None:
    # a user may GET and POST /oi/item, only an admin DELETE it
    status, data, seen = go(stack, target, headers, method=method)
    assert_denied(status, data, seen, 400)


@pytest.mark.parametrize(
    "body",
    [
        b"_method=DELETE",
        b"note=x&%5Fmethod=DELETE",
        b"_METHOD=delete&x=1",
        b"[_method]=DELETE",
        b"_method]=DELETE",
        b"_method%00=DELETE",
    ],
)
def test_a_method_override_in_a_form_body_is_refused(stack: Stack, body: bytes) -> None:
    # the rules of /oi/item read no body, but Envoy sends it (envoy/envoy.yaml), so authz
    # sees the field Spring, Symfony/Laravel and gorilla would turn into a DELETE
    form = [("content-type", "application/x-www-form-urlencoded")]
    status, data, seen = go(stack, "/oi/item", form, method="POST", body=body)
    assert_denied(status, data, seen, 400)


@pytest.mark.parametrize(
    "name", [b'="_method"', b'="[_method]"', b"=_method]", b"*=utf-8''%5Fmethod"]
)
def test_a_method_override_in_a_multipart_body_is_refused(stack: Stack, name: bytes) -> None:
    # Rack 2 reads multipart names as it reads query names; Go reads RFC 2231's `name*=`
    part = b"--b\r\ncontent-disposition: form-data; name" + name + b"\r\n\r\nDELETE\r\n--b--\r\n"
    multipart = [("content-type", "multipart/form-data; boundary=b")]
    status, data, seen = go(stack, "/oi/item", multipart, method="POST", body=part)
    assert_denied(status, data, seen, 400)


def test_an_override_naming_the_method_itself_passes(stack: Stack) -> None:
    status, _, seen = go(stack, "/oi/item", [("x-http-method-override", "GET")])
    assert status == 200 and len(seen) == 1


# --- values set by rules stay values (forced query values) --------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "a&role=admin",
        "x&role=admin#@evil.example",
        "a b",
        "%26",
        "a+b",
        "=",
        "a;role=admin",
        "caf\u00e9",
    ],
)
def test_a_forced_query_value_reaches_the_upstream_as_the_rule_set_it(
    stack: Stack, value: str
) -> None:
    raw = value.encode().decode("latin-1")  # the header as bytes on the wire
    status, data, seen = go(stack, "/oi/forced?user=me", [("x-in", raw)])
    assert status == 200, data[:300]
    (one,) = seen
    assert one["query"] == {"user": value}


# --- a body and a query of the same names (args.params is the body) -----------------------
# Laravel's input() and PHP's $_REQUEST merge the two; Go's FormValue and Spring's
# @RequestParam read the query beside a JSON body.


@pytest.mark.parametrize(
    "query",
    [
        "owner=bob",  # the finding: the rules judged the body's owner=u1, the upstream read bob
        "owner=bob&owner=u1",
        "Owner=bob",
        "own%65r=bob",
        "owner[]=bob",
    ],
)
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
def test_a_query_name_the_rules_read_from_the_body_is_refused(
    stack: Stack, query: str, method: str
) -> None:
    body = b'{"owner": "u1"}'
    status, data, seen = go(stack, f"/oi/docs?{query}", [JSON], method=method, body=body)
    assert_denied(status, data, seen, 400)


@pytest.mark.parametrize(
    ("target", "body"),
    [
        ("/oi/nested?owner=bob", b'{"owner": {"id": "u1"}}'),
        ("/oi/nested?owner[id]=bob", b'{"owner": {"id": "u1"}}'),
        ("/oi/nested?OWNER%5Bid%5D=bob", b'{"owner": {"id": "u1"}}'),
        # body field rules (match, force, hash) left a same-named query parameter in place
        ("/oi/body?amount=5000&userId=victim", b'{"amount": 1, "userId": "evil"}'),
        ("/oi/body?password=hunter2", b'{"amount": 1}'),  # reached the upstream in clear
        ("/oi/body?x=1&Password=hunter2", b'{"amount": 1, "password": "p"}'),
        ("/oi/whole?note=admin", b'{"note": "hi"}'),  # the rules read args.params whole
        ("/oi/whole?NOTE=admin", b'{"note": "hi"}'),
    ],
)
def test_a_query_name_beside_a_body_the_rules_use_is_refused(
    stack: Stack, target: str, body: bytes
) -> None:
    status, data, seen = go(stack, target, [JSON], method="POST", body=body)
    assert_denied(status, data, seen, 400)
    assert b"names a body field" in data


def test_a_form_body_is_still_not_the_params(stack: Stack) -> None:
    form = [("content-type", "application/x-www-form-urlencoded")]
    status, data, seen = go(stack, "/oi/docs?owner=u1", form, method="POST", body=b"owner=bob")
    assert_denied(status, data, seen, 415)


def test_other_query_names_beside_a_body_pass(stack: Stack) -> None:
    target = "/oi/body?page=2&amounts=9"
    status, data, seen = go(stack, target, [JSON], method="POST", body=b'{"amount": 1}')
    assert status == 200, data[:300]
    (one,) = seen
    assert one["query"] == {"page": "2", "amounts": "9"}
    status, _, seen = go(stack, "/oi/whole?page=2", [JSON], method="POST", body=b'{"n": 1}')
    assert status == 200 and len(seen) == 1


def test_without_a_body_the_query_is_the_params(stack: Stack) -> None:
    assert go(stack, "/oi/docs?owner=u1")[0] == 200
    assert_denied(*go(stack, "/oi/docs?owner=bob"), 403)


# --- `;` as a query separator (Rack 2, Python before 3.9.2 and Django on it) --------------


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/oi/query?owner=u1&x=1;owner=evil"),  # the finding: a second, unforced owner
        ("GET", "/oi/query?x=1;owner_id=evil"),
        ("GET", "/oi/readquery?owner=u1&x=;owner=bob"),
        ("GET", "/oi/readquery?owner=u1;owner=bob"),
        ("GET", "/oi/docs?owner=u1&x=;owner=bob"),
        ("POST", "/oi/body?amount=5&x=1;password=hunter2"),  # hashed only where authz saw it
        ("GET", "/oi/item?x=1;_method=DELETE"),  # an override, whatever the rules read
    ],
)
def test_a_raw_semicolon_in_a_query_the_rules_use_is_refused(
    stack: Stack, method: str, target: str
) -> None:
    status, data, seen = go(stack, target, method=method)
    assert_denied(status, data, seen, 400)


def test_an_encoded_semicolon_is_a_value(stack: Stack) -> None:
    status, data, seen = go(stack, "/oi/readquery?owner=u1&x=a%3Bowner%3Dbob")
    assert status == 200, data[:300]
    (one,) = seen
    assert one["query"] == {"owner": "u1", "x": "a;owner=bob"}


def test_a_semicolon_where_the_rules_read_no_query_passes(stack: Stack) -> None:
    status, _, seen = go(stack, "/oi/item?a=1;b=2")
    assert status == 200 and len(seen) == 1
