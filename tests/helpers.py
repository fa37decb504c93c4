"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings


def examples(n: int) -> int:
    """`n` examples scaled by the Hypothesis profile (tests/conftest.py): n in `ci`, 10n in
    `explore`, n/4 in `mutate`."""
    return max(1, n * settings().max_examples // 100)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


PG = "postgresql://postgres@127.0.0.1:5432/test"  # the PostgreSQL every machine runs


def pg_dsn(schema: str, port: int = 5432) -> str:
    """The test database with `schema` first on the search path."""
    return f"postgresql://postgres@127.0.0.1:{port}/test?options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def pg_schema(prefix: str) -> Iterator[tuple[Any, str]]:
    """(admin connection, schema name): a fresh schema, first on the admin connection's
    search path and dropped afterwards; skips the test when PostgreSQL is not reachable."""
    psycopg = pytest.importorskip("psycopg")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG}: {exc}")
    with admin:
        admin.execute(f'CREATE SCHEMA "{name}"')
        try:
            admin.execute(f'SET search_path TO "{name}"')
            yield admin, name
        finally:
            admin.execute(f'DROP SCHEMA "{name}" CASCADE')


def drain_budget() -> dict[str, str]:
    """knob -> value: the drain budget table of docs/deploy.md, the one place it is stated
    (Envoy's health checks on authz, AUTHZ_DRAIN, preStop, grace periods)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text()
    section = text[text.index("### Drain budget") :]
    section = section[: section.index("\n###")]
    return dict(re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|", section, re.M))


def seconds(value: Any) -> float:
    """A duration as the configs write it (`1s`, `0.5s`) or a bare number (of seconds)."""
    from authz.durations import parse_duration

    text = str(value)
    return float(text) if re.fullmatch(r"-?[0-9.]+", text) else parse_duration(text)
