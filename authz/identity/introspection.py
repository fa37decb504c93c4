"""Opaque bearer tokens checked at the provider (`auth.introspection`, RFC 7662).

The token is POSTed (form-encoded, with the client's credentials in HTTP Basic, RFC 7662 §2.1)
through the one fetch policy (no redirect, identity encoding, bytes capped), under a deadline
for the whole call. The answer:

- `active: true` → its JSON object is `args.auth` (after `exp`/`nbf`, and `iss`/`aud` when
  configured, are checked);
- `active: false` → 401;
- anything else (timeout, connection refused, a non-200, not JSON, no boolean `active`) → 503,
  never an allow.

Answers are cached until `min(exp, cache)`, keyed by the token's SHA-256 (never the token); the
cache belongs to one provider of one config version, so the URL and client credentials that
produced an answer are part of what keys it. Concurrent checks of one token share one call.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from authz import strictjson
from authz.cache import MISS, ResultCache
from authz.config.auth import IntrospectionSettings
from authz.errors import DependencyError, TokenError
from authz.fetch import fetch
from authz.identity.claims import check_times, number_claim
from authz.identity.keys import audiences

log = logging.getLogger(__name__)

MAX_BYTES = 64 << 10  # an introspection answer is a few hundred bytes
_INACTIVE: dict[str, Any] = {"active": False}


def basic_credentials(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: each part form-urlencoded, then `id:secret` in base64."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


class Introspector:
    def __init__(
        self,
        settings: IntrospectionSettings,
        path: str,
        *,
        leeway: float,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.url = settings.url
        self.path = path
        self.leeway = leeway
        self.clock = clock
        self.calls = 0  # requests sent to the provider, for tests and /readyz
        self.status = "no call yet"  # the last call's outcome (/readyz), never a token
        self.cache = (
            ResultCache(settings.cache, settings.cacheSize, settings.cacheBytes)
            if settings.cacheSize > 0 and settings.cache > 0
            else None
        )
        self._authorization = basic_credentials(settings.clientId, settings.clientSecret)
        self._audience = audiences(settings.audience)
        self._http: Any = None
        self._inflight: dict[bytes, asyncio.Task[dict[str, Any]]] = {}

    async def start(self, http: Any) -> None:
        self._http = http

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._inflight.clear()
        self._http = None

    async def introspect(self, token: str) -> dict[str, Any] | None:
        """The provider's answer for an active token, None for an inactive one; TokenError
        when active but unacceptable (expired, wrong iss/aud); DependencyError when the
        provider cannot answer."""
        key = hashlib.sha256(token.encode()).digest()
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not MISS:
                return hit if hit.get("active") is True else None
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._ask(token, key))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        # shield: a check that gives up (Envoy's deadline) does not cancel the others' call
        answer = await asyncio.shield(task)
        return answer if answer.get("active") is True else None

    def _done(self, key: bytes, task: asyncio.Task[dict[str, Any]]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up already

    async def _ask(self, token: str, key: bytes) -> dict[str, Any]:
        answer = await self._call(token)
        if answer.get("active") is not True:
            if self.cache is not None:
                self.cache.put(key, _INACTIVE)
            return _INACTIVE
        ttl = self._check(answer)
        if self.cache is not None:
            self.cache.put(key, answer, ttl)
        return answer

    async def _call(self, token: str) -> dict[str, Any]:
        if self._http is None:
            raise DependencyError(f"introspection {self.path}: not started")
        form = {"token": token}
        if self.settings.tokenTypeHint:
            form["token_type_hint"] = self.settings.tokenTypeHint
        headers = {
            "authorization": self._authorization,
            "content-type": "application/x-www-form-urlencoded",
            "accept": "application/json",
        }
        self.calls += 1
        try:
            async with asyncio.timeout(self.settings.timeout):  # the whole call
                reply = await fetch(
                    self._http, "POST", self.url, limit=MAX_BYTES,
                    timeout=self.settings.timeout, headers=headers,
                    content=urlencode(form).encode(),
                )  # fmt: skip
            if reply.status != 200:
                raise ValueError(f"HTTP {reply.status}")
            answer = strictjson.loads(reply.body)
            if not isinstance(answer, dict) or type(answer.get("active")) is not bool:
                raise ValueError("the answer is not an object with a boolean `active`")
        except Exception as exc:  # timeout, refused, policy, garbage: 503, never an allow
            why = str(exc) or type(exc).__name__
            self.status = f"failing: {why[:200]}"
            log.warning("introspection %s failed: %s", self.path, why[:200])
            raise DependencyError(f"introspection {self.path}: {why[:200]}") from None
        self.status = "ok"
        return answer

    def _check(self, answer: dict[str, Any]) -> float:
        """TokenError for an active answer authz must not accept; else the seconds it may be
        cached (its exp bounds it)."""
        now = self.clock()
        exp = number_claim(answer, "exp")
        check_times(exp, number_claim(answer, "nbf"), now, self.leeway)
        if self.settings.issuer is not None and answer.get("iss") != self.settings.issuer:
            raise TokenError("introspected token issuer not accepted", "issuer")
        if self._audience is not None:
            aud = answer.get("aud")
            named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if not set(self._audience).intersection(a for a in named if isinstance(a, str)):
                raise TokenError("introspected token audience not accepted", "audience")
        return self.settings.cache if exp is None else exp - now
