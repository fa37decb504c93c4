"""The `auth:` section of the config (docs/rules.md, identity sources)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from authz.config.base import Duration, StrictModel
from authz.fetch import url_problem
from authz.identity.source_settings import (
    ApiKeySettings,
    IntrospectionSettings,
    MtlsSettings,
    OidcSettings,
)

Algorithm = Literal[
    "HS256", "HS384", "HS512",
    "RS256", "RS384", "RS512",
    "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512",
    "EdDSA",
]  # fmt: skip


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
