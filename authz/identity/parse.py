"""Strict parsing of a compact JWS before anything in it is trusted.

PyJWT's own decoding is lenient (duplicate members, NaN, padding); here every part is decoded
canonically and parsed with a strict JSON parser, and dangerous header members are refused.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from authz import strictjson
from authz.errors import TokenError

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
# Members that would make us fetch or trust a key named by the token itself.
_KEY_LOCATORS = ("jku", "x5u", "jwk", "x5c")
_MAX_HEADER_BRACKETS = 8  # a real JWS header is one flat object


@dataclass(frozen=True, slots=True)
class ParsedToken:
    header: dict[str, Any]
    alg: str
    kid: str | None
    signing_input: bytes
    payload_segment: str
    signature: bytes


def b64url_decode(segment: str) -> bytes:
    """Decode unpadded base64url, accepting only its canonical form (one token, one string)."""
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if b64url_encode(data) != segment:
        raise ValueError("non-canonical base64url")
    return data


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode_object(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = b64url_decode(segment)
        if what == "header" and raw.count(b"{") + raw.count(b"[") > _MAX_HEADER_BRACKETS:
            raise ValueError("too complex")
        value = strictjson.loads(raw)
    except (ValueError, binascii.Error) as e:  # UnicodeDecodeError is a ValueError
        raise TokenError(f"malformed token {what}: {e}") from None
    if not isinstance(value, dict):
        raise TokenError(f"token {what} is not a JSON object")
    return value


def _check_header(header: dict[str, Any]) -> tuple[str, str | None]:
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise TokenError("token header has no alg")
    if alg.lower() == "none":
        raise TokenError("unsigned token (alg none)")
    for name in _KEY_LOCATORS:
        if name in header:
            raise TokenError(f"token header member {name!r} is not accepted")
    if "crit" in header:
        raise TokenError("token header has crit extensions we do not understand")
    if header.get("b64", True) is not True:
        raise TokenError("unencoded payload (b64) is not accepted")
    if "enc" in header or "zip" in header:
        raise TokenError("encrypted tokens are not accepted")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenError("token kid is not a string")
    return alg, kid


def parse_token(token: str, max_bytes: int) -> ParsedToken:
    """Split and check a compact JWS; the payload stays encoded until the signature holds."""
    if not isinstance(token, str) or len(token) > max_bytes:
        raise TokenError("token too large", "too_large")
    if not token.isascii():
        raise TokenError("malformed token")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token (expected header.payload.signature)")
    head, payload, sig = parts
    if not sig:
        raise TokenError("token has no signature")
    header = _decode_object(head, "header")
    alg, kid = _check_header(header)
    try:
        signature = b64url_decode(sig)
    except (ValueError, binascii.Error):
        raise TokenError("malformed token signature") from None
    if not payload:
        raise TokenError("token has no payload")
    signing_input = f"{head}.{payload}".encode("ascii")
    return ParsedToken(header, alg, kid, signing_input, payload, signature)


def parse_payload(segment: str) -> dict[str, Any]:
    return _decode_object(segment, "payload")
