"""The example's SQLite data (scripts/run.py, shared with the integration harness): where the
file is (relative to the config file, whatever the working directory), seeding that never
loses data, and the seeded rows answering the Instagram rule's queries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import authz.config  # noqa: F401  (loads the schema before the settings models)
from authz.config.databases import SqliteSettings
from authz.datastores.factory import create_datastore
from scripts.run import CONFIG, EXAMPLE_SQL, ROOT, RunError, seed_sqlite, sqlite_files

SECRET = "unit-tests-secret-0123456789abcdef0123"
AES_KEY = "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="
ENV = {"AUTHZ_SECRET": SECRET, "AUTHZ_AES_KEY": AES_KEY}


def _tables(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: conn.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in names}
    finally:
        conn.close()


# --- where the file is -------------------------------------------------------------------


def _config(path: Path, db_path: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "project: p\n"
        "auth: {secrets: [{alg: HS256, secret: '${AUTHZ_SECRET}', primary: true}]}\n"
        f"databases:\n  main: {{type: sqlite, path: '{db_path}'}}\n"
        "  pg: {type: postgres, dsn: 'postgresql://x@127.0.0.1:1/x'}\n"
    )
    return path


def test_a_relative_sqlite_path_is_relative_to_the_config_file(tmp_path, monkeypatch):
    config = _config(tmp_path / "conf" / "authz.yaml", "data/app.db")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert sqlite_files(ENV, config) == [tmp_path / "conf" / "data" / "app.db"]


def test_an_absolute_sqlite_path_and_env_substitution(tmp_path, monkeypatch):
    config = _config(tmp_path / "conf" / "authz.yaml", "${DIR:-../data}/app.db")
    monkeypatch.chdir(tmp_path / "conf")
    assert sqlite_files(ENV, config) == [tmp_path / "data" / "app.db"]
    absolute = tmp_path / "abs"
    assert sqlite_files({**ENV, "DIR": str(absolute)}, config) == [absolute / "app.db"]


def test_the_datastore_opens_the_same_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = create_datastore(
        "main", SqliteSettings(type="sqlite", path="x/app.db", timeout=5), ROOT
    )
    assert store.path == ROOT / "x" / "app.db"


def test_the_example_database_is_data_app_db_or_under_authz_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sqlite_files(ENV, CONFIG) == [ROOT / "data" / "app.db"]
    assert sqlite_files({**ENV, "AUTHZ_DATA_DIR": str(tmp_path)}, CONFIG) == [tmp_path / "app.db"]
    assert list(tmp_path.iterdir()) == []  # resolving creates nothing


def test_an_invalid_config_is_a_run_error(tmp_path):
    with pytest.raises(RunError, match="AUTHZ_SECRET"):
        sqlite_files({}, _config(tmp_path / "c.yaml", "app.db"))


# --- seeding -----------------------------------------------------------------------------


def test_seeds_a_new_file_and_its_directory(tmp_path):
    db = tmp_path / "new" / "dir" / "app.db"
    assert seed_sqlite(db) is True
    assert _tables(db) == {"profiles": 3, "followers": 2}


def test_a_seeded_file_is_left_alone(tmp_path):
    db = tmp_path / "app.db"
    seed_sqlite(db)
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO profiles VALUES ('dave', 'Dave', 1)")
    conn.execute("DELETE FROM followers")
    conn.commit()
    conn.close()
    assert seed_sqlite(db) is False
    assert _tables(db) == {"profiles": 4, "followers": 0}


def test_adds_the_tables_to_a_database_without_them(tmp_path):
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes (id INTEGER)")
    conn.execute("INSERT INTO notes VALUES (1)")
    conn.commit()
    conn.close()
    assert seed_sqlite(db) is True
    assert _tables(db) == {"notes": 1, "profiles": 3, "followers": 2}


def test_some_of_the_tables_is_an_error_and_changes_nothing(tmp_path):
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE profiles (userId TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(RunError, match="lacks the tables followers"):
        seed_sqlite(db)
    assert _tables(db) == {"profiles": 0}


def test_a_file_that_is_not_sqlite_is_an_error_and_kept(tmp_path):
    db = tmp_path / "app.db"
    db.write_bytes(b"precious user data, not a database" * 100)
    with pytest.raises(RunError, match="cannot seed"):
        seed_sqlite(db)
    assert db.read_bytes() == b"precious user data, not a database" * 100


def test_a_failing_script_leaves_no_partial_tables(tmp_path):
    script = tmp_path / "bad.sql"
    script.write_text("CREATE TABLE a (x INTEGER);\nINSERT INTO nowhere VALUES (1);\n")
    db = tmp_path / "app.db"
    with pytest.raises(RunError, match="no such table: nowhere"):
        seed_sqlite(db, script)
    assert _tables(db) == {}


async def test_the_seeded_rows_answer_the_instagram_queries(tmp_path):
    db = tmp_path / "app.db"
    seed_sqlite(db, EXAMPLE_SQL)
    store = create_datastore(
        "main", SqliteSettings(type="sqlite", path=str(db), timeout=5), tmp_path
    )
    await store.open()
    try:
        public = await store.find("profiles", {"isPublic": True}, 10)
        assert [p["userId"] for p in public] == ["alice"]
        assert await store.find("followers", {"userId": "bob", "followerId": "alice"}, 1)
        assert not await store.find("followers", {"userId": "bob", "followerId": "u1"}, 1)
    finally:
        await store.close()
