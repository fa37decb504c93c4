"""Checks on verified claims: times (with leeway), issuer/audience of the key, required claims."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from authz.errors import TokenError
from authz.identity.keys import Key


def number_claim(claims: dict[str, Any], name: str) -> float | None:
    """A time claim as a float; a bool, string, null, list, NaN/Infinity or huge int is refused."""
    if name not in claims:
        return None
    value = claims[name]
    if type(value) not in (int, float):  # type(), not isinstance: True is an int
        raise TokenError(f"claim {name} is not a number", "claims")
    try:
        number = float(value)
    except OverflowError:
        raise TokenError(f"claim {name} is out of range", "claims") from None
    if not math.isfinite(number):
        raise TokenError(f"claim {name} is out of range", "claims")
    return number


def check_times(exp: float | None, nbf: float | None, now: float, leeway: float) -> None:
    """Shared by verification and cache hits, so a cached token expires on time."""
    if exp is not None and now >= exp + leeway:
        raise TokenError("token expired", "expired")
    if nbf is not None and now + leeway < nbf:
        raise TokenError("token not yet valid", "not_yet_valid")


def _check_audience(claims: dict[str, Any], wanted: tuple[str, ...]) -> None:
    aud = claims.get("aud")
    if isinstance(aud, str):
        aud = [aud]
    if not isinstance(aud, list) or not all(isinstance(a, str) for a in aud):
        raise TokenError("token has no valid aud", "audience")
    if not set(aud).intersection(wanted):
        raise TokenError("token audience not accepted", "audience")


def check_claims(
    claims: dict[str, Any], key: Key, now: float, leeway: float, required: Sequence[str]
) -> tuple[float | None, float | None]:
    """Raise TokenError when the claims are unacceptable; return (exp, nbf) for the cache."""
    exp = number_claim(claims, "exp")
    nbf = number_claim(claims, "nbf")
    iat = number_claim(claims, "iat")
    check_times(exp, nbf, now, leeway)
    if iat is not None and iat > now + leeway:
        raise TokenError("token issued in the future", "not_yet_valid")
    for name in required:
        if claims.get(name) is None:
            raise TokenError(f"token lacks required claim {name}", "claims")
    if key.issuer is not None and claims.get("iss") != key.issuer:
        raise TokenError("token issuer not accepted for this key", "issuer")
    if key.audience is not None:
        _check_audience(claims, key.audience)
    return exp, nbf
