"""The pipeline resolve -> identify -> evaluate, with real keys and real tokens."""

import asyncio
import json
import time

import jwt
import pytest

from authz.authorizer import Authorizer
from authz.config.load import load_config_text
from authz.errors import ConfigError
from authz.request import Request
from authz.rules.logic import Allow

SECRET = "0123456789abcdef0123456789abcdef-test"
CONFIG = """
project: demo
auth:
  secrets: [{alg: HS256, secret: "${T_SECRET}", primary: true}]
services:
  orders:
    endpoints:
      list: {method: GET, path: /v1/orders, rule: {rule: authenticated}}
      get:
        method: GET
        path: /v1/orders/{orderId}
        rule:
          rule: or
          error: not your order
          clauses:
            - {rule: match, eval: "==", type: string, f1: args.auth.role, f2: admin}
            - {rule: match, eval: "==", type: string, f1: args.auth.id, f2: args.pathParams.orderId}
      create:
        method: POST
        path: /v1/orders
        rule: {rule: match, eval: "<=", type: number, f1: args.params.amount, f2: 100}
      search:
        method: GET
        path: /v1/search
        rule: {rule: match, eval: "==", type: string, f1: args.query.q, f2: ok}
      health: {method: GET, path: /health, rule: {rule: allow}}
      closed: {method: GET, path: /closed, rule: {rule: deny}}
      norule: {method: GET, path: /norule}
      trial: {method: GET, path: /trial, rule: {rule: deny}, mode: dry-run}
"""


def token(**claims):
    claims.setdefault("exp", int(time.time()) + 600)
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def authorizer():
    return Authorizer(load_config_text(CONFIG, {"T_SECRET": SECRET}))


def check(authorizer, method, target, tok=None, body=b"", context=None, trace=False, **hdrs):
    headers = {"x-request-id": "rid-1", **hdrs}
    if body:
        headers.setdefault("content-type", "application/json")
    if tok:
        headers["authorization"] = f"Bearer {tok}"
    req = Request.from_target(
        method, target, headers=headers, body=body, context=context or {}, request_id="rid-1"
    )
    return asyncio.run(authorizer.check(req, trace=trace))


def test_allow_adds_a_service_token_for_the_caller(authorizer):
    d = check(authorizer, "GET", "/v1/orders", token(id="u1"))
    assert d.allowed and d.status == 200
    ((name, value),) = d.headers
    assert name == "x-sc-token"
    claims = jwt.decode(value, SECRET, algorithms=["HS256"])
    assert claims["iss"] == "demo" and claims["id"] == "u1" and claims["exp"] > time.time()
    # a header we set is never also removed (Envoy removes after setting)
    assert "x-sc-token" not in d.headers_to_remove
    assert {"x_sc_token", "x-authz-dry-run", "x_authz_dry_run"} <= set(d.headers_to_remove)


@pytest.mark.parametrize(
    ("tok", "status", "message"),
    [
        (None, 401, "missing token"),
        ("not-a-jwt", 401, "invalid token"),
        (jwt.encode({"id": "u1"}, "another-secret-of-sufficient-length!!", algorithm="HS256"),
         401, "invalid token"),
        (token(id="u1", exp=1), 401, "invalid token"),
    ],
)  # fmt: skip
def test_bad_tokens_are_401(authorizer, tok, status, message):
    d = check(authorizer, "GET", "/v1/orders", tok)
    assert (d.allowed, d.status, d.message) == (False, status, message)
    assert ("www-authenticate", 'Bearer realm="demo"' + ("" if tok is None else
            ', error="invalid_token"')) in d.response_headers_to_add  # fmt: skip


def test_path_template_and_or(authorizer):
    assert check(authorizer, "GET", "/v1/orders/u1", token(id="u1")).allowed
    assert check(authorizer, "GET", "/v1/orders/u2", token(id="u1", role="admin")).allowed
    d = check(authorizer, "GET", "/v1/orders/u2", token(id="u1"))
    assert (d.allowed, d.status, d.message) == (False, 403, "not your order")


