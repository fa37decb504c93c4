"""Reading the caller's token from the request headers (`auth.token`)."""

from __future__ import annotations

from collections.abc import Container, Mapping

from authz.config.auth import TokenSource
from authz.errors import TokenError


class TokenExtractor:
    """Token from `<header>: <scheme> <token>` and/or a cookie; None when the request has none."""

    def __init__(self, source: TokenSource, max_bytes: int):
        self.header = source.header.lower() if source.header else None
        self.scheme = source.scheme.lower() if source.scheme else None
        self.cookie = source.cookie
        self.max_bytes = max_bytes

    def extract(self, headers: Mapping[str, str], verified: Container[str] = ()) -> str | None:
        """`verified`: tokens that passed verification before (so have no whitespace and are
        not too large): a header token found in it skips those checks."""
        from_header = self._from_header(headers.get(self.header), verified) if self.header else None
        from_cookie = self._from_cookie(headers.get("cookie")) if self.cookie else None
        if from_header is not None and from_cookie is not None:
            raise TokenError("token given both in a header and in a cookie")
        return from_header if from_header is not None else from_cookie

    def _checked(self, token: str) -> str:
        if not token:
            raise TokenError("empty token")
        if len(token) > self.max_bytes:
            raise TokenError("token too large", "too_large")
        return token

    def _from_header(self, value: str | None, verified: Container[str]) -> str | None:
        if value is None:
            return None
        if len(value) > self.max_bytes + 64:  # before any splitting of a huge value
            raise TokenError("token too large", "too_large")
        if "," in value:  # Envoy joins repeated headers with ","; a JWT has no comma
            raise TokenError(f"several {self.header} values")
        value = value.strip()
        if self.scheme is None:
            return self._checked(value)
        scheme, _, token = value.partition(" ")
        if scheme.lower() != self.scheme:
            raise TokenError("wrong authorization scheme")
        token = token.strip()
        if token in verified:  # the checks below passed when it was verified
            return token
        # Whitespace inside the (stripped) token? str.split() tests the same characters as the
        # regex \s and runs on every Check: much faster than re.search on a long token.
        if len(token.split()) > 1:
            raise TokenError("malformed token")
        return self._checked(token)

    def _from_cookie(self, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value) > 8 * self.max_bytes:  # cookie headers carry other cookies too
            raise TokenError("cookie header too large", "too_large")
        found: list[str] = []
        # "; " separates cookies; "," appears when Envoy joins repeated cookie headers
        for part in value.replace(",", ";").split(";"):
            name, eq, val = part.strip().partition("=")
            if eq and name == self.cookie:
                val = val.strip()
                found.append(val[1:-1] if len(val) > 1 and val[0] == val[-1] == '"' else val)
        if not found:
            return None
        if len(found) > 1:
            raise TokenError(f"several {self.cookie} cookies")
        return self._checked(found[0])
