"""A remote JWKS: fetched at start, refreshed in the background and on an unknown `kid`.

On-demand refreshes are single-flight and rate-limited (one fetch per `min_interval` per URL,
whatever started it), so a flood of tokens with invented kids costs at most a couple of fetches
a minute. A failed fetch or a useless document keeps the last good key set. Remote keys are
filtered: no `oct`, no RSA under 2048 bits, no duplicate kids, only algorithms we support.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from authz import strictjson
from authz.config.auth import SecretSettings
from authz.fetch import fetch
from authz.identity.keys import ALGORITHMS, Key, audiences, check_public_key, fingerprint

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 2.0
MIN_INTERVAL = 30.0  # seconds between fetches of one URL, for on-demand refreshes
MAX_BYTES = 1 << 20
_EC_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_PUBLIC_MEMBERS = {
    "RSA": ("kty", "n", "e"),
    "EC": ("kty", "crv", "x", "y"),
    "OKP": ("kty", "crv", "x"),
}
_PARSERS = {"RSA": RSAAlgorithm.from_jwk, "EC": ECAlgorithm.from_jwk, "OKP": OKPAlgorithm.from_jwk}


class JwksError(Exception):
    """The document fetched is unusable (the last good key set stays)."""


def _jwk_alg(jwk: dict[str, Any], pinned: str | None) -> str:
    """The one algorithm this JWK verifies: its own `alg`, else the config's, else by type."""
    kty, alg = jwk.get("kty"), jwk.get("alg")
    if alg is None:
        crv = jwk.get("crv")
        by_type = {"RSA": "RS256", "OKP": "EdDSA"}.get(kty) if isinstance(kty, str) else None
        by_curve = _EC_ALG.get(crv) if isinstance(crv, str) else None
        alg = pinned or by_type or by_curve
    if not isinstance(alg, str) or alg not in ALGORITHMS or alg.startswith("HS"):
        raise ValueError(f"unsupported alg {alg!r}")
    if pinned is not None and alg != pinned:
        raise ValueError(f"alg {alg} is not the configured {pinned}")
    return alg


def _jwk_key(jwk: Any, s: SecretSettings, source: str) -> Key:
    if not isinstance(jwk, dict):
        raise ValueError("not an object")
    kty = jwk.get("kty")
    if kty not in _PARSERS:
        raise ValueError(f"key type {kty!r} not accepted")  # oct, unknown
    if jwk.get("use", "sig") != "sig":
        raise ValueError("not a signing key")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise ValueError("key_ops does not allow verify")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("kid is not a string")
    alg = _jwk_alg(jwk, s.alg)
    public = _PARSERS[kty]({m: jwk[m] for m in _PUBLIC_MEMBERS[kty] if m in jwk})
    if why := check_public_key(alg, public):
        raise ValueError(why)
    fp = fingerprint(alg, kid, public)
    return Key(alg, kid, public, s.issuer, audiences(s.audience), fingerprint=fp, source=source)


def keys_from_jwks(doc: Any, s: SecretSettings, source: str) -> list[Key]:
    """The usable keys of a JWKS document; unusable ones are logged and skipped."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError("not a JWKS document")
    keys: list[Key] = []
    for i, jwk in enumerate(doc["keys"]):
        try:
            keys.append(_jwk_key(jwk, s, source))
        except Exception as e:
            log.warning("jwks %s: ignoring key %d: %s", source, i, e)
    dup = {kid for kid, n in Counter(k.kid for k in keys if k.kid is not None).items() if n > 1}
    if dup:  # which of two keys with one kid is meant? neither
        log.warning("jwks %s: ignoring keys with duplicate kids %s", source, sorted(dup))
        keys = [k for k in keys if k.kid not in dup]
    if not keys:
        raise JwksError("no usable key")
    return keys


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__  # a timeout has no message


class JwksSource:
    """One `jwksUrl` entry of `auth.secrets` and its current key set."""

    def __init__(
        self,
        settings: SecretSettings,
        path: str,
        *,
        on_removed: Callable[[list[Key]], object],
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = MIN_INTERVAL,
        timeout: float = FETCH_TIMEOUT,
    ):
        self.settings = settings
        self.url = settings.jwksUrl or ""
        self.path = path
        self.keys: tuple[Key, ...] | None = None  # None until a first good fetch
        self.fetches = 0  # attempts, for metrics and tests
        self.problem: str | None = "not fetched yet"  # why the last fetch failed (/readyz)
        self._on_removed = on_removed
        self._clock = clock
        self._min_interval = min_interval
        self._timeout = timeout
        self._http: httpx.AsyncClient | None = None
        self._last_fetch = -float("inf")
        self._inflight: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.keys is not None

    async def start(self, http: httpx.AsyncClient) -> None:
        """First fetch (a failure leaves the source not ready), then the background refresh."""
        self._http = http
        await self._fetch_shared()
        self._loop_task = asyncio.create_task(self._refresh_loop(), name=f"jwks {self.path}")

    async def close(self) -> None:
        for task in (self._loop_task, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._loop_task = self._inflight = None
        self._http = None  # closed: no more fetches, even on demand

    async def refresh_on_demand(self) -> None:
        """Join a fetch in flight, or start one unless this URL was fetched too recently."""
        if self._http is None:
            return
        if self._inflight is None and self._clock() - self._last_fetch < self._min_interval:
            return
        await self._fetch_shared()

    async def _fetch_shared(self) -> None:
        if self._inflight is None:
            self._last_fetch = self._clock()
            self._inflight = asyncio.create_task(self._fetch(), name=f"jwks fetch {self.path}")
            self._inflight.add_done_callback(self._fetch_done)
        # asyncio.wait neither cancels the shared fetch on timeout nor raises if close()
        # cancels it: a waiting verification then simply goes on with the keys it has.
        await asyncio.wait([self._inflight], timeout=self._timeout + 1.0)

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _refresh_loop(self) -> None:
        backoff = 1.0
        while True:
            if self.ready:
                delay, backoff = self.settings.refresh, 1.0
            else:  # not ready yet: retry soon, backing off up to the refresh period
                delay, backoff = min(backoff, self.settings.refresh), backoff * 2
            await asyncio.sleep(max(delay, 0.1))
            await self._fetch_shared()

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            async with asyncio.timeout(self._timeout):  # the whole download, not each read
                body = await self._download()
            keys = keys_from_jwks(strictjson.loads(body), self.settings, self.path)
        except Exception as e:  # outage, garbage, timeout: keep serving the last good set
            self.problem = _why(e)
            log.warning("jwks %s: refresh failed, keeping the last key set: %s", self.path, e)
            return
        self.problem = None
        self._install(keys)

    async def _download(self) -> bytes:
        assert self._http is not None
        reply = await fetch(
            self._http, "GET", self.url, limit=MAX_BYTES, timeout=self._timeout,
            headers={"accept": "application/json"},
        )  # fmt: skip
        if reply.status != 200:
            raise JwksError(f"HTTP {reply.status}")
        return reply.body

    def _install(self, keys: list[Key]) -> None:
        """Swap in the new set; keep unchanged Key objects, report the dropped ones."""
        old = {k.fingerprint: k for k in self.keys or ()}
        new = tuple(old.get(k.fingerprint, k) for k in keys)
        kept = {k.fingerprint for k in new}
        removed = [k for fp, k in old.items() if fp not in kept]
        self.keys = new
        for key in removed:
            key.removed = True
        if removed:
            log.info("jwks %s: %d key(s) removed", self.path, len(removed))
            self._on_removed(removed)
