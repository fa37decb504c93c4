"""Identity: the one object the rest of the service uses to read, verify and mint tokens.

Built per config version, so a new version gets new keys, a new JWKS state and an empty
verified-token cache (no claims leak across versions).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from authz.config.auth import AuthSettings
from authz.errors import ConfigError, DependencyError, TokenError
from authz.identity.apikeys import ApiKeys
from authz.identity.cache import TokenCache
from authz.identity.extract import TokenExtractor
from authz.identity.introspection import Introspector
from authz.identity.jwks import JwksSource
from authz.identity.keys import Key, Problems, load_static_key, pick_primary
from authz.identity.mint import SERVICE_TOKEN_TYP, Minter, ServiceTokens
from authz.identity.mtls import MtlsSource
from authz.identity.oidc import OidcSource
from authz.identity.sources import Accepted, Authenticated, authenticate
from authz.identity.verify import Provider, Verifier
from authz.peer import Peer

log = logging.getLogger(__name__)


class Identity:
    def __init__(
        self,
        settings: AuthSettings,
        *,
        base_dir: Path,
        project: str,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.clock = clock  # wall clock for exp/nbf/iat
        self.monotonic = monotonic  # for JWKS rate limits (immune to clock steps)
        self.max_bytes = settings.maxTokenBytes
        self.cache = TokenCache(settings.cacheSize, settings.leeway)
        problems = Problems()  # every problem of the section, raised together
        providers, static = self._load(settings, base_dir, problems)
        # the other sources (docs/identity.md); None / empty when not configured
        providers += [
            OidcSource(o, f"auth.oidc[{i}]", on_removed=self.cache.purge, clock=self.monotonic)
            for i, o in enumerate(settings.oidc)
        ]
        self.api_keys = ApiKeys(settings.apiKeys, base_dir, problems) if settings.apiKeys else None
        self.mtls = MtlsSource(settings.mtls) if settings.mtls else None
        self.introspectors = [
            Introspector(t, f"auth.introspection[{i}]", leeway=settings.leeway, clock=clock)
            for i, t in enumerate(settings.introspection)
        ]
        self.sources = [p for p in providers if isinstance(p, JwksSource)]
        self.verifier = Verifier(
            providers,
            leeway=settings.leeway,
            required=settings.requireClaims,
            max_bytes=settings.maxTokenBytes,
            clock=clock,
            service_audience=settings.serviceToken.audience,
        )
        self.extractor = TokenExtractor(settings.token, settings.maxTokenBytes)
        primary = pick_primary(settings.secrets, static, problems)
        self.minter = Minter(primary, clock)  # end-user tokens (`authz token`, rule tests)
        service_key = _service_key(settings, static, primary, problems)
        self.service_minter = Minter(service_key, clock, typ=SERVICE_TOKEN_TYP)
        if problems:
            raise ConfigError(problems)
        self.service_audience = settings.serviceToken.audience
        self.service_tokens = ServiceTokens(
            self.service_minter, project, settings.serviceToken.ttl, self.service_audience
        )

    def _load(
        self, settings: AuthSettings, base_dir: Path, problems: Problems
    ) -> tuple[list[Provider], dict[int, Key]]:
        """Every usable key of the config, in order; problems are added to `problems`."""
        providers: list[Provider] = []
        static: dict[int, Key] = {}
        for i, s in enumerate(settings.secrets):
            path = f"auth.secrets[{i}]"
            if s.jwksUrl is not None:
                providers.append(
                    JwksSource(s, path, on_removed=self.cache.purge, clock=self.monotonic)
                )
            elif (key := load_static_key(s, path, base_dir, problems)) is not None:
                static[i] = key
                providers.append(key)
        return providers, static

    async def start(self, http: httpx.AsyncClient) -> None:
        """First JWKS fetches (failures leave us not ready), then the background refreshes."""
        await asyncio.gather(*(s.start(http) for s in self.sources))
        for introspector in self.introspectors:
            await introspector.start(http)
        if self.api_keys is not None:
            await self.api_keys.start()

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self.sources))
        await asyncio.gather(*(i.close() for i in self.introspectors))
        if self.api_keys is not None:
            await self.api_keys.close()

    @property
    def ready(self) -> bool:
        return all(s.ready for s in self.sources)

    def dependencies(self) -> dict[str, str]:
        """/readyz detail per remote source: OIDC issuers, introspection endpoints and the API
        key file (reported only: endpoints that need them answer 503, or keep the last good
        keys)."""
        out = {
            f"oidc:{s.issuer}": "ok" if s.ready else f"not loaded: {s.problem}"
            for s in self.sources
            if isinstance(s, OidcSource)
        }
        for i in self.introspectors:
            out[f"introspection:{i.path}"] = i.status
        if self.api_keys is not None and self.api_keys.file is not None:
            problem = self.api_keys.problem
            out["apiKeys.file"] = "ok" if problem is None else f"last reload failed: {problem}"
        return out

    @property
    def can_sign(self) -> bool:
        return self.minter.key is not None

    def extract(self, headers: Mapping[str, str]) -> str | None:
        return self.extractor.extract(headers, self.cache.verified)

    def identify(self, headers: Mapping[str, str]) -> tuple[str | None, dict[str, Any] | None]:
        """`extract`, and the claims when that token was verified before: (token, claims),
        (token, None) when it must be verified (`verify`), (None, None) without a token;
        TokenError as `extract` and `verify` raise it. No coroutine for the common case."""
        token = self.extract(headers)
        if token is None:
            return None, None
        # Cached tokens passed verify's size check when they were verified.
        return token, self.cache.get(token, self.clock())

    async def verify(self, token: str) -> dict[str, Any]:
        """The verified claims (treat them as read-only), or TokenError(reason)."""
        if not isinstance(token, str) or len(token) > self.max_bytes:
            raise TokenError("token too large", "too_large")
        now = self.clock()
        claims = self.cache.get(token, now)
        if claims is not None:
            return claims
        try:
            claims, key, exp, nbf = await self.verifier.verify(token)
        except (TokenError, DependencyError):  # 401, or 503 while a key set has not loaded
            raise
        except Exception as e:  # fail closed: an unforeseen input is a bad token, not a crash
            log.warning("token verification failed unexpectedly: %s", type(e).__name__)
            raise TokenError("token could not be verified", "error") from None
        self.cache.put(token, claims, exp, nbf, key)
        return claims

    async def authenticate(
        self, accepted: Accepted, headers: Mapping[str, str], peer: Peer | None
    ) -> Authenticated | None:
        """(source, token, claims) for an endpoint that lists sources (sources.py)."""
        return await authenticate(self, accepted, headers, peer)

    async def introspect(self, token: str) -> dict[str, Any]:
        """The first active answer of the introspection endpoints, in config order; 401 when
        every one says inactive, 503 when one that could have answered did not."""
        if len(token) > self.max_bytes:
            raise TokenError("token too large", "too_large")
        failure: DependencyError | None = None
        for introspector in self.introspectors:
            try:
                claims = await introspector.introspect(token)
            except DependencyError as exc:
                failure = failure or exc
                continue
            if claims is not None:
                return claims
        if failure is not None:
            raise failure
        raise TokenError("token is not active", "inactive")

    def mint(self, claims: dict[str, Any], ttl: float) -> str:
        """An end-user JWT signed by the primary key, with iat/exp (`authz token`, rule
        tests); ConfigError when no key can sign."""
        return self.minter.mint(claims, ttl)

    def mint_service(self, claims: dict[str, Any], ttl: float) -> str:
        """A service token from `claims` (a webhook's): typed and scoped like the upstream
        service token, so it is never accepted here as an end-user token."""
        if self.service_audience is not None and "aud" not in claims:
            claims = {**claims, "aud": self.service_audience}
        return self.service_minter.mint(claims, ttl)

    def service_token(self, caller_id: str | None) -> str:
        """The upstream service token for this caller (cached); ConfigError when no key can sign."""
        return self.service_tokens.get(caller_id)


def _service_key(
    settings: AuthSettings, static: dict[int, Key], primary: Key | None, problems: Problems
) -> Key | None:
    """The key of `serviceToken.key` (a kid of auth.secrets), else the primary key."""
    kid = settings.serviceToken.key
    if kid is None:
        return primary
    key = next((k for k in static.values() if k.kid == kid), None)
    if key is None:
        problems.add("auth.serviceToken.key", f"no static key of auth.secrets has kid {kid!r}")
    elif not key.can_sign:
        problems.add("auth.serviceToken.key", f"the key {kid!r} cannot sign (add privateKey)")
        return None
    return key
