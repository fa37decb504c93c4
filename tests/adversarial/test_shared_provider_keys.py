"""Two OpenID Connect providers publishing the same signing key (a republished key, or a
multi-tenant IdP): each provider's tokens are accepted, whichever is listed first, and a
token never borrows one provider's issuer with the other's audience."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from authz.errors import TokenError
from tests.unit.identity.providers import OidcProvider
from tests.unit.identity.support import Clock, make_identity, rsa_key


@pytest.fixture(scope="module")
def providers() -> Iterator[tuple[OidcProvider, OidcProvider]]:
    with OidcProvider("/a") as a, OidcProvider("/b") as b:
        b.signing = a.signing = {"shared": rsa_key(2048, 7)}
        yield a, b


@pytest.mark.parametrize("first", ["a", "b"])
async def test_both_providers_tokens_whatever_the_order(providers, first):
    a, b = providers
    entries = {"a": {"issuer": a.issuer, "audience": "orders"},
               "b": {"issuer": b.issuer, "audience": "billing"}}  # fmt: skip
    order = [entries[first], entries["b" if first == "a" else "a"]]
    ident = make_identity({"oidc": order}, monotonic=Clock(1000.0))
    async with httpx.AsyncClient(trust_env=False) as http:
        await ident.start(http)
        try:
            assert ident.ready
            for idp, aud in ((a, "orders"), (b, "billing")):
                claims = await ident.verify(idp.sign({"sub": "u1", "aud": aud}))
                assert (claims["iss"], claims["aud"]) == (idp.issuer, aud)
            for idp, aud in ((a, "billing"), (b, "orders")):  # issuer of one, audience of other
                with pytest.raises(TokenError):
                    await ident.verify(idp.sign({"sub": "u1", "aud": aud}))
            with pytest.raises(TokenError, match="issuer"):  # the shared key, a third issuer
                await ident.verify(a.sign({"sub": "u1", "aud": "orders", "iss": "https://c/"}))
        finally:
            await ident.close()
