"""The configuration schema (docs/rules.md). Structure only; rule semantics
(operators per type, literal types, references) are checked by the rule compiler."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator

from authz.config.auth import AuthSettings, Source
from authz.config.base import Duration, StrictModel
from authz.config.databases import DatabaseSettings

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "*"}

# --- rules -------------------------------------------------------------------------------


class RuleBase(StrictModel):
    error: str | None = None  # the 403 message when this rule makes the request fail


class AllowRule(RuleBase):
    rule: Literal["allow"]


class DenyRule(RuleBase):
    rule: Literal["deny"]


class AuthenticatedRule(RuleBase):
    rule: Literal["authenticated"]


class AndRule(RuleBase):
    rule: Literal["and"]
    clauses: list[AnyRule] = Field(min_length=1)


class OrRule(RuleBase):
    rule: Literal["or"]
    clauses: list[AnyRule] = Field(min_length=1)


class MatchRule(RuleBase):
    rule: Literal["match"]
    eval: Literal["==", "!=", "<", "<=", ">", ">=", "in", "notIn"]
    type: Literal["string", "number", "bool", "date"]
    f1: Any
    f2: Any


class CacheSettings(StrictModel):
    ttl: Duration
    size: int = Field(10_000, ge=1)  # entries
    maxBytes: int = Field(16 << 20, ge=1024)  # what keys and results hold, estimated


class QueryRule(RuleBase):
    rule: Literal["query"]
    db: str
    col: str
    find: dict[str, Any] = Field(default_factory=dict)
    store: str = "args.result"
    clause: AnyRule | None = None
    cache: CacheSettings | None = None
    limit: int = Field(100, ge=1, le=10_000)  # documents fetched at most


class WebhookRule(RuleBase):
    rule: Literal["webhook"]
    url: str
    timeout: Duration = 0.1
    claims: dict[str, Any] | None = None
    requestTemplate: Any = None
    store: str = "args.result"
    forwardToken: bool = False
    cache: CacheSettings | None = None


class ForceRule(RuleBase):
    rule: Literal["force"]
    field: str
    value: Any
    clause: AnyRule | None = None


class RemoveRule(RuleBase):
    rule: Literal["remove"]
    fields: list[str] = Field(min_length=1)
    clause: AnyRule | None = None


class EncryptRule(RuleBase):
    rule: Literal["encrypt"]
    fields: list[str] = Field(min_length=1)
    clause: AnyRule | None = None


class DecryptRule(RuleBase):
    rule: Literal["decrypt"]
    fields: list[str] = Field(min_length=1)
    clause: AnyRule | None = None


class HashRule(RuleBase):
    rule: Literal["hash"]
    fields: list[str] = Field(min_length=1)
    clause: AnyRule | None = None
    encoding: Literal["base64", "hex"] = "base64"


AnyRule = Annotated[
    AllowRule
    | DenyRule
    | AuthenticatedRule
    | AndRule
    | OrRule
    | MatchRule
    | QueryRule
    | WebhookRule
    | ForceRule
    | RemoveRule
    | EncryptRule
    | DecryptRule
    | HashRule,
    Field(discriminator="rule"),
]
RULE_KINDS = {
    "allow", "deny", "authenticated", "and", "or", "match", "query", "webhook",
    "force", "remove", "encrypt", "decrypt", "hash",
}  # fmt: skip

for _model in (AndRule, OrRule, QueryRule, ForceRule, RemoveRule, EncryptRule, DecryptRule,
               HashRule):  # fmt: skip
    _model.model_rebuild()

# --- services ----------------------------------------------------------------------------


def _jwt_only() -> list[Source]:
    return ["jwt"]


class Endpoint(StrictModel):
    method: str | list[str] = "*"
    path: str | None = None  # template: /v1/orders/{orderId}
    rule: AnyRule | None = None  # no rule: every request is denied (403)
    mode: Literal["enforce", "dry-run"] = "enforce"
    # which identity sources may authenticate callers here (docs/identity.md)
    identity: list[Source] = Field(default_factory=_jwt_only, min_length=1)

    @field_validator("method")
    @classmethod
    def _methods(cls, v: str | list[str]) -> str | list[str]:
        for m in [v] if isinstance(v, str) else v:
            if m.upper() not in METHODS:
                raise ValueError(f"unknown HTTP method {m!r}")
        return v.upper() if isinstance(v, str) else [m.upper() for m in v]

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("a path template must start with '/'")
        return v


class Service(StrictModel):
    url: str | None = None  # the upstream; used to generate the Envoy config
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)

    @field_validator("endpoints")
    @classmethod
    def _names(cls, v: dict[str, Endpoint]) -> dict[str, Endpoint]:
        for name in v:
            if not NAME.match(name):
                raise ValueError(f"invalid endpoint name {name!r}")
        return v


# --- the rest ----------------------------------------------------------------------------


class CryptoKey(StrictModel):
    id: str
    key: str  # base64 of 32 bytes
    legacy: Literal["spacecloud-cfb"] | None = None  # decrypt-only migration format


class CryptoSettings(StrictModel):
    keys: list[CryptoKey] = Field(default_factory=list)
    hashKey: str | None = None


class Limits(StrictModel):
    """Bounds on what a request may make the service parse."""

    maxBodyBytes: int = Field(1 << 20, ge=0)
    maxJsonDepth: int = Field(32, ge=1, le=500)
    maxJsonKeys: int = Field(1000, ge=1)  # object members in the whole body
    # every object, member and array element: a body of empty `{}` or `[]` has no members
    maxJsonValues: int = Field(10000, ge=1)


class Config(StrictModel):
    project: str = Field(min_length=1)
    auth: AuthSettings = AuthSettings()
    crypto: CryptoSettings | None = None
    databases: dict[str, DatabaseSettings] = Field(default_factory=dict)
    services: dict[str, Service] = Field(default_factory=dict)
    limits: Limits = Limits()
    _version: str = PrivateAttr("")  # short hash of the file, for logs and metrics
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)  # relative paths start here
    # strings filled from the environment (`${VAR}`): treated as secrets, never logged
    _interpolated: frozenset[str] = PrivateAttr(frozenset())

    @property
    def version(self) -> str:
        return self._version

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @field_validator("services", "databases")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not NAME.match(name):
                raise ValueError(f"invalid name {name!r}")
        return v
