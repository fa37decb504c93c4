"""`authz validate`: every problem in one run, and `--connect` against a real SQLite file."""

from __future__ import annotations

import sqlite3

import pytest

from authz.cli import main

SECRET = "0123456789abcdef0123456789abcdef-val"
GOOD = """
project: blog
auth: {secrets: [{alg: HS256, secret: "SECRET", primary: true}]}
databases:
  main: {type: sqlite, path: blog.db}
services:
  posts:
    endpoints:
      get:
        method: GET
        path: /posts/{id}
        rule:
          rule: query
          db: main
          col: posts
          find: {id: args.pathParams.id, owner: args.auth.id}
""".replace("SECRET", SECRET)

FIVE = """
project: blog
auth: {secrets: [{alg: HS256, secret: "${UNSET_BLOG_SECRET}", primary: true}]}
databases:
  main: {type: sqlite, path: blog.db}
services:
  posts:
    endpoints:
      get:
        method: GET
        path: /posts/{id}
        rule:
          rule: or
          clauses:
            - {rule: match, type: string, eval: "=>", f1: args.auth.role, f2: admin}
            - {rule: query, db: main, col: postz, find: {id: args.pathParams.id}}
      list:
        method: GET
        path: /posts
        rule: {rule: query, db: blogdb, col: posts, find: {owner: args.auth.id}}
      update:
        method: PATCH
        path: /posts/{id}
        rule:
          rule: query
          db: main
          col: posts
          find: {id: args.pathParams.id, ownr: args.auth.id, title: 5}
      delete:
        method: DELETE
        path: /posts/{id}
        timeout: 5s
        rule: {rule: authenticated}
"""


@pytest.fixture
def blog(tmp_path, monkeypatch):
    monkeypatch.delenv("UNSET_BLOG_SECRET", raising=False)
    conn = sqlite3.connect(tmp_path / "blog.db")
    conn.execute("CREATE TABLE posts (id INTEGER PRIMARY KEY, owner TEXT, title TEXT)")
    conn.commit()
    conn.close()
    return tmp_path


def _run(path, *flags, capsys) -> tuple[int, str, str]:
    code = main(["validate", "--config", str(path), *flags])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_problem_in_one_run(blog, capsys):
    (blog / "five.yaml").write_text(FIVE)
    code, _, err = _run(blog / "five.yaml", capsys=capsys)
    assert code == 2
    lines = [line.strip() for line in err.splitlines()[1:]]
    assert lines == [
        "auth.secrets[0].secret: environment variable UNSET_BLOG_SECRET is not set",
        "services.posts.endpoints.get.rule.clauses[0].eval: unknown operator '=>'",
        "services.posts.endpoints.delete: unknown key 'timeout'",
        "services.posts.endpoints.list.rule.db: unknown database alias 'blogdb' (databases: main)",
    ]  # the empty secret left by the unset variable is not reported again


def test_connect_adds_tables_columns_and_types(blog, capsys):
    (blog / "five.yaml").write_text(FIVE)
    code, _, err = _run(blog / "five.yaml", "--connect", capsys=capsys)
    assert code == 2
    get = "services.posts.endpoints.get.rule.clauses[1]"
    assert f"{get}.col: no table 'postz' in the sqlite datastore main" in err
    assert "services.posts.endpoints.update.rule.find.ownr: table posts has no column 'ownr'" in err
    assert "find.title: number value never matches column posts.title (string)" in err
    assert "unknown operator '=>'" in err  # the file's own problems are still there


def test_connect_passes_a_right_file_and_says_what_it_checked(blog, capsys):
    (blog / "good.yaml").write_text(GOOD)
    code, out, _ = _run(blog / "good.yaml", "--connect", capsys=capsys)
    assert code == 0 and "1 tables checked" in out


def test_connect_reports_a_datastore_it_cannot_open(blog, capsys):
    (blog / "good.yaml").write_text(GOOD.replace("blog.db", "nowhere/blog.db"))
    assert _run(blog / "good.yaml", capsys=capsys)[0] == 0  # without --connect: not looked at
    code, _, err = _run(blog / "good.yaml", "--connect", capsys=capsys)
    assert code == 2 and "databases.main: cannot connect to the sqlite datastore" in err


def test_a_file_that_is_not_yaml_is_one_problem(tmp_path, capsys):
    (tmp_path / "x.yaml").write_text("project: [unclosed\n")
    code, _, err = _run(tmp_path / "x.yaml", capsys=capsys)
    assert code == 2 and "invalid YAML/JSON" in err
