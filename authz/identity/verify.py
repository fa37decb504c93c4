"""Signature and claim verification against the configured keys (static and JWKS).

Order: strict parse and header checks (parse.py), key choice by `kid` and pinned `alg`, the
signature, and only then the payload is parsed and its claims checked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from authz.errors import DependencyError, TokenError
from authz.identity.claims import check_claims
from authz.identity.jwks import JwksSource
from authz.identity.keys import ALGORITHMS, Key
from authz.identity.mint import SERVICE_TOKEN_TYP
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
        service_audience: str | None = None,
    ):
        self.providers = tuple(providers)  # config order: the order keys are tried without kid
        self.sources = tuple(p for p in providers if isinstance(p, JwksSource))
        self.leeway = leeway
        self.required = tuple(required)
        self.max_bytes = max_bytes
        self.clock = clock
        self.service_audience = service_audience

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
            self._unloaded(token.alg)
            if token.kid is not None:
                raise TokenError("unknown kid", "unknown_key")
            # the alg is the token's text: named only when it is one we know
            alg = token.alg if token.alg in ALGORITHMS else "(unsupported)"
            raise TokenError(f"no key for alg {alg}", "unknown_key")
        return keys

    def _unloaded(self, alg: str) -> None:
        """DependencyError (503) when a remote key set that could hold this token's key has
        never loaded: the token may be good, so it is not a 401; never an allow."""
        waiting = [
            s for s in self.sources
            if not s.ready and (s.settings.alg is None or s.settings.alg == alg)
        ]  # fmt: skip
        if waiting:
            raise DependencyError(f"key set {waiting[0].path} has not loaded yet")

    async def verify(self, token: str) -> tuple[dict[str, Any], Key, float | None, float | None]:
        """(claims, key, exp, nbf) of a valid token; TokenError otherwise."""
        parsed = parse_token(token, self.max_bytes)
        if _service_typed(parsed.header):
            raise TokenError("a service token is not an end-user token", "service_token")
        keys = await self._keys_for(parsed)
        key = next((k for k in keys if k.verify(parsed.signing_input, parsed.signature)), None)
        if key is None:
            raise TokenError("bad signature", "signature")
        claims = parse_payload(parsed.payload_segment)
        exp, nbf = check_claims(claims, key, self.clock(), self.leeway, self.required)
        if self.service_audience is not None and _has_audience(claims, self.service_audience):
            raise TokenError(
                "a token for the upstream service is not an end-user token", "service_token"
            )
        return claims, key, exp, nbf


def _service_typed(header: dict[str, Any]) -> bool:
    """`typ` names a service token, in any case and with or without `application/`."""
    typ = header.get("typ")
    if not isinstance(typ, str):
        return False
    typ = typ.lower()
    return typ.removeprefix("application/") == SERVICE_TOKEN_TYP


def _has_audience(claims: dict[str, Any], audience: str) -> bool:
    aud = claims.get("aud")
    return aud == audience or (isinstance(aud, list) and audience in aud)
