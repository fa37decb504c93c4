"""An OpenID Connect issuer (`auth.oidc`): its JWKS found through its discovery document.

`<issuer>/.well-known/openid-configuration` is fetched (under the one fetch policy), its
`issuer` must equal the configured issuer exactly (OpenID Connect Discovery §4.3: otherwise
anyone able to serve that path could name keys for another issuer), and its `jwks_uri` is then
handled by the JWKS machinery: background refresh, single-flight refresh on an unknown `kid`,
last good key set kept. Discovery runs again before each JWKS fetch; when it fails after a first
success, the last good `jwks_uri` is kept. Keys verify only tokens whose `iss` is the issuer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from authz import strictjson
from authz.config.auth import OidcSettings, SecretSettings
from authz.fetch import fetch, url_problem
from authz.identity.jwks import JwksError, JwksSource
from authz.identity.keys import Key

DISCOVERY_PATH = "/.well-known/openid-configuration"
MAX_DISCOVERY_BYTES = 64 << 10  # real documents are a few KiB


class DiscoveryError(JwksError):
    """The discovery document is missing, too large, or names another issuer or a bad URL."""


def discovery_url(issuer: str) -> str:
    """OpenID Connect Discovery §4: the issuer without a trailing `/`, then the well-known path."""
    return issuer.rstrip("/") + DISCOVERY_PATH


def jwks_uri_of(doc: Any, issuer: str) -> str:
    """The `jwks_uri` of a discovery document for `issuer`; DiscoveryError when unusable."""
    if not isinstance(doc, dict):
        raise DiscoveryError("the discovery document is not a JSON object")
    named = doc.get("issuer")
    if named != issuer:  # exact: no trailing-slash or case folding (OIDC Discovery §4.3)
        shown = repr(named)[:120] if isinstance(named, str) else "no issuer"
        raise DiscoveryError(f"the discovery document names {shown}, not {issuer!r}")
    uri = doc.get("jwks_uri")
    if not isinstance(uri, str) or not uri:
        raise DiscoveryError("the discovery document has no jwks_uri")
    if problem := url_problem(uri):
        raise DiscoveryError(f"jwks_uri: {problem}")
    if urlsplit(issuer).scheme == "https" and urlsplit(uri).scheme != "https":
        raise DiscoveryError("jwks_uri: an https issuer's keys must come over https")
    return uri


class OidcSource(JwksSource):
    """One `auth.oidc` entry; a JwksSource whose URL comes from discovery."""

    def __init__(
        self,
        settings: OidcSettings,
        path: str,
        *,
        on_removed: Callable[[list[Key]], object],
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ):
        # The JWKS side reads alg, issuer, audience and refresh; the URL is discovered.
        jwks = SecretSettings.model_construct(
            alg=settings.alg, issuer=settings.issuer, audience=settings.audience,
            refresh=settings.refresh, jwksUrl=None,
        )  # fmt: skip
        super().__init__(jwks, path, on_removed=on_removed, clock=clock, **options)
        self.issuer = settings.issuer
        self.discovery = discovery_url(settings.issuer)
        self.url = ""  # the jwks_uri, once discovered

    async def _download(self) -> bytes:
        try:
            self.url = await self._discover()
        except Exception:
            if not self.url:  # never discovered: nothing to fall back on
                raise
        return await super()._download()

    async def _discover(self) -> str:
        assert self._http is not None
        reply = await fetch(
            self._http, "GET", self.discovery, limit=MAX_DISCOVERY_BYTES, timeout=self._timeout,
            headers={"accept": "application/json"},
        )  # fmt: skip
        if reply.status != 200:
            raise DiscoveryError(f"discovery: HTTP {reply.status}")
        try:
            doc = strictjson.loads(reply.body)
        except Exception:
            raise DiscoveryError("the discovery document is not JSON") from None
        return jwks_uri_of(doc, self.issuer)