def test_body_params_and_query(authorizer):
    tok = token(id="u1")
    assert check(authorizer, "POST", "/v1/orders", tok, body=b'{"amount": 100}').allowed
    d = check(authorizer, "POST", "/v1/orders", tok, body=b'{"amount": 101}')
    assert (d.allowed, d.status) == (False, 403)
    d = check(authorizer, "POST", "/v1/orders", tok, body=b'{"amount": ')
    assert (d.allowed, d.status) == (False, 400)
    # no body: params are the query parameters
    assert check(authorizer, "POST", "/v1/orders?amount=5", tok).status == 403  # "5" is no number
    assert check(authorizer, "GET", "/v1/search?q=ok", tok).allowed
    assert not check(authorizer, "GET", "/v1/search?q=no", tok).allowed


def test_a_body_the_rule_does_not_read_is_not_parsed(authorizer):
    assert check(authorizer, "GET", "/v1/orders", token(id="u1"), body=b"{not json").allowed


def test_partial_body_is_refused_when_the_rule_reads_params(authorizer):
    req = Request.from_target("POST", "/v1/orders", body=b'{"amount": 1',
                              headers={"authorization": f"Bearer {token(id='u')}"},
                              body_partial=True)  # fmt: skip
    d = asyncio.run(authorizer.check(req))
    assert (d.allowed, d.status) == (False, 400)


def test_allow_ignores_bad_tokens_and_deny_needs_one(authorizer):
    assert check(authorizer, "GET", "/health", "garbage").allowed
    assert check(authorizer, "GET", "/closed").status == 401
    assert check(authorizer, "GET", "/closed", token(id="u1")).status == 403


def test_no_endpoint_and_no_rule_are_403(authorizer):
    for target in ("/nowhere", "/norule"):
        d = check(authorizer, "GET", target, token(id="u1"))
        assert (d.allowed, d.status, d.message) == (False, 403, "no rule for this endpoint")
    d = check(
        authorizer, "GET", "/v1/orders", token(id="u"), context={"service": "x", "endpoint": "y"}
    )
    assert (d.allowed, d.status) == (False, 403)


def test_context_extensions_select_the_endpoint(authorizer):
    ctx = {"service": "orders", "endpoint": "health"}
    assert check(authorizer, "GET", "/anything", context=ctx).allowed


def test_dry_run_allows_and_marks(authorizer):
    d = check(authorizer, "GET", "/trial", token(id="u1"))
    assert d.allowed and d.dry_run and ("x-authz-dry-run", "deny 403") in d.headers
    assert "x-authz-dry-run" not in d.headers_to_remove


def test_two_authorization_headers_are_401(authorizer):
    d = check(authorizer, "GET", "/v1/orders", authorization=f"Bearer {token()},Bearer {token()}")
    assert d.status == 401


def test_an_exception_inside_a_rule_is_a_500_deny(authorizer, monkeypatch):
    def boom(self, ctx):
        raise RuntimeError("bug")

    async def aboom(self, ctx):
        boom(self, ctx)

    from authz.rules import match

    monkeypatch.setattr(match.Match, "evaluate_now", boom)  # serving: rules that never await
    monkeypatch.setattr(match.Match, "evaluate", aboom)  # tracing
    for trace in (False, True):
        d = check(authorizer, "GET", "/v1/search?q=ok", token(id="u1"), trace=trace)
        assert (d.allowed, d.status, d.message) == (False, 500, "internal error")


def test_trace_is_returned_when_asked(authorizer):
    d = check(authorizer, "GET", "/v1/orders/u2", token(id="u1"), trace=True)
    assert [t.path.rsplit(".", 1)[-1] for t in d.trace] == ["clauses[0]", "clauses[1]", "rule"]
    assert json.dumps(d.to_json())  # the decision is JSON-serialisable


def test_duplicate_routes_are_config_errors():
    text = """
project: p
services:
  a: {endpoints: {x: {method: GET, path: /p, rule: {rule: allow}}}}
  b: {endpoints: {y: {method: GET, path: /p, rule: {rule: allow}}}}
"""
    with pytest.raises(ConfigError) as exc:
        Authorizer(load_config_text(text, {}))
    assert "services.b.endpoints.y.path: same method and path as services.a.endpoints.x" in str(
        exc.value
    )


def test_top_level_allow_needs_no_token(authorizer):
    ep = next(e for e in authorizer.endpoints if e.name == "health")
    assert isinstance(ep.rule, Allow) and not ep.needs_token


