"""The rule test file format (docs/rule-tests.md): requests, fixtures and expected
decisions, read and validated with the config they test."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from authz.config.base import StrictModel
from authz.config.load import format_errors, load_config, parse_document
from authz.config.schema import Config
from authz.errors import ConfigError

SUFFIXES = (".tests.yaml", ".tests.yml", ".tests.json")


class WebhookReply(StrictModel):
    status: int = Field(200, ge=100, le=599)
    body: Any = None  # JSON reply (an object, list, ...); a string is sent as raw text
    unavailable: bool = False  # the connection fails: the rule raises -> 503


class Fixtures(StrictModel):
    # alias -> collection/table -> documents/rows; or "unavailable" (every find fails -> 503)
    databases: dict[str, dict[str, list[dict[str, Any]]] | Literal["unavailable"]] = {}
    # URL -> canned reply; or "unavailable". A URL not listed fails like a dead host (503).
    webhooks: dict[str, WebhookReply | Literal["unavailable"]] = {}


class TestRequest(StrictModel):
    service: str | None = None  # context_extensions, as Envoy's generated routes send them
    endpoint: str | None = None
    method: str | None = None  # default: the endpoint's method
    path: str | None = None  # may carry a query string; default: the endpoint's fixed path
    headers: dict[str, str] = {}
    claims: dict[str, Any] | None = None  # minted into a token (primary key), put where read
    body: Any = None  # an object/list is sent as JSON, a string as it is
    peer: dict[str, str] | None = None  # the client certificate: {principal, certificate}


class Expect(StrictModel):
    allowed: bool | None = None
    status: int | None = None
    error: str | None = None  # the `error` of the denial's JSON body
    reason: str | None = None  # a substring of the decision's reason (which rule failed)
    params: Any = None  # args.params after the rule's changes (exact)
    headers: dict[str, str | bool | None] | None = None  # upstream headers: subset
    responseHeaders: dict[str, str | bool | None] | None = None  # added to the client's reply

    @model_validator(mode="after")
    def _something(self) -> Expect:
        if not self.model_fields_set:
            raise ValueError("give at least one of " + ", ".join(Expect.model_fields))
        return self


class Case(StrictModel):
    name: str = Field(min_length=1)
    request: TestRequest
    fixtures: Fixtures | None = None  # added to the file's fixtures (same keys: the case wins)
    expect: Expect


class TestFile(StrictModel):
    config: str  # relative to the test file
    env: dict[str, str] = {}  # ${VAR}s of the config, over the process environment
    fixtures: Fixtures = Fixtures()
    cases: list[Case] = Field(min_length=1)


class TestFileError(Exception):
    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


@dataclass
class Suite:
    path: Path
    spec: TestFile
    config_path: Path
    config: Config


def load_suite(path: Path) -> Suite:
    """Read a test file and its config; TestFileError names every problem."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = parse_document(text, str(path))
        spec = TestFile.model_validate(raw)
    except OSError as exc:
        raise TestFileError([f"cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise TestFileError(["not UTF-8 text"]) from None
    except ConfigError as exc:
        raise TestFileError(exc.errors) from None
    except ValidationError as exc:
        raise TestFileError(format_errors(exc)) from None
    names = [c.name for c in spec.cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TestFileError([f"cases: duplicate name(s): {', '.join(dupes)}"])
    config_path = (path.parent / spec.config).resolve()
    try:
        config = load_config(config_path, {**os.environ, **spec.env})
    except ConfigError as exc:
        raise TestFileError([f"config {spec.config}:", *(f"  {e}" for e in exc.errors)]) from None
    return Suite(path, spec, config_path, config)


def find_files(paths: Iterable[str]) -> list[Path]:
    """Files as given; directories give their `*.tests.yaml|yml|json`, recursively."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.name.endswith(SUFFIXES)))
        else:
            out.append(p)
    return out
