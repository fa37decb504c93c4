"""Which identity source authenticates a request, for an endpoint's `identity:` list.

The credential decides, never a failure: a bearer token goes to `jwt` when it is shaped like a
JWT (three dot-separated parts) and to `introspection` otherwise (when the endpoint takes only
one of the two, that one takes every bearer token); an API key goes to `apiKey`; the client
certificate counts only when no token or key was sent (a workload calling on a user's behalf is
the user). A credential that is present but invalid is a 401 — authz never tries another source
after a failure — and a token and a key sent together are refused as ambiguous. Credentials for
sources the endpoint does not list are not read at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from authz.errors import TokenError
from authz.peer import Peer

if TYPE_CHECKING:
    from authz.identity.apikeys import ApiKeys
    from authz.identity.mtls import MtlsSource

# (source name, the bearer token when there is one, args.auth)
Authenticated = tuple[str, str | None, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Accepted:
    """An endpoint's `identity:` list, compiled at config load."""

    jwt: bool = True
    api_key: bool = False
    mtls: bool = False
    introspection: bool = False

    @classmethod
    def of(cls, names: Iterable[str]) -> Accepted:
        wanted = set(names)
        return cls("jwt" in wanted, "apiKey" in wanted, "mtls" in wanted, "introspection" in wanted)

    @property
    def jwt_only(self) -> bool:
        """Today's default: the Check path that reads only a JWT."""
        return self.jwt and not (self.api_key or self.mtls or self.introspection)


class Sources(Protocol):
    """What `authenticate` reads of an Identity (identity.py, which calls it with itself)."""

    @property
    def api_keys(self) -> ApiKeys | None: ...
    @property
    def mtls(self) -> MtlsSource | None: ...
    def extract(self, headers: Mapping[str, str]) -> str | None: ...
    async def verify(self, token: str) -> dict[str, Any]: ...
    async def introspect(self, token: str) -> dict[str, Any]: ...


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def _without(headers: Mapping[str, str], name: str) -> dict[str, str]:
    return {k: headers[k] for k in headers if k != name}


def bearer_source(token: str, accepted: Accepted) -> str:
    if accepted.jwt and accepted.introspection:
        return "jwt" if looks_like_jwt(token) else "introspection"
    return "jwt" if accepted.jwt else "introspection"


async def authenticate(
    identity: Sources, accepted: Accepted, headers: Mapping[str, str], peer: Peer | None
) -> Authenticated | None:
    """The source, token and claims of the request's credential; None when it carries none
    the endpoint accepts; TokenError (401) or DependencyError (503) as the source decides."""
    api_key, key_in_authorization = None, False
    if accepted.api_key and identity.api_keys is not None:
        api_key, key_in_authorization = identity.api_keys.extract(headers)
    bearer = None
    if accepted.jwt or accepted.introspection:
        # `Authorization: APIKey ...` is the key's, not a token with the wrong scheme
        bearer = identity.extract(_without(headers, "authorization") if key_in_authorization
                                  else headers)  # fmt: skip
    if api_key is not None and bearer is not None:
        raise TokenError("both a token and an API key were sent", "ambiguous")
    if api_key is not None:
        assert identity.api_keys is not None
        return "apiKey", None, identity.api_keys.claims(api_key)
    if bearer is not None:
        if bearer_source(bearer, accepted) == "jwt":
            return "jwt", bearer, await identity.verify(bearer)
        return "introspection", bearer, await identity.introspect(bearer)
    if accepted.mtls and identity.mtls is not None:
        verified = identity.mtls.peer(peer, headers)
        if verified is not None:
            return "mtls", None, identity.mtls.claims(verified)
    return None
