"""The `auth:` section of the config (docs/rules.md, identity sources)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from authz.config.base import Duration, StrictModel
from authz.fetch import url_problem

Algorithm = Literal[
    "HS256", "HS384", "HS512",
    "RS256", "RS384", "RS512",
    "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512",
    "EdDSA",
]  # fmt: skip


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


class SecretSettings(StrictModel):
    """One key (or one JWKS endpoint) that verifies tokens.

    `alg` defaults to HS256 for a `secret`; a public key needs it; for a `jwksUrl` it is
    optional and, when given, only remote keys of that algorithm are used.
    """

    kid: str | None = None
    alg: Algorithm | None = None
    secret: str | None = None  # HS*: the shared secret
    publicKey: str | None = None  # PEM (public key or certificate)
    publicKeyFile: str | None = None
    privateKey: str | None = None  # PEM; lets an asymmetric primary key sign
    privateKeyFile: str | None = None
    jwksUrl: str | None = None
    refresh: Duration = 300.0  # JWKS background refresh period
    issuer: str | None = None  # when set, tokens verified by this key must carry this iss
    audience: str | list[str] | None = None
    primary: bool = False  # signs service tokens and webhook tokens

    @model_validator(mode="before")
    @classmethod
    def _default_alg(cls, data: Any) -> Any:
        # Space Cloud secrets carry no alg: a bare secret means HS256.
        if isinstance(data, dict) and data.get("alg") is None and data.get("secret") is not None:
            return {**data, "alg": "HS256"}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> SecretSettings:
        sources = [
            s
            for s in ("secret", "publicKey", "publicKeyFile", "jwksUrl")
            if getattr(self, s) is not None
        ]
        if len(sources) != 1:
            raise ValueError(
                "give exactly one of secret, publicKey, publicKeyFile, jwksUrl"
                + (f" (got {', '.join(sources)})" if sources else "")
            )
        hs = self.alg is not None and self.alg.startswith("HS")
        if self.secret is not None and not hs:
            raise ValueError(f"alg {self.alg} needs a public key or jwksUrl, not a secret")
        if self.secret is None and hs:
            raise ValueError(f"alg {self.alg} needs secret")
        if self.alg is None and self.jwksUrl is None:
            raise ValueError("alg is required for a public key")
        if self.privateKey is not None and self.privateKeyFile is not None:
            raise ValueError("give at most one of privateKey, privateKeyFile")
        if (self.privateKey or self.privateKeyFile) and (self.secret or self.jwksUrl):
            raise ValueError("privateKey goes with publicKey/publicKeyFile only")
        if self.jwksUrl is not None and (problem := url_problem(self.jwksUrl)):
            raise ValueError(f"jwksUrl: {problem}")
        if self.jwksUrl is not None and (self.primary or self.kid is not None):
            raise ValueError(
                "a jwksUrl entry cannot be primary or carry a kid (kids come from the JWKS)"
            )
        return self


class TokenSource(StrictModel):
    """Where the caller's token is read: a header (with a scheme) or a cookie.

    `{cookie: session}` alone reads only the cookie; give `header` too to accept both.
    """

    header: str | None = "authorization"
    scheme: str | None = "Bearer"
    cookie: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _cookie_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("cookie") and "header" not in data:
            return {"header": None, "scheme": None, **data}
        return data


class ServiceTokenSettings(StrictModel):
    """The short-lived JWT this service adds upstream on every allowed request.

    Service tokens (and webhook tokens minted from `claims`) carry the JWT header
    `typ: service+jwt`, so they are never accepted here as end-user tokens. `audience`, when
    set, is their `aud` claim (off by default: verifiers that do not expect an `aud`, such as
    PyJWT without an audience, reject tokens carrying one). `key` is the kid of the
    `auth.secrets` entry that signs them (default: the primary key)."""

    enabled: bool = True  # off: no service token (needed when no key can sign)
    header: str = "x-sc-token"
    ttl: Duration = 60.0
    key: str | None = None
    audience: str | None = Field(None, min_length=1)


class AuthSettings(StrictModel):
    secrets: list[SecretSettings] = Field(default_factory=list)
    token: TokenSource = TokenSource()
    leeway: Duration = 30.0
    requireClaims: list[str] = Field(default_factory=list)
    serviceToken: ServiceTokenSettings = ServiceTokenSettings()
    cacheSize: int = Field(10_000, ge=0)  # verified-token cache entries
    maxTokenBytes: int = Field(8192, ge=256)
    # identity sources beside `secrets` (docs/identity.md); endpoints choose with `identity:`
    oidc: list[OidcSettings] = Field(default_factory=list)
    apiKeys: ApiKeySettings | None = None
    mtls: MtlsSettings | None = None
    introspection: list[IntrospectionSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _service_audience_is_its_own(self) -> AuthSettings:
        # a token naming the service audience is refused as an end-user token: an audience
        # end-user tokens must carry would refuse them all
        aud = self.serviceToken.audience
        sources = [(f"secrets[{i}]", s.audience) for i, s in enumerate(self.secrets)]
        sources += [(f"oidc[{i}]", o.audience) for i, o in enumerate(self.oidc)]
        for where, audience in sources:
            wanted = [audience] if isinstance(audience, str) else audience or []
            if aud is not None and aud in wanted:
                raise ValueError(
                    f"serviceToken.audience {aud!r} is also an end-user audience of {where}"
                )
        return self
