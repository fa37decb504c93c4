"""Signature and claim verification against the configured keys (static and JWKS).

Order: strict parse and header checks (parse.py), key choice by `kid` and pinned `alg`, the
signature, and only then the payload is parsed and its claims checked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from authz.errors import TokenError
from authz.identity.claims import check_claims
from authz.identity.jwks import JwksSource
from authz.identity.keys import Key
from authz.identity.parse import ParsedToken, parse_payload, parse_token

Provider = Key | JwksSource


class Verifier:
    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        leeway: float,
        required: Sequence[str],
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ):
        self.providers = tuple(providers)  # config order: the order keys are tried without kid
        self.sources = tuple(p for p in providers if isinstance(p, JwksSource))
        self.leeway = leeway
        self.required = tuple(required)
        self.max_bytes = max_bytes
        self.clock = clock

    def candidates(self, alg: str, kid: str | None) -> list[Key]:
        """Keys of this alg: with a kid, those carrying it, else the kid-less ones."""
        keys = [k for k in self._all_keys() if k.alg == alg]
        if kid is None:
            return keys
        return [k for k in keys if k.kid == kid] or [k for k in keys if k.kid is None]

    def _all_keys(self) -> list[Key]:
        keys: list[Key] = []
        for p in self.providers:
            if isinstance(p, Key):
                keys.append(p)
            elif p.keys:
                keys.extend(p.keys)
        return keys

    async def _keys_for(self, token: ParsedToken) -> list[Key]:
        keys = self.candidates(token.alg, token.kid)
        known_kid = token.kid is None or any(k.kid == token.kid for k in keys)
        if self.sources and (not keys or not known_kid):
            # a rotated-in key? one shared, rate-limited refresh per URL, waited for (bounded)
            await asyncio.gather(*(s.refresh_on_demand() for s in self.sources))
            keys = self.candidates(token.alg, token.kid)
        if not keys:
            raise TokenError(
                "unknown kid" if token.kid is not None else f"no key for alg {token.alg}"
            )
        return keys

    async def verify(self, token: str) -> tuple[dict[str, Any], Key, float | None, float | None]:
        """(claims, key, exp, nbf) of a valid token; TokenError otherwise."""
        parsed = parse_token(token, self.max_bytes)
        keys = await self._keys_for(parsed)
        key = next((k for k in keys if k.verify(parsed.signing_input, parsed.signature)), None)
        if key is None:
            raise TokenError("bad signature")
        claims = parse_payload(parsed.payload_segment)
        exp, nbf = check_claims(claims, key, self.clock(), self.leeway, self.required)
        return claims, key, exp, nbf
