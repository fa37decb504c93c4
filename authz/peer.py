"""The client's TLS connection as Envoy reports it: `Peer`, and Envoy's
`x-forwarded-client-cert` (XFCC) header read into one.

On the gRPC transport the CheckRequest carries the connection itself
(`attributes.source.principal`, and `.certificate` with `include_peer_certificate`): decode
always sets `Request.peer` there, so a header can never stand in for it. XFCC is read only where
the transport reports no connection (Envoy's HTTP ext_authz) and only when `auth.mtls.xfcc` says
Envoy sets it (forward_client_cert_details: SANITIZE_SET, which replaces whatever a client sent).
"""

from __future__ import annotations

from dataclasses import dataclass

XFCC_HEADER = "x-forwarded-client-cert"
MAX_XFCC_BYTES = 32 << 10  # one certificate, URL-encoded, with its names


@dataclass(frozen=True, slots=True)
class Peer:
    """`principal`: the URI SAN (else subject) Envoy took from the verified certificate;
    `certificate`: that certificate as PEM, URL-encoded as Envoy sends it (plain PEM is read
    too); the other fields come from XFCC when it has no `Cert`."""

    principal: str = ""
    certificate: str = ""
    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    subject: str = ""
    fingerprint: str = ""

    def __bool__(self) -> bool:
        return bool(self.principal or self.certificate or self.uris or self.subject)


NO_PEER = Peer()  # a connection without a client certificate


class XfccError(ValueError):
    """The header is not what Envoy's SANITIZE_SET writes."""


def split_quoted(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes (`\\"` escapes a quote inside them)."""
    parts, buf, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            buf.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            buf.append(ch)
            escaped = True
        elif ch == '"':
            buf.append(ch)
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quoted:
        raise XfccError("unterminated quote")
    parts.append("".join(buf))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def peer_from_xfcc(value: str) -> Peer:
    """The one element SANITIZE_SET writes, as a Peer; XfccError for anything else (several
    elements mean a client-sent chain was kept: FORWARD_ONLY or APPEND_FORWARD)."""
    if len(value) > MAX_XFCC_BYTES:
        raise XfccError("header too large")
    elements = split_quoted(value, ",")
    if len(elements) != 1:
        raise XfccError(f"{len(elements)} elements; Envoy's SANITIZE_SET writes one")
    fields: dict[str, list[str]] = {}
    for pair in split_quoted(elements[0], ";"):
        key, eq, raw = pair.partition("=")
        if not eq:
            raise XfccError("a field without '='")
        fields.setdefault(key.strip().lower(), []).append(_unquote(raw))
    for single in ("hash", "cert", "subject", "by"):
        if len(fields.get(single, ())) > 1:
            raise XfccError(f"{single} given twice")
    uris = tuple(fields.get("uri", ()))
    subject = (fields.get("subject") or [""])[0]
    return Peer(
        principal=uris[0] if uris else subject,
        certificate=(fields.get("cert") or [""])[0],
        uris=uris,
        dns=tuple(fields.get("dns", ())),
        subject=subject,
        fingerprint=(fields.get("hash") or [""])[0].lower(),
    )
