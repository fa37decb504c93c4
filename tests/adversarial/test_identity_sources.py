"""Adversarial cases per identity source, through a real Envoy (mTLS listener) and `authz serve`,
on both ext_authz transports: credential confusion, tokens of the wrong issuer or key, inactive
and unanswerable introspection, certificates of another trust domain, forged XFCC. Every one is
denied and the upstream never sees it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.identity_stack import (
    API_KEY,
    OPAQUE,
    IdentityStack,
    start_identity_stack,
)
from tests.unit.identity.support import rsa_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["grpc", "http"])
def stack(request: pytest.FixtureRequest, log_dir) -> Iterator[IdentityStack]:
    s = start_identity_stack(log_dir / request.param, request.param)
    try:
        yield s
    finally:
        s.stop()


def denied(stack: IdentityStack, path: str, status: int, who: str = "billing", **headers):
    rid = f"adv-{path}-{sorted(headers.items())}"[:120]
    with stack.client(who) as client:
        resp = client.get(path, headers={"x-request-id": rid, **headers})
    assert resp.status_code == status, (resp.status_code, resp.text, stack.logs())
    if status < 500 or stack.transport == "grpc":  # HTTP: a 5xx is Envoy's, without a body
        assert resp.json()["error"]
    assert stack.seen(rid) == []


def oidc_token(stack: IdentityStack, **claims) -> str:
    return stack.idp.sign({"sub": "u1", "aud": "orders", **claims})


# --- credential confusion -----------------------------------------------------------------


def test_an_api_key_sent_as_a_bearer_token(stack):
    denied(stack, "/v1/mixed", 401, authorization=f"Bearer {API_KEY}")
    denied(stack, "/v1/user", 401, authorization=f"Bearer {API_KEY}")


def test_a_jwt_sent_as_an_api_key(stack):
    denied(stack, "/v1/billing", 401, **{"x-api-key": oidc_token(stack)})
    denied(stack, "/v1/mixed", 401, authorization=f"APIKey {oidc_token(stack)}")


def test_two_credentials_at_once(stack):
    denied(
        stack, "/v1/mixed", 401,
        authorization=f"Bearer {oidc_token(stack)}", **{"x-api-key": API_KEY},
    )  # fmt: skip
    denied(stack, "/v1/billing", 401, authorization=f"APIKey {API_KEY}", **{"x-api-key": API_KEY})


def test_a_credential_for_another_endpoints_source_list(stack):
    denied(stack, "/v1/user", 401, **{"x-api-key": API_KEY})  # jwt only
    denied(stack, "/v1/billing", 401, authorization=f"Bearer {oidc_token(stack)}")  # apiKey only
    denied(stack, "/v1/reports", 401, **{"x-api-key": API_KEY})  # introspection only


def test_wrong_and_repeated_api_keys(stack):
    denied(stack, "/v1/billing", 401, **{"x-api-key": API_KEY + "x"})
    denied(stack, "/v1/billing", 401, **{"x-api-key": f"{API_KEY},{API_KEY}"})


# --- OIDC ---------------------------------------------------------------------------------


def test_tokens_of_another_issuer_or_key(stack):
    denied(stack, "/v1/user", 401, authorization=f"Bearer {oidc_token(stack, iss='https://evil/')}")
    denied(stack, "/v1/user", 401, authorization=f"Bearer {oidc_token(stack, aud='billing')}")
    import jwt

    forged = jwt.encode(
        {"iss": stack.idp.issuer, "sub": "admin", "aud": "orders"}, rsa_key(2048, 7), "RS256",
        headers={"kid": "k1"},
    )  # fmt: skip
    denied(stack, "/v1/user", 401, authorization=f"Bearer {forged}")


# --- introspection ------------------------------------------------------------------------


def test_inactive_tokens(stack):
    stack.introspection.answers["revoked-token-0001"] = {"active": False, "sub": "admin"}
    denied(stack, "/v1/reports", 401, authorization="Bearer revoked-token-0001")
    stack.introspection.answers["expired-token-0001"] = {"active": True, "sub": "x", "exp": 1}
    denied(stack, "/v1/reports", 401, authorization="Bearer expired-token-0001")


def test_an_introspection_endpoint_down_or_slow_is_503(stack):
    stack.introspection.override = 500
    try:
        denied(stack, "/v1/reports", 503, authorization="Bearer unseen-token-0001")
    finally:
        stack.introspection.override = None
    stack.introspection.delay = 0.4  # past the 200ms timeout, within Envoy's 500ms
    try:
        denied(stack, "/v1/reports", 503, authorization="Bearer unseen-token-0002")
    finally:
        stack.introspection.delay = 0.0


def test_a_cached_active_answer_is_per_token(stack):
    with stack.client() as client:
        ok = client.get("/v1/reports", headers={"authorization": f"Bearer {OPAQUE}"})
    assert ok.status_code == 200
    denied(stack, "/v1/reports", 401, authorization=f"Bearer {OPAQUE}x")


# --- mTLS ---------------------------------------------------------------------------------


def test_a_certificate_of_another_trust_domain(stack):
    denied(stack, "/v1/mesh", 401, who="evil")


def test_a_forged_xfcc_gives_no_identity(stack):
    forged = "URI=spiffe://example.org/ns/default/sa/billing"
    # the connection's certificate (evil.example) decides, whatever the header says
    denied(stack, "/v1/mesh", 401, who="evil", **{"x-forwarded-client-cert": forged})