def test_a_config_that_cannot_sign_service_tokens_is_rejected():
    text = "project: p\nservices: {a: {endpoints: {x: {path: /p, rule: {rule: allow}}}}}\n"
    with pytest.raises(ConfigError) as exc:
        Authorizer(load_config_text(text, {}))
    assert "no key can sign the upstream service token" in str(exc.value)
    off = "project: p\nauth: {serviceToken: {enabled: false}}\n"
    d = Authorizer(load_config_text(off + text.split("\n", 1)[1], {}))
    assert d.endpoints[0].name == "x"


# --- dry-run never switches field rules off ----------------------------------------------

MASKED = """
project: demo
auth:
  secrets: [{alg: HS256, secret: "${T_SECRET}", primary: true}]
services:
  s:
    endpoints:
      profile:
        method: GET
        path: /profile
        mode: %(mode)s
        rule:
          rule: and
          clauses:
            - {rule: match, eval: "==", type: string, f1: args.auth.role, f2: admin}
            - {rule: remove, fields: [res.secret]}
      trial: {method: GET, path: /trial, rule: {rule: deny}, mode: %(mode)s}
"""


@pytest.mark.parametrize(
    "rule",
    [
        "{rule: remove, fields: [res.secret]}",
        "{rule: force, field: args.query.user, value: args.auth.id}",
        "{rule: hash, fields: [args.params.password]}",
        "{rule: or, clauses: [{rule: deny}, {rule: encrypt, fields: [args.headers.x-card]}]}",
    ],
)
def test_dry_run_on_an_endpoint_with_field_rules_is_a_config_error(rule):
    text = MASKED.replace("{rule: remove, fields: [res.secret]}", rule) % {"mode": "dry-run"}
    with pytest.raises(ConfigError) as exc:
        Authorizer(load_config_text(text, {"T_SECRET": SECRET}))
    assert any(
        e.startswith("services.s.endpoints.profile.mode:") and "field rules" in e
        for e in exc.value.errors
    ), exc.value.errors


def test_the_dry_run_flag_leaves_endpoints_with_field_rules_enforcing(caplog):
    config = load_config_text(MASKED % {"mode": "enforce"}, {"T_SECRET": SECRET})
    authorizer = Authorizer(config, dry_run=True)
    assert "services.s.endpoints.profile: has field rules" in caplog.text
    denied = check(authorizer, "GET", "/profile", token(id="u1", role="user"))
    assert not denied.allowed and denied.status == 403 and not denied.dry_run
    admin = check(authorizer, "GET", "/profile", token(id="a1", role="admin"))
    assert admin.allowed and admin.plan["response"] == [{"op": "remove", "path": ["secret"]}]
    trial = check(authorizer, "GET", "/trial", token(id="u1"))  # no field rules: dry-run
    assert trial.allowed and trial.dry_run


# --- one interpretation: what the rules judge is what the upstream reads ------------------

ONE_READING = """
project: demo
auth:
  secrets: [{alg: HS256, secret: "${T_SECRET}", primary: true}]
services:
  s:
    endpoints:
      body:
        method: POST
        path: /body
        rule:
          rule: and
          clauses:
            - {rule: match, eval: "<=", type: number, f1: args.params.amount, f2: 100}
            - {rule: hash, fields: [args.params.password]}
      forced:
        method: GET
        path: /forced
        rule: {rule: force, field: args.query.owner, value: args.auth.id}
      header:
        method: GET
        path: /header
        rule: {rule: force, field: args.headers.x-user-id, value: args.auth.id}
      item: {method: GET, path: /item, rule: {rule: authenticated}}
"""


@pytest.fixture(scope="module")
def one_reading():
    return Authorizer(load_config_text(ONE_READING, {"T_SECRET": SECRET}))


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'[{"amount": 5000, "password": "clear"}]', "application/json", 400),  # finding 1
        (b'"x"', "application/json", 400),
        (b'{"amount": 5, "password": "p"}', "application/x-www-form-urlencoded", 415),
        (b'{"amount": 5, "password": "p"}', "text/plain", 415),
        (b'{"amount": 5, "AMOUNT": 5000}', "application/json", 400),  # finding 2
        (b'{"amount": 5, "x": {"a": 1, "A": 2}}', "application/json", 400),
    ],
)
def test_a_body_the_upstream_could_read_another_way_is_denied(
    one_reading, body, content_type, status
):
    d = check(one_reading, "POST", "/body?amount=5", token(id="u1"), body=body,
              **{"content-type": content_type})  # fmt: skip
    assert (d.allowed, d.status) == (False, status), d.reason


