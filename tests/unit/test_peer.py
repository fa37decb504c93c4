"""Reading Envoy's x-forwarded-client-cert into a Peer: quoting, several values, and what
SANITIZE_SET never writes (several elements, repeated single fields)."""

from __future__ import annotations

import pytest

from authz.peer import MAX_XFCC_BYTES, NO_PEER, Peer, XfccError, peer_from_xfcc


def test_one_element_with_quoted_commas_and_semicolons():
    peer = peer_from_xfcc(
        'By=spiffe://td/envoy;Hash=ABCDEF;Subject="CN=a,O=b\\"c;d";'
        "URI=spiffe://td/ns/x/sa/y;DNS=a.example;DNS=b.example"
    )
    assert peer == Peer(
        principal="spiffe://td/ns/x/sa/y",
        uris=("spiffe://td/ns/x/sa/y",),
        dns=("a.example", "b.example"),
        subject='CN=a,O=b"c;d',
        fingerprint="abcdef",
    )


def test_subject_is_the_principal_without_a_uri():
    assert peer_from_xfcc('Subject="CN=reports"').principal == "CN=reports"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("URI=spiffe://a,URI=spiffe://b", "2 elements"),  # a client-sent chain was kept
        ("Hash=a;Hash=b", "given twice"),
        ('URI="spiffe://a', "unterminated"),
        ("URI", "without '='"),
        ("URI=" + "a" * MAX_XFCC_BYTES, "too large"),
    ],
)
def test_what_sanitize_set_never_writes(value, why):
    with pytest.raises(XfccError, match=why):
        peer_from_xfcc(value)


def test_no_peer_is_false_and_a_peer_true():
    assert not NO_PEER and not Peer()
    assert Peer(principal="x") and Peer(certificate="pem")
