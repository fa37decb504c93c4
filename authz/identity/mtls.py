"""mTLS identities (`auth.mtls`): the client certificate Envoy verified, as `args.auth` claims.

Envoy terminates mTLS and verifies the chain; authz never sees an unverified certificate on
the gRPC transport (Envoy reports only the connection's own). The claims:

    id           the SPIFFE ID, else the first URI SAN, else the subject's CN, else the principal
    spiffe       the certificate's SPIFFE ID (its one spiffe:// URI SAN), when it has one
    trustDomain  that ID's trust domain
    uris, dns    the URI and DNS SANs
    subject      the subject, RFC 4514 (`CN=billing,O=Example`)
    issuer       the issuer, RFC 4514 (only when the certificate itself was sent)
    fingerprint  SHA-256 of the certificate's DER, lower-case hex (as Envoy's XFCC `Hash`)

Parsing a certificate costs ~50 µs, so claims are cached per Peer (every field of it is the
key), bounded; the cache belongs to one config version.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from authz.config.auth import MtlsSettings
from authz.errors import TokenError
from authz.peer import XFCC_HEADER, Peer, XfccError, peer_from_xfcc

CACHE_SIZE = 1024
_SPIFFE = "spiffe://"


def spiffe_of(uris: tuple[str, ...] | list[str]) -> str | None:
    """The SPIFFE ID among the URI SANs; TokenError when there are several (SPIFFE X509-SVID
    §2: exactly one)."""
    ids = [u for u in uris if u.lower().startswith(_SPIFFE)]
    if len(ids) > 1:
        raise TokenError("client certificate has several SPIFFE IDs", "untrusted")
    return ids[0] if ids else None


def trust_domain(spiffe: str) -> str:
    return spiffe[len(_SPIFFE) :].partition("/")[0].lower()


def certificate_claims(pem: str) -> dict[str, Any]:
    """Claims from one PEM certificate (URL-encoded as Envoy sends it, or plain)."""
    try:
        cert = x509.load_pem_x509_certificate(unquote(pem).encode())
    except ValueError:
        raise TokenError("client certificate unreadable", "malformed") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
        dns = [str(d) for d in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        uris, dns = [], []
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return {
        "uris": uris,
        "dns": dns,
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "fingerprint": hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
        "cn": str(cns[0].value) if cns else None,
    }


def peer_claims(peer: Peer) -> dict[str, Any]:
    """The claims of a verified peer, from its certificate when Envoy sent it."""
    if peer.certificate:
        found = certificate_claims(peer.certificate)
    else:  # the principal (gRPC without include_peer_certificate) or XFCC's fields
        uris = list(peer.uris) or ([peer.principal] if "://" in peer.principal else [])
        subject = peer.subject or ("" if uris else peer.principal)  # Envoy: URI SAN, else subject
        found = {"uris": uris, "dns": list(peer.dns), "subject": subject or None}
        if peer.fingerprint:
            found["fingerprint"] = peer.fingerprint
        found["cn"] = _cn(subject)
    spiffe = spiffe_of(found["uris"])
    cn = found.pop("cn")
    claims: dict[str, Any] = {
        "id": spiffe or next(iter(found["uris"]), None) or cn or peer.principal
    }
    if spiffe is not None:
        claims["spiffe"] = spiffe
        claims["trustDomain"] = trust_domain(spiffe)
    claims.update((k, v) for k, v in found.items() if v is not None)
    return claims


def _cn(subject: str) -> str | None:
    for part in subject.split(","):
        name, eq, value = part.strip().partition("=")
        if eq and name.upper() == "CN":
            return value
    return subject or None


class MtlsSource:
    def __init__(self, settings: MtlsSettings):
        self.trust_domains = (
            None if settings.trustDomains is None else frozenset(settings.trustDomains)
        )
        self.xfcc = settings.xfcc
        self._cache: OrderedDict[Peer, dict[str, Any]] = OrderedDict()

    def peer(self, connection: Peer | None, headers: Any) -> Peer | None:
        """The peer to authenticate: the transport's connection, else (when configured and the
        transport reports none) XFCC; None without a client certificate."""
        if connection is None and self.xfcc and XFCC_HEADER in headers:
            try:
                connection = peer_from_xfcc(headers[XFCC_HEADER])
            except XfccError as exc:
                raise TokenError(f"x-forwarded-client-cert: {exc}", "malformed") from None
        return connection if connection else None

    def claims(self, peer: Peer) -> dict[str, Any]:
        """args.auth for a peer (a copy); TokenError when it is not accepted."""
        claims = self._cache.get(peer)
        if claims is None:
            claims = peer_claims(peer)
            self._check(claims)
            self._cache[peer] = claims
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(peer)
        return dict(claims)

    def _check(self, claims: dict[str, Any]) -> None:
        if self.trust_domains is None:
            return
        domain = claims.get("trustDomain")
        if domain is None:
            raise TokenError("client certificate has no SPIFFE ID", "untrusted")
        if domain not in self.trust_domains:
            raise TokenError("client certificate's SPIFFE trust domain not accepted", "untrusted")
