"""Tables of the authz-query scenarios (the seeds' Instagram example), in SQLite and in
PostgreSQL. Profile p<odd> is public; u1 follows the private p2 but not p4."""

from __future__ import annotations

import sqlite3
from pathlib import Path

PROFILES = 1000
TABLES = ("bench_profiles", "bench_followers")


def _rows() -> tuple[list[tuple[str, bool]], list[tuple[str, str]]]:
    profiles = [(f"p{i}", i % 2 == 1) for i in range(PROFILES)]
    # Filler followers (user ids u10 and up) so that the lookups use the indexes.
    followers = [
        (f"p{i}", f"u{10 + (i * 7 + k) % 1000}") for i in range(PROFILES) for k in range(5)
    ]
    followers.append(("p2", "u1"))
    return profiles, followers


_DDL = [
    'CREATE TABLE bench_profiles ("userId" TEXT PRIMARY KEY, "isPublic" BOOLEAN NOT NULL)',
    'CREATE TABLE bench_followers ("userId" TEXT NOT NULL, "followerId" TEXT NOT NULL)',
    'CREATE INDEX bench_followers_user ON bench_followers ("userId", "followerId")',
]


def seed_sqlite(path: Path, journal: str = "wal") -> None:
    """The tables in a fresh SQLite file, in `journal` mode: WAL as the README recommends,
    or "delete" (SQLite's default rollback journal) for comparison."""
    profiles, followers = _rows()
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA journal_mode = {journal}")
        for table in TABLES:
            db.execute(f"DROP TABLE IF EXISTS {table}")
        for ddl in _DDL:
            db.execute(ddl)
        db.executemany("INSERT INTO bench_profiles VALUES (?, ?)", profiles)
        db.executemany("INSERT INTO bench_followers VALUES (?, ?)", followers)
    db.close()


def seed_postgres(dsn: str) -> None:
    import psycopg  # an authz dependency

    profiles, followers = _rows()
    with psycopg.connect(dsn, connect_timeout=3) as db:
        for table in TABLES:
            db.execute(f"DROP TABLE IF EXISTS {table}")
        for ddl in _DDL:
            db.execute(ddl)
        with db.cursor() as cur:
            cur.executemany("INSERT INTO bench_profiles VALUES (%s, %s)", profiles)
            cur.executemany("INSERT INTO bench_followers VALUES (%s, %s)", followers)


def drop_postgres(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, connect_timeout=3) as db:
        for table in TABLES:
            db.execute(f"DROP TABLE IF EXISTS {table}")
