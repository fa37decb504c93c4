"""mTLS claims from the certificate Envoy verified (and from what Envoy reports without it),
SPIFFE IDs and trust domains, XFCC only where the transport reports no connection."""

from __future__ import annotations

from functools import cache
from urllib.parse import quote

import pytest
from pydantic import ValidationError

from authz.config.auth import MtlsSettings
from authz.errors import TokenError
from authz.identity.mtls import MtlsSource, certificate_claims, peer_claims
from authz.peer import NO_PEER, Peer
from tests.unit.identity.certs import Issued, issue, make_ca

SPIFFE = "spiffe://example.org/ns/default/sa/billing"


@cache
def client() -> Issued:
    return issue(make_ca(), "billing", uris=(SPIFFE,), dns=("billing.default.svc",))


def source(**settings) -> MtlsSource:
    return MtlsSource(MtlsSettings.model_validate(settings))


def test_claims_of_a_certificate_as_envoy_sends_it():
    cert = client()
    claims = certificate_claims(quote(cert.pem, safe=""))  # Envoy URL-encodes the PEM
    assert claims == certificate_claims(cert.pem)  # plain PEM (authz check) reads the same
    claims = peer_claims(Peer(SPIFFE, quote(cert.pem, safe="")))
    assert claims == {
        "id": SPIFFE,
        "spiffe": SPIFFE,
        "trustDomain": "example.org",
        "uris": [SPIFFE],
        "dns": ["billing.default.svc"],
        "subject": "CN=billing,O=Example",
        "issuer": "CN=test CA,O=Example",
        "fingerprint": cert.fingerprint,
    }


def test_id_without_a_spiffe_id_is_the_first_uri_then_the_cn():
    ca = make_ca()
    web = issue(ca, "web", uris=("https://web.example/",))
    assert peer_claims(Peer("", web.pem))["id"] == "https://web.example/"
    assert "spiffe" not in peer_claims(Peer("", web.pem))
    plain = issue(ca, "reports")
    assert peer_claims(Peer("", plain.pem))["id"] == "reports"


def test_principal_only_when_envoy_sent_no_certificate():
    assert peer_claims(Peer(SPIFFE)) == {
        "id": SPIFFE, "spiffe": SPIFFE, "trustDomain": "example.org", "uris": [SPIFFE],
        "dns": [],
    }  # fmt: skip
    assert peer_claims(Peer("CN=reports,O=Example")) == {
        "id": "reports", "subject": "CN=reports,O=Example", "uris": [], "dns": [],
    }  # fmt: skip


def test_two_spiffe_ids_are_refused():
    cert = issue(make_ca(), "x", uris=(SPIFFE, "spiffe://example.org/other"))
    with pytest.raises(TokenError, match="several SPIFFE"):
        source().claims(Peer("", cert.pem))


def test_trust_domains():
    strict = source(trustDomains=["example.org"])
    assert strict.claims(Peer("", client().pem))["spiffe"] == SPIFFE
    other = issue(make_ca(), "x", uris=("spiffe://evil.example/ns/default/sa/billing",))
    with pytest.raises(TokenError, match="trust domain"):
        strict.claims(Peer("", other.pem))
    with pytest.raises(TokenError, match="no SPIFFE ID"):
        strict.claims(Peer("", issue(make_ca(), "plain").pem))
    with pytest.raises(ValidationError):
        MtlsSettings.model_validate({"trustDomains": ["Example.org/x"]})


def test_claims_are_cached_per_peer_and_copied():
    src = source()
    first = src.claims(Peer("", client().pem))
    first["id"] = "admin"
    assert src.claims(Peer("", client().pem))["id"] == SPIFFE
    other = issue(make_ca(), "reports")
    assert src.claims(Peer("", other.pem))["id"] == "reports"  # the key is the whole peer


def test_garbage_certificate_is_401():
    with pytest.raises(TokenError, match="unreadable"):
        source().claims(Peer("", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"))


def xfcc_of(cert: Issued) -> str:
    """The XFCC element Envoy's SANITIZE_SET writes (Hash, Cert, Subject, URI, DNS)."""
    return (
        f'By=spiffe://example.org/envoy;Hash={cert.fingerprint};Cert="{quote(cert.pem, safe="")}";'
        f'Subject="CN=billing,O=Example";URI={SPIFFE};DNS=billing.default.svc'
    )


def test_xfcc_is_read_only_when_configured_and_the_transport_has_no_connection():
    headers = {"x-forwarded-client-cert": xfcc_of(client())}
    assert source().peer(None, headers) is None  # xfcc off: never read
    on = source(xfcc=True)
    assert on.peer(NO_PEER, headers) is None  # gRPC reported a connection without a cert
    verified = on.peer(None, headers)
    assert verified is not None
    assert on.claims(verified) == source().claims(Peer(SPIFFE, client().pem))
    real = Peer(SPIFFE, client().pem)
    assert on.peer(real, {"x-forwarded-client-cert": "URI=spiffe://evil"}) is real


def test_bad_xfcc_is_401():
    with pytest.raises(TokenError, match="x-forwarded-client-cert"):
        source(xfcc=True).peer(None, {"x-forwarded-client-cert": 'URI="open'})
