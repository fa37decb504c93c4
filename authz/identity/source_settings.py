"""The config of the identity sources beside `auth.secrets`: `auth.oidc`, `auth.apiKeys`,
`auth.mtls` and `auth.introspection` (docs/identity.md)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from authz.config.base import Duration, StrictModel
from authz.fetch import url_problem

# The names an endpoint's `identity:` list may hold, one per source.
SOURCE_NAMES = ("jwt", "apiKey", "mtls", "introspection")
Source = Literal["jwt", "apiKey", "mtls", "introspection"]
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")  # SPIFFE: lower-case letters, digits, . - _
Asymmetric = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]  # fmt: skip


def _checked_url(value: str, what: str) -> str:
    if problem := url_problem(value):
        raise ValueError(f"{what}: {problem}")
    return value


class OidcSettings(StrictModel):
    """An OpenID Connect issuer: its keys are found through its discovery document."""

    issuer: str  # exactly the `iss` its tokens carry and its discovery document names
    audience: str | list[str] | None = None  # tokens must name one of these in `aud`
    alg: Asymmetric | None = None  # only keys of this algorithm are used
    refresh: Duration = 300.0  # discovery and JWKS background refresh period

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, v: str) -> str:
        _checked_url(v, "issuer")
        if "?" in v or "#" in v:  # OpenID Connect Discovery: no query, no fragment
            raise ValueError("issuer: an issuer has no query or fragment")
        return v


class ApiKey(StrictModel):
    """One API key: only its SHA-256 digest is stored, with the claims it stands for."""

    sha256: str  # lower-case hex of SHA-256 over the key's UTF-8 bytes (`authz apikey`)
    claims: dict[str, Any] = Field(default_factory=dict)  # args.auth for this key

    @field_validator("sha256")
    @classmethod
    def _digest(cls, v: str) -> str:
        if not _SHA256_HEX.match(v):
            raise ValueError("expected 64 lower-case hex digits (`authz apikey --hash`)")
        return v


class ApiKeyFile(StrictModel):
    """The shape of `auth.apiKeys.file` (YAML or JSON)."""

    keys: list[ApiKey] = Field(default_factory=list)


class ApiKeySettings(StrictModel):
    header: str | None = "x-api-key"  # the key alone as the header's value
    scheme: str | None = "APIKey"  # also `Authorization: APIKey <key>` (None: not read)
    keys: list[ApiKey] = Field(default_factory=list)
    file: str | None = None  # more keys, e.g. a mounted Kubernetes Secret; polled for changes
    watch: Duration = 1.0  # seconds between looks at `file` (0: read once)
    maxBytes: int = Field(256, ge=16, le=4096)  # longer values are refused unread

    @model_validator(mode="after")
    def _somewhere(self) -> ApiKeySettings:
        if not self.header and not self.scheme:
            raise ValueError("give header, scheme or both: where would the key be read?")
        if self.header and self.header.lower() == "authorization":
            raise ValueError("header: use scheme for the authorization header")
        return self


class MtlsSettings(StrictModel):
    """The client certificate Envoy verified (Envoy terminates mTLS)."""

    # SPIFFE trust domains accepted (`example.org` for spiffe://example.org/...); unset: any
    # certificate Envoy verified, with or without a SPIFFE ID.
    trustDomains: list[str] | None = None
    # Read x-forwarded-client-cert when the transport reports no connection (Envoy's HTTP
    # ext_authz): only behind an Envoy that sets it with forward_client_cert_details
    # SANITIZE_SET (docs/identity.md). Never read on the gRPC transport.
    xfcc: bool = False

    @field_validator("trustDomains")
    @classmethod
    def _domains(cls, v: list[str] | None) -> list[str] | None:
        for domain in v or ():
            if not _TRUST_DOMAIN.match(domain):
                raise ValueError(f"invalid SPIFFE trust domain {domain!r}")
        return v


class IntrospectionSettings(StrictModel):
    """An OAuth 2.0 token introspection endpoint (RFC 7662) for opaque bearer tokens."""

    url: str
    clientId: str = Field(min_length=1)
    clientSecret: str = Field(min_length=1)
    cache: Duration = 60.0  # an answer is reused until min(its exp, this)
    timeout: Duration = 0.3  # the whole call; a slow provider denies 503
    tokenTypeHint: str | None = "access_token"
    issuer: str | None = None  # when set, the answer's `iss` must equal it
    audience: str | list[str] | None = None  # when set, the answer's `aud` must name one
    cacheSize: int = Field(10_000, ge=0)  # entries (0: no cache)
    cacheBytes: int = Field(16 << 20, ge=1024)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _checked_url(v, "url")
