"""deploy/compose/postgres-init.sql on the real PostgreSQL: the role authz logs in as reads
the demo tables and can change nothing (no writes, no DDL, no new tables)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.helpers import PG

psycopg = pytest.importorskip("psycopg")

INIT_SQL = Path(__file__).resolve().parents[2] / "deploy" / "compose" / "postgres-init.sql"


@pytest.fixture
def initialised() -> tuple[str, str]:
    """(database, role): the init script run by psql, as the postgres image runs it, into a
    fresh database; its role renamed so parallel runs do not meet. Both dropped after."""
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql not installed")
    suffix = uuid.uuid4().hex[:10]
    db, role = f"authz_init_{suffix}", f"authz_ro_{suffix}"
    try:
        admin = psycopg.connect(PG, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG}: {exc}")
    sql = re.sub(r"\bauthz\b", role, INIT_SQL.read_text()).replace("DATABASE app", f"DATABASE {db}")
    admin.execute(f"CREATE DATABASE {db}")
    try:
        out = subprocess.run(
            [psql, "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-q"],
            input=sql, capture_output=True, text=True, timeout=60,
            env={**os.environ, "POSTGRES_AUTHZ_PASSWORD": "pw-" + suffix},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        yield db, role
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()


def test_the_authz_role_reads_and_changes_nothing(initialised: tuple[str, str]) -> None:
    db, role = initialised
    dsn = f"postgresql://{role}@127.0.0.1:5432/{db}"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
        owners = conn.execute("SELECT owner FROM orders WHERE id = 'o-1'").fetchall()
        assert owners == [("u1",)]
        writes = (
            "INSERT INTO orders (id, owner, item) VALUES ('x', 'u9', 'y')",
            "UPDATE orders SET owner = 'u9'",
            "DELETE FROM orders",
            "CREATE TABLE public.mine (id int)",
        )
        for statement in writes:  # the role's sessions are read-only ...
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute(statement)
        conn.execute("SET default_transaction_read_only = off")
        for statement in writes:  # ... and it lacks the privileges anyway
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        attrs = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s",
            (role,),
        ).fetchone()
        assert attrs == (False, False, False)
