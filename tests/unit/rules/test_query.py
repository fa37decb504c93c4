"""The `query` rule: load-time checks, value slots (injection), store, clause, cache, errors,
and the seeds' Instagram rule end to end on SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from authz.config.databases import SqliteSettings
from authz.config.load import load_config_text
from authz.config.schema import QueryRule
from authz.datastores.factory import create_datastore
from authz.datastores.memory import MemoryDatastore
from authz.errors import ConfigError, DependencyError
from authz.rules.base import Context
from authz.rules.compiler import compile_or_raise, compile_rule
from authz.rules.compiling import CompileContext

CONFIG = load_config_text("project: t\ndatabases:\n  main: {type: sqlite, path: x.db}\n")
FOLLOWERS = [
    {"userId": "bob", "followerId": "alice"},
    {"userId": "carol", "followerId": "bob"},
]


def _rule(raw, config=CONFIG):
    model = QueryRule.model_validate({"rule": "query", "db": "main", "col": "followers", **raw})
    rule, _ = compile_or_raise(model, "rule", config)
    return rule


def _errors(raw, config=CONFIG) -> list[str]:
    model = QueryRule.model_validate({"rule": "query", "db": "main", "col": "followers", **raw})
    cc = CompileContext(config=config)
    compile_rule(model, cc, "rule")
    return cc.errors


def _ctx(store=None, params=None, auth=None, **extra):
    store = store if store is not None else MemoryDatastore("main", {"followers": FOLLOWERS})
    runtime = SimpleNamespace(datastores={"main": store}, http=None, identity=None, metrics=None)
    args = {"params": params or {}, "auth": auth or {"id": "alice"}, **extra}
    return Context(args, runtime)


FOLLOWS = {"find": {"userId": "args.params.userId", "followerId": "args.auth.id"}}

# --- load time ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "where", "what"),
    [
        ({"db": "nope"}, "rule.db", "unknown database alias 'nope'"),
        ({"col": "t;drop"}, "rule.col", "invalid collection"),
        ({"find": {"$where": "1"}}, "rule.find.$where", "unknown operator"),
        ({"find": {"a": {"$regex": ".*"}}}, "rule.find.a.$regex", "unknown operator"),
        ({"find": {"a": {"$foo": 1}}}, "rule.find.a.$foo", "unknown operator"),
        ({"find": {"a)": 1}}, "rule.find.a)", "invalid field name"),
        ({"find": {"a'--": 1}}, "rule.find.a'--", "invalid field name"),
        ({"find": {"a": [1]}}, "rule.find.a", "use {$in"),
        ({"find": {"a": {"b": 1}}}, "rule.find.a", "dotted field names"),
        ({"find": {"$or": []}}, "rule.find.$or", "non-empty list"),
        ({"find": {"a": {"$in": "x"}}}, "rule.find.a.$in", "must be a list"),
        ({"find": {"a": {"$exists": "yes"}}}, "rule.find.a.$exists", "true or false"),
        ({"find": {"a": {"$eq": {"$ne": None}}}}, "rule.find.a.$eq", "not a scalar"),
        ({"find": {"a": "args."}}, "rule.find.a", "invalid reference"),
        ({"store": "args.auth.x"}, "rule.store", "cannot store results under args.auth"),
        ({"store": "result"}, "rule.store", "must be a path"),
        ({"clause": {"rule": "match", "eval": "=>", "type": "number", "f1": 1, "f2": 1}}, "", ""),
    ],
)
def test_config_errors(raw, where, what):
    if "clause" in raw:  # schema errors come from pydantic, before compiling
        with pytest.raises(Exception, match="=>"):
            _errors(raw)
        return
    errors = _errors(raw)
    assert any(e.startswith(where + ":") and what in e for e in errors), errors


def test_valid_rule_compiles_without_errors():
    raw = {
        "find": {
            "userId": "args.params.userId",
            "age": {"$gte": 18, "$lt": "args.params.max"},
            "$or": [{"role": {"$in": ["a", "args.auth.role"]}}, {"deleted": {"$exists": False}}],
        },
        "store": "args.found.rows",
        "cache": {"ttl": "30s"},
        "clause": {"rule": "allow"},
    }
    assert _errors(raw) == []


def test_alias_not_checked_without_config():
    assert _errors({"db": "anything"}, config=None) == []


# --- evaluation --------------------------------------------------------------------------


async def test_pass_and_fail_without_clause():
    rule = _rule(FOLLOWS)
    ctx = _ctx(params={"userId": "bob"})
    assert await rule.evaluate(ctx) is None
    assert ctx.args["result"] == [{"userId": "bob", "followerId": "alice"}]
    ctx = _ctx(params={"userId": "carol"})
    failure = await rule.evaluate(ctx)
    assert failure is not None and not failure.error
    assert ctx.args["result"] == []


@pytest.mark.parametrize(
    "value",
    [{"$ne": None}, {"$gt": ""}, {"$regex": ".*"}, {"$where": "1"}, ["bob"], {"a": 1}, 1 << 70],
)
async def test_injection_fails_before_the_datastore(value):
    store = MemoryDatastore("main", {"followers": FOLLOWERS})
    failure = await _rule(FOLLOWS).evaluate(_ctx(store, params={"userId": value}))
    assert failure is not None and failure.error
    assert "rule.find.userId" in failure.reason
    assert store.finds == []


async def test_request_strings_are_literals():
    store = MemoryDatastore("main", {"followers": FOLLOWERS})
    ctx = _ctx(store, params={"userId": "args.auth.id"})
    assert await _rule(FOLLOWS).evaluate(ctx) is not None
    assert store.finds == [("followers", {"userId": "args.auth.id", "followerId": "alice"})]


async def test_unresolved_reference_is_an_error():
    store = MemoryDatastore("main", {"followers": FOLLOWERS})
    failure = await _rule(FOLLOWS).evaluate(_ctx(store, params={}))
    assert failure is not None and failure.error and "does not resolve" in failure.reason
    assert store.finds == []


async def test_in_takes_a_list_of_scalars_from_the_request():
    rule = _rule({"find": {"userId": {"$in": "args.params.ids"}}})
    assert await rule.evaluate(_ctx(params={"ids": ["x", "bob"]})) is None
    failure = await rule.evaluate(_ctx(params={"ids": ["bob", {"$ne": None}]}))
    assert failure is not None and failure.error
    failure = await rule.evaluate(_ctx(params={"ids": "bob"}))
    assert failure is not None and failure.error
    items = _rule({"find": {"userId": {"$nin": ["args.params.a", "carol"]}}})
    assert await items.evaluate(_ctx(params={"a": "bob"})) is not None
    failure = await items.evaluate(_ctx(params={"a": ["bob"]}))
    assert failure is not None and failure.error


async def test_claims_may_be_lists_for_in():
    rule = _rule({"find": {"userId": {"$in": "args.auth.teams"}}})
    assert await rule.evaluate(_ctx(auth={"teams": ["carol"]})) is None


async def test_clause_sees_the_stored_result():
    rule = _rule(
        {
            **FOLLOWS,
            "store": "args.found.rows",
            "error": "not a follower",
            "clause": {
                "rule": "match",
                "type": "number",
                "eval": ">=",
                "f1": "utils.length(args.found.rows)",
                "f2": 1,
            },
        }
    )
    ctx = _ctx(params={"userId": "bob"})
    assert await rule.evaluate(ctx) is None
    assert ctx.args["found"]["rows"][0]["followerId"] == "alice"
    failure = await rule.evaluate(_ctx(params={"userId": "nobody"}))
    assert failure is not None and failure.message == "not a follower"


async def test_cache_by_filled_filter():
    store = MemoryDatastore("main", {"followers": FOLLOWERS})
    rule = _rule({**FOLLOWS, "cache": {"ttl": "0.2s"}})
    for _ in range(3):
        ctx = _ctx(store, params={"userId": "bob"})
        assert await rule.evaluate(ctx) is None
        ctx.args["result"].append("mutated")  # must not leak into the cache
    assert len(store.finds) == 1
    assert await rule.evaluate(_ctx(store, params={"userId": "carol"})) is not None
    assert len(store.finds) == 2
    await asyncio.sleep(0.3)
    ctx = _ctx(store, params={"userId": "bob"})
    assert await rule.evaluate(ctx) is None
    assert len(store.finds) == 3 and ctx.args["result"] == [FOLLOWERS[0]]


async def test_cache_keys_are_type_exact():
    store = MemoryDatastore("main", {"followers": [{"userId": 1}]})
    rule = _rule({"find": {"userId": "args.params.u"}, "cache": {"ttl": "30s"}})
    assert await rule.evaluate(_ctx(store, params={"u": 1})) is None
    assert await rule.evaluate(_ctx(store, params={"u": True})) is not None


async def test_missing_datastore_is_a_dependency_error():
    ctx = Context(
        {"params": {"userId": "bob"}, "auth": {"id": "a"}},
        SimpleNamespace(datastores={}, metrics=None),
    )
    with pytest.raises(DependencyError):
        await _rule(FOLLOWS).evaluate(ctx)


async def test_failing_datastore_is_a_dependency_error(tmp_path):
    store = create_datastore("main", SqliteSettings(type="sqlite", path="none.db"), tmp_path)
    await store.open()
    try:
        with pytest.raises(DependencyError):
            await _rule(FOLLOWS).evaluate(_ctx(store, params={"userId": "bob"}))
    finally:
        await store.close()


# --- the seeds' Instagram rule, as documented in authz/datastores/examples ----------------

EXAMPLES = Path(__file__).resolve().parents[3] / "authz" / "datastores" / "examples"


@pytest.fixture
async def instagram(tmp_path):
    (tmp_path / "data").mkdir()
    conn = sqlite3.connect(tmp_path / "data" / "app.db")
    conn.executescript((EXAMPLES / "instagram.sql").read_text())
    conn.close()
    raw = yaml.safe_load((EXAMPLES / "instagram.yaml").read_text())
    config = load_config_text(yaml.safe_dump({"project": "demo", **raw}), base_dir=tmp_path)
    endpoint = config.services["social"].endpoints["profile"]
    rule, _ = compile_or_raise(endpoint.rule, "services.social.endpoints.profile.rule", config)
    store = create_datastore("main", config.databases["main"], config.base_dir)
    await store.open()
    yield rule, SimpleNamespace(datastores={"main": store}, http=None, identity=None, metrics=None)
    await store.close()


@pytest.mark.parametrize(
    ("caller", "profile", "allowed"),
    [
        ("alice", "bob", True),  # follows bob
        ("bob", "alice", True),  # alice is public
        ("carol", "bob", False),  # private, not a follower
        ("alice", "carol", False),
        ("carol", "carol", True),  # the owner
        ("bob", "nobody", False),
    ],
)
async def test_instagram_rule(instagram, caller, profile, allowed):
    rule, runtime = instagram
    ctx = Context({"auth": {"id": caller}, "pathParams": {"profileId": profile}}, runtime)
    failure = await rule.evaluate(ctx)
    assert (failure is None) is allowed
    if not allowed:
        assert failure.message == "this profile is private"


async def test_instagram_rule_refuses_an_undeclared_alias():
    raw = yaml.safe_load((EXAMPLES / "instagram.yaml").read_text())
    raw["databases"] = {"other": {"type": "sqlite", "path": "x.db"}}
    config = load_config_text(yaml.safe_dump({"project": "demo", **raw}))
    endpoint = config.services["social"].endpoints["profile"]
    with pytest.raises(ConfigError, match=r"clauses\[1\]\.db: unknown database alias 'main'"):
        compile_or_raise(endpoint.rule, "services.social.endpoints.profile.rule", config)


async def test_cache_and_datastore_metrics():
    from authz.observability.metrics import Metrics

    metrics = Metrics()
    store = MemoryDatastore("main", {"followers": FOLLOWERS})
    store.metrics = metrics.datastore("main")
    rule = _rule({**FOLLOWS, "cache": {"ttl": "30s"}})
    for _ in range(3):
        ctx = _ctx(store, params={"userId": "bob"})
        ctx.runtime.metrics = metrics
        assert await rule.evaluate(ctx) is None
    text = metrics.render().decode()
    assert 'authz_cache_hits_total{cache="query"} 2.0' in text
    assert 'authz_cache_misses_total{cache="query"} 1.0' in text
    assert 'authz_datastore_duration_seconds_count{alias="main"} 1.0' in text


@pytest.mark.parametrize(
    ("post", "allowed"),
    [("1", True), ("2", False), ("01", False), ("1.0", False), ("x", False)],
)
async def test_a_path_parameter_matches_an_integer_key(tmp_path, post, allowed):
    """`/posts/{id}` fills a string; on SQL a canonical decimal string matches an INTEGER
    column as the number it spells (and only that one spelling)."""
    conn = sqlite3.connect(tmp_path / "x.db")
    conn.executescript(
        "CREATE TABLE posts (id INTEGER PRIMARY KEY, owner TEXT);"
        "INSERT INTO posts VALUES (1, 'alice'), (2, 'bob');"
    )
    conn.commit()
    conn.close()
    config = load_config_text(
        "project: t\ndatabases:\n  main: {type: sqlite, path: x.db}\n", base_dir=tmp_path
    )
    model = QueryRule.model_validate(
        {"rule": "query", "db": "main", "col": "posts",
         "find": {"id": "args.pathParams.id", "owner": "args.auth.id"}}
    )  # fmt: skip
    rule, _ = compile_or_raise(model, "rule", config)
    store = create_datastore("main", config.databases["main"], config.base_dir)
    await store.open()
    try:
        runtime = SimpleNamespace(datastores={"main": store}, http=None, identity=None)
        ctx = Context({"auth": {"id": "alice"}, "pathParams": {"id": post}}, runtime)
        assert (await rule.evaluate(ctx) is None) is allowed
    finally:
        await store.close()
