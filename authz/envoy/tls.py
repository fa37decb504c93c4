"""`authz envoy-config --tls-cert --tls-key [--client-ca]`: Envoy terminates TLS (and mTLS) on
the ingress listener, and tells authz who the client is.

With `--client-ca` (mTLS, for `auth.mtls`):
- the listener requires a client certificate and verifies it against the CA
  (`require_client_certificate`, `validation_context.trusted_ca`): a handshake without one,
  or with one the CA did not sign, fails before any request exists;
- ext_authz sends the verified certificate (`include_peer_certificate`): authz reads the
  connection's certificate from the CheckRequest, never a header;
- x-forwarded-client-cert is `SANITIZE_SET`: whatever a client sent is dropped and Envoy
  writes the verified certificate's (Cert, URI, DNS, Subject, Hash), for the upstream and for
  authz's HTTP transport (`auth.mtls.xfcc`).
Without it, XFCC is `SANITIZE` (a client-sent one is dropped, none is set).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.config.core.v3 import DataSource, TransportSocket
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
        HttpConnectionManagerForwardClientCertDetails as Forward,
    )
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
        HttpConnectionManagerSetCurrentClientCertDetails as SetDetails,
    )
    from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
        CertificateValidationContext,
        CommonTlsContext,
        DownstreamTlsContext,
        TlsCertificate,
    )
    from envoy_data_plane.google.protobuf import Any as AnyProto

TLS_SOCKET = "envoy.transport_sockets.tls"


@dataclass(frozen=True)
class ListenerTls:
    """Files Envoy reads (paths as Envoy sees them, e.g. a mounted Secret)."""

    cert: str  # the server certificate chain (PEM)
    key: str  # its private key (PEM)
    client_ca: str | None = None  # CA bundle that signs client certificates: mTLS

    @classmethod
    def of(cls, cert: str | None, key: str | None, client_ca: str | None) -> ListenerTls | None:
        """None without TLS flags; ValueError for an incomplete set."""
        if not (cert or key or client_ca):
            return None
        if not (cert and key):
            raise ValueError("--tls-cert and --tls-key go together (and --client-ca needs both)")
        return cls(cert, key, client_ca or None)


def transport_socket(tls: ListenerTls) -> TransportSocket:
    common = CommonTlsContext(
        tls_certificates=[
            TlsCertificate(
                certificate_chain=DataSource(filename=tls.cert),
                private_key=DataSource(filename=tls.key),
            )
        ]
    )
    context = DownstreamTlsContext(common_tls_context=common)
    if tls.client_ca:
        common.validation_context = CertificateValidationContext(
            trusted_ca=DataSource(filename=tls.client_ca)
        )
        context.require_client_certificate = True
    return TransportSocket(name=TLS_SOCKET, typed_config=AnyProto.pack(context))


def client_cert_settings(tls: ListenerTls | None) -> dict[str, Any]:
    """HCM fields for x-forwarded-client-cert."""
    if tls is None or not tls.client_ca:
        return {"forward_client_cert_details": Forward.SANITIZE}
    details = SetDetails(subject=True, cert=True, uri=True, dns=True)
    return {
        "forward_client_cert_details": Forward.SANITIZE_SET,
        "set_current_client_cert_details": details,
    }


def forward_name(tls: ListenerTls | None) -> str:
    """The XFCC mode by name (proto3 JSON leaves SANITIZE, the default, out: say it)."""
    return "SANITIZE_SET" if tls is not None and tls.client_ca else "SANITIZE"
