"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest


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
