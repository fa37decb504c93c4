"""The `databases:` section of the config (docs/rules.md, datastores)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from authz.config.base import Duration, StrictModel


class SqliteSettings(StrictModel):
    type: Literal["sqlite"]
    path: str  # a relative path is relative to the config file's directory, not the CWD
    timeout: Duration = 0.15


class PostgresSettings(StrictModel):
    type: Literal["postgres"]
    dsn: str
    timeout: Duration = 0.15
    poolSize: int = Field(4, ge=1, le=100)


class MongoSettings(StrictModel):
    type: Literal["mongo"]
    uri: str
    database: str
    timeout: Duration = 0.15


DatabaseSettings = Annotated[
    SqliteSettings | PostgresSettings | MongoSettings, Field(discriminator="type")
]
