"""Signing tokens: minted tokens and the cached upstream service token.

Service tokens (upstream and webhook tokens) are typed with the JWT header
`typ: service+jwt` (RFC 8725 §3.11): verification refuses that type as an end-user token,
so a token that an upstream or a webhook sees cannot be replayed to this service."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from authz.errors import ConfigError
from authz.identity.keys import Key
from authz.identity.parse import b64url_encode

SERVICE_TOKEN_TYP = "service+jwt"
NO_SIGNING_KEY = (
    "auth.secrets: no key can sign service tokens "
    "(add an HS secret, or a privateKey to a public key, and mark it primary)"
)


def _segment(obj: dict[str, Any]) -> str:
    return b64url_encode(json.dumps(obj, separators=(",", ":"), allow_nan=False).encode())


class Minter:
    """Signs with `key`; without a key every call raises ConfigError (a 500-class deny)."""

    def __init__(self, key: Key | None, clock: Callable[[], float] = time.time, typ: str = "JWT"):
        self.key = key
        self.clock = clock
        header = {"alg": key.alg, "typ": typ} if key else {}
        if key is not None and key.kid is not None:
            header["kid"] = key.kid
        self._header = _segment(header)

    def sign(self, payload: dict[str, Any]) -> str:
        if self.key is None:
            raise ConfigError([NO_SIGNING_KEY])
        signing_input = f"{self._header}.{_segment(payload)}"
        return f"{signing_input}.{b64url_encode(self.key.sign(signing_input.encode()))}"

    def mint(self, claims: dict[str, Any], ttl: float) -> str:
        now = int(self.clock())
        return self.sign({**claims, "iat": now, "exp": now + max(1, round(ttl))})


class ServiceTokens:
    """One service token per caller id, reused until half its ttl is gone (signing is slow)."""

    MAX_ENTRIES = 4096

    def __init__(self, minter: Minter, project: str, ttl: float, audience: str | None = None):
        self.minter = minter
        self.project = project
        self.ttl = ttl
        self.audience = audience
        self._tokens: OrderedDict[str | None, tuple[str, float]] = OrderedDict()

    def get(self, caller_id: str | None) -> str:
        now = self.minter.clock()
        hit = self._tokens.get(caller_id)
        if hit is not None and now < hit[1]:
            return hit[0]
        claims: dict[str, Any] = {"iss": self.project}
        if self.audience is not None:
            claims["aud"] = self.audience
        if caller_id is not None:
            claims["id"] = caller_id
        token = self.minter.mint(claims, self.ttl)
        self._tokens[caller_id] = (token, now + self.ttl / 2)
        self._tokens.move_to_end(caller_id)
        while len(self._tokens) > self.MAX_ENTRIES:
            self._tokens.popitem(last=False)
        return token
