"""Which source authenticates a Check: endpoint `identity:` lists, args.identity and args.auth
per source, credential confusion, config errors; all through Authorizer.check."""

from __future__ import annotations

import time

import jwt
import pytest

from authz.authorizer import Authorizer
from authz.config.load import load_config_text
from authz.errors import ConfigError
from authz.identity.apikeys import digest
from authz.peer import NO_PEER, Peer
from authz.request import Request
from tests.unit.identity.certs import issue, make_ca
from tests.unit.identity.providers import IntrospectionServer

SECRET = "0123456789abcdef0123456789abcdef-test"
KEY = "azk_billing-key-0123456789abcdef"
OPAQUE = "opaque-token-0123456789"
SPIFFE = "spiffe://example.org/ns/default/sa/billing"
WHO = {"rule": "force", "field": "args.headers.x-who", "value": "args.identity"}
CONFIG = """
project: demo
auth:
  secrets: [{{alg: HS256, secret: "{secret}", primary: true}}]
  apiKeys:
    keys: [{{sha256: {digest}, claims: {{id: billing, role: service}}}}]
  mtls: {{trustDomains: [example.org]}}
  introspection: [{{url: "{url}", clientId: authz, clientSecret: introspection-secret}}]
services:
  api:
    endpoints:
      jwt:   {{method: GET, path: /jwt, rule: {who}}}
      keys:  {{method: GET, path: /keys, identity: [apiKey], rule: {who}}}
      mixed: {{method: GET, path: /mixed, identity: [jwt, apiKey], rule: {who}}}
      mesh:  {{method: GET, path: /mesh, identity: [mtls, jwt], rule: {who}}}
      opaque: {{method: GET, path: /opaque, identity: [introspection], rule: {who}}}
      tokens: {{method: GET, path: /tokens, identity: [jwt, introspection], rule: {who}}}
      all:   {{method: GET, path: /all, identity: [jwt, apiKey, mtls, introspection], rule: {who}}}
      open:  {{method: GET, path: /open, identity: [apiKey], rule: {{rule: allow}}}}
"""


def jwt_token(**claims) -> str:
    return jwt.encode({"exp": int(time.time()) + 600, "id": "u1", **claims}, SECRET, "HS256")


@pytest.fixture(scope="module")
def idp():
    with IntrospectionServer() as server:
        server.answers[OPAQUE] = {"active": True, "sub": "svc-7", "client_id": "reports"}
        yield server


@pytest.fixture
async def authz(idp):
    text = CONFIG.format(secret=SECRET, digest=digest(KEY), url=idp.url, who=WHO)
    authorizer = Authorizer(load_config_text(text, {}))
    await authorizer.runtime.start()
    yield authorizer
    await authorizer.runtime.close()


@pytest.fixture(scope="module")
def client_cert() -> str:
    return issue(make_ca(), "billing", uris=(SPIFFE,)).pem


async def check(authz, path: str, headers=None, peer=NO_PEER):
    req = Request.from_target("GET", path, headers=dict(headers or {}), peer=peer)
    return await authz.check(req, trace=True)


def who(decision) -> str | None:
    return dict(decision.headers).get("x-who")


async def test_default_is_jwt_only(authz):
    d = await check(authz, "/jwt", {"authorization": f"Bearer {jwt_token()}"})
    assert d.allowed and who(d) == "jwt" and d.auth["id"] == "u1" and d.identity == "jwt"
    for headers in ({"x-api-key": KEY}, {"authorization": f"APIKey {KEY}"}, {}):
        d = await check(authz, "/jwt", headers)
        assert d.status == 401, headers  # a key is nothing here


async def test_one_request_per_source(authz, client_cert):
    d = await check(authz, "/all", {"authorization": f"Bearer {jwt_token()}"})
    assert (d.identity, who(d), d.auth["id"]) == ("jwt", "jwt", "u1")
    d = await check(authz, "/all", {"x-api-key": KEY})
    assert (d.identity, d.auth) == ("apiKey", {"id": "billing", "role": "service"})
    d = await check(authz, "/all", {"authorization": f"APIKey {KEY}"})
    assert d.identity == "apiKey" and who(d) == "apiKey"
    d = await check(authz, "/all", peer=Peer(SPIFFE, client_cert))
    assert (d.identity, d.auth["spiffe"], d.auth["id"]) == ("mtls", SPIFFE, SPIFFE)
    d = await check(authz, "/all", {"authorization": f"Bearer {OPAQUE}"})
    assert (d.identity, d.auth["sub"]) == ("introspection", "svc-7")


async def test_api_key_endpoint(authz):
    assert (await check(authz, "/keys", {"x-api-key": KEY})).allowed
    d = await check(authz, "/keys", {"x-api-key": "azk_wrong"})
    assert d.status == 401 and d.reason == "token: unknown API key"
    # a JWT is not read on an apiKey-only endpoint: no credential here
    d = await check(authz, "/keys", {"authorization": f"Bearer {jwt_token()}"})
    assert d.status == 401 and d.reason == "no token"
    # `allow` needs no credential (a bad key is not even read)
    assert (await check(authz, "/open", {"x-api-key": "nope"})).allowed