def test_a_json_object_body_is_judged_and_planned(one_reading):
    d = check(one_reading, "POST", "/body", token(id="u1"), body=b'{"amount": 5, "password": "p"}')
    assert d.allowed and d.plan["request"], d.reason


@pytest.mark.parametrize("query", ["own%65r=admin", "Owner=admin", "owner=u1&OWNER=admin"])
def test_another_spelling_of_a_forced_query_name_is_denied(one_reading, query):  # finding 3
    d = check(one_reading, "GET", f"/forced?{query}", token(id="u1"))
    assert (d.allowed, d.status) == (False, 400), d.reason


def test_the_forced_query_name_itself_is_overwritten(one_reading):
    d = check(one_reading, "GET", "/forced?owner=admin", token(id="u1"))
    assert d.allowed and d.query_parameters_to_set == [("owner", "u1")]


def test_an_underscore_spelling_of_a_forced_header_is_denied(one_reading):  # finding 4
    d = check(one_reading, "GET", "/header", token(id="u1"), x_user_id="admin")
    assert (d.allowed, d.status) == (False, 400), d.reason


@pytest.mark.parametrize(
    ("target", "headers"),
    [("/item", {"x-http-method-override": "DELETE"}), ("/item?_method=DELETE", {})],
)
def test_a_method_override_is_denied(one_reading, target, headers):
    d = check(one_reading, "GET", target, token(id="u1"), **headers)
    assert (d.allowed, d.status) == (False, 400), d.reason


def test_token_failures_never_grow_metric_labels():
    """Label values come from a fixed set of failure kinds, never from the token's text."""
    from authz.errors import TOKEN_FAILURE_KINDS
    from authz.observability.metrics import Metrics

    metrics = Metrics()
    authz = Authorizer(load_config_text(CONFIG, {"T_SECRET": SECRET}), metrics=metrics)
    for i in range(60):
        alg = f"XX{i}" + "A" * 2000
        bad = ".".join(_b64(part) for part in ({"alg": alg}, {"id": "u1"}, "sig"))
        assert asyncio.run(authz.check(_get(f"Bearer {bad}"))).status == 401
    assert asyncio.run(authz.check(_get("Bearer a.b.c"))).status == 401
    text = metrics.render().decode()
    series = [
        line
        for line in text.splitlines()
        if line.startswith("authz_token_verification_failures_total{")
    ]
    kinds = {line.split('reason="', 1)[1].split('"', 1)[0] for line in series}
    assert kinds and kinds <= TOKEN_FAILURE_KINDS, kinds
    assert "AAAA" not in text and len(text) < 64_000


def _b64(part: dict | str) -> str:
    import base64

    raw = part.encode() if isinstance(part, str) else json.dumps(part).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _get(authorization: str, target: str = "/v1/orders", **headers: str) -> Request:
    return Request.from_target(
        "GET", target, headers={"authorization": authorization, **headers}, context={}
    )


def test_a_configured_secret_literal_never_reaches_the_reason():
    config = CONFIG.replace(
        "      health: {method: GET",
        "      internal:\n"
        "        method: GET\n"
        "        path: /internal\n"
        '        rule: {rule: match, eval: "==", type: string, f1: args.headers.x-internal-key,'
        ' f2: "${INTERNAL_KEY}"}\n'
        "      health: {method: GET",
    )
    env = {"T_SECRET": SECRET, "INTERNAL_KEY": "sekrit-from-the-environment"}
    authz = Authorizer(load_config_text(config, env))
    req = Request.from_target(
        "GET",
        "/internal",
        headers={"x-internal-key": "a-guess", "authorization": f"Bearer {token(id='u1')}"},
        context={},
    )
    d = asyncio.run(authz.check(req, trace=True))
    assert (d.allowed, d.status) == (False, 403)
    logged = json.dumps(d.to_json(), default=str)
    assert "sekrit-from-the-environment" not in logged and "a-guess" not in logged
    assert "args.headers.x-internal-key == <literal>" in d.reason
    right = Request.from_target(
        "GET",
        "/internal",
        headers={
            "x-internal-key": env["INTERNAL_KEY"],
            "authorization": f"Bearer {token(id='u1')}",
        },
        context={},
    )
    assert asyncio.run(authz.check(right)).allowed
