"""The tables and columns query rules name: /readyz's report, and --explain's mismatch."""

from __future__ import annotations

import sqlite3

import jwt

from authz.authorizer import Authorizer
from authz.checkfile import to_request
from authz.config.load import load_config_text
from authz.explain import explain_lines
from authz.server import AuthzServer, ServeOptions

SECRET = "0123456789abcdef0123456789abcdef-sch"
CONFIG = f"""
project: blog
auth: {{secrets: [{{alg: HS256, secret: "{SECRET}", primary: true}}]}}
databases:
  main: {{type: sqlite, path: blog.db}}
services:
  posts:
    endpoints:
      get:
        method: GET
        path: /posts/{{id}}
        rule: {{rule: query, db: main, col: posts, find: {{id: args.pathParams.id}}}}
      mine:
        method: GET
        path: /mine/{{id}}
        rule: {{rule: query, db: main, col: posts, find: {{id: args.auth.id}}}}
"""


def _authorizer(tmp_path) -> Authorizer:
    return Authorizer(load_config_text(CONFIG, base_dir=tmp_path))


def _create_posts(tmp_path) -> None:
    conn = sqlite3.connect(tmp_path / "blog.db")
    conn.execute("CREATE TABLE IF NOT EXISTS posts (id INTEGER PRIMARY KEY, owner TEXT)")
    conn.execute("INSERT OR IGNORE INTO posts VALUES (1, 'alice')")
    conn.commit()
    conn.close()


async def test_readyz_reports_a_missing_table_without_flipping_readiness(tmp_path):
    sqlite3.connect(tmp_path / "blog.db").close()  # the file, without the table
    authorizer = _authorizer(tmp_path)
    await authorizer.runtime.start()
    try:
        server = AuthzServer(ServeOptions(config="unused"))
        server.authorizer = authorizer
        ready, body = server.readiness()
        assert ready is True
        assert body["datastore:main"] == "ok"
        assert body["tables"] == [
            f"services.posts.endpoints.{e}.rule.col: no table 'posts' in the sqlite datastore main"
            for e in ("get", "mine")
        ]
        _create_posts(tmp_path)
        await authorizer.runtime._check_schema()  # what the ping loop does every few seconds
        assert "tables" not in server.readiness()[1]
    finally:
        await authorizer.runtime.close()


async def test_an_unreachable_datastore_does_not_flip_readiness(tmp_path):
    config = CONFIG.replace("blog.db", "missing/blog.db")
    authorizer = Authorizer(load_config_text(config, base_dir=tmp_path))
    await authorizer.runtime.start()
    try:
        server = AuthzServer(ServeOptions(config="unused"))
        server.authorizer = authorizer
        ready, body = server.readiness()
        assert ready is True and body["datastore:main"] == "unreachable"
        assert "tables" not in body  # not known yet: checked once it can be reached
        server.draining = True
        assert server.readiness()[0] is False
    finally:
        await authorizer.runtime.close()


async def test_explain_says_when_a_value_cannot_match_its_column(tmp_path):
    _create_posts(tmp_path)
    authorizer = _authorizer(tmp_path)
    await authorizer.runtime.start()
    token = jwt.encode({"id": "alice"}, SECRET, algorithm="HS256")
    headers = {"authorization": f"Bearer {token}"}
    try:
        mine = await authorizer.check(
            to_request({"method": "GET", "path": "/mine/1", "headers": headers}, 0), trace=True
        )
        text = "\n".join(explain_lines(mine))
        assert "find.id: a string value never matches column id (number)" in text
        get = await authorizer.check(
            to_request({"method": "GET", "path": "/posts/1", "headers": headers}, 0), trace=True
        )
        assert get.allowed  # "1" is the number 1 on SQL
        other = await authorizer.check(
            to_request({"method": "GET", "path": "/posts/2", "headers": headers}, 0), trace=True
        )
        assert "never matches" not in "\n".join(explain_lines(other))  # "2" could have matched
    finally:
        await authorizer.runtime.close()


async def test_explain_on_a_503_shows_what_ran_and_where_it_failed(tmp_path):
    config = CONFIG.replace(
        "rule: {rule: query, db: main, col: posts, find: {id: args.pathParams.id}}",
        "rule: {rule: and, clauses: [{rule: match, type: string, eval: '==', f1: args.auth.role,"
        " f2: admin}, {rule: query, db: main, col: posts, find: {id: args.pathParams.id}}]}",
    )
    authorizer = Authorizer(load_config_text(config, base_dir=tmp_path / "none"))
    await authorizer.runtime.start()
    token = jwt.encode({"id": "a", "role": "admin"}, SECRET, algorithm="HS256")
    item = {"method": "GET", "path": "/posts/1", "headers": {"authorization": f"Bearer {token}"}}
    try:
        decision = await authorizer.check(to_request(item, 0), trace=True)
    finally:
        await authorizer.runtime.close()
    assert decision.status == 503
    endpoint = authorizer.endpoints[0].rule
    text = "\n".join(explain_lines(decision, endpoint))
    assert "none evaluated" not in text
    lines = text.splitlines()
    assert any(line.strip().startswith("PASS  clauses[0]: match") for line in lines), text
    failed = next(line for line in lines if "clauses[1]: query" in line)
    assert failed.strip().startswith("ERROR") and "503: datastore main" in failed, text
    root = next(line for line in lines if "services.posts.endpoints.get.rule: and" in line)
    assert root.strip().startswith("ERROR") and "stopped by clauses[1] (503)" in root, text