@pytest.mark.parametrize(
    ("path", "headers", "reason"),
    [
        # an API key sent as a Bearer token: not a JWT, and introspection is not listed
        ("/mixed", {"authorization": f"Bearer {KEY}"}, "token: malformed token"),
        # a JWT sent as an API key
        ("/mixed", {"x-api-key": jwt_token()}, "token: unknown API key"),
        # two credentials at once
        ("/mixed", {"authorization": f"Bearer {jwt_token()}", "x-api-key": KEY},
         "token: both a token and an API key were sent"),
        ("/all", {"authorization": f"APIKey {KEY}", "x-api-key": KEY},
         "token: API key given twice"),
        # an invalid JWT never falls through to the (valid) API key or introspection
        ("/all", {"authorization": "Bearer a.b.c"}, "token: malformed token"),
    ],
)  # fmt: skip
async def test_credential_confusion_is_401(authz, idp, path, headers, reason):
    before = len(idp.forms)
    d = await check(authz, path, headers)
    assert (d.allowed, d.status) == (False, 401) and d.reason.startswith(reason), d.reason
    assert len(idp.forms) == before  # nothing sent to the introspection endpoint


async def test_bearer_shape_decides_between_jwt_and_introspection(authz, idp):
    d = await check(authz, "/tokens", {"authorization": f"Bearer {OPAQUE}"})
    assert d.identity == "introspection"
    d = await check(authz, "/tokens", {"authorization": f"Bearer {jwt_token()}"})
    assert d.identity == "jwt"
    # an introspection-only endpoint takes every bearer token to the provider
    before = len(idp.forms)
    d = await check(authz, "/opaque", {"authorization": f"Bearer {jwt_token()}"})
    assert d.status == 401 and d.reason == "token: token is not active"
    assert len(idp.forms) == before + 1


async def test_inactive_and_provider_down(authz, idp):
    d = await check(authz, "/opaque", {"authorization": "Bearer revoked-token-000"})
    assert (d.status, d.reason) == (401, "token: token is not active")
    idp.override = 500
    try:
        d = await check(authz, "/opaque", {"authorization": "Bearer another-token-000"})
        assert d.status == 503 and d.message == "a service needed for authorization is unavailable"
    finally:
        idp.override = None


async def test_mtls_only_when_no_token_or_key(authz, client_cert):
    peer = Peer(SPIFFE, client_cert)
    d = await check(authz, "/mesh", {"authorization": f"Bearer {jwt_token()}"}, peer)
    assert d.identity == "jwt"  # a workload calling on a user's behalf is the user
    d = await check(authz, "/mesh", {"authorization": "Bearer x.y.z"}, peer)
    assert d.status == 401  # a bad token is not rescued by the certificate
    assert (await check(authz, "/mesh", {}, peer)).identity == "mtls"
    assert (await check(authz, "/mesh", {})).status == 401  # no certificate
    other = issue(make_ca(), "x", uris=("spiffe://evil.example/sa/x",)).pem
    d = await check(authz, "/mesh", {}, Peer("", other))
    assert d.status == 401 and "trust domain" in d.reason


async def test_xfcc_never_stands_in_for_the_grpc_connection(authz):
    forged = {"x-forwarded-client-cert": f"URI={SPIFFE}"}
    assert (await check(authz, "/mesh", forged)).status == 401  # NO_PEER: gRPC said no cert
    assert (await check(authz, "/mesh", forged, None)).status == 401  # xfcc is off


@pytest.mark.parametrize(
    ("identity", "needs"),
    [("[apiKey]", "auth.apiKeys"), ("[mtls]", "auth.mtls"),
     ("[introspection]", "auth.introspection")],
)  # fmt: skip
def test_a_listed_source_must_be_configured(identity, needs):
    text = f"""
project: demo
auth: {{secrets: [{{alg: HS256, secret: "{SECRET}"}}]}}
services:
  s: {{endpoints: {{e: {{path: /e, identity: {identity}, rule: {{rule: authenticated}}}}}}}}
"""
    with pytest.raises(ConfigError, match=f"services.s.endpoints.e.identity: .* needs {needs}"):
        Authorizer(load_config_text(text, {}))


def test_unknown_or_empty_identity_lists_are_config_errors():
    for identity in ("[ldap]", "[]", "jwt"):
        text = f"""
project: demo
auth: {{secrets: [{{alg: HS256, secret: "{SECRET}"}}]}}
services:
  s: {{endpoints: {{e: {{path: /e, identity: {identity}, rule: {{rule: authenticated}}}}}}}}
"""
        with pytest.raises(ConfigError, match="identity"):
            load_config_text(text, {})
