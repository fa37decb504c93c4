"""MongoDB backend at the wire level: the real PyMongo async client against mockupdb.

The tests assert the exact `find` command the server receives, the decisions taken from
scripted replies, and that an operator-injection attempt never reaches the server."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from bson import ObjectId
from mockupdb import MockupDB

import authz.config  # noqa: F401  (loads the schema before the settings models)
from authz.config.databases import MongoSettings
from authz.config.schema import QueryRule
from authz.datastores.factory import create_datastore
from authz.errors import DependencyError
from authz.rules.base import Context
from authz.rules.compiler import compile_or_raise
from tests.helpers import free_port

HELLO = {"ismaster": True, "minWireVersion": 0, "maxWireVersion": 21}


@pytest.fixture
def server():
    srv = MockupDB(port=free_port(), auto_ismaster=HELLO, request_timeout=5)
    srv.run()
    yield srv
    srv.stop()


@pytest.fixture
async def store(server):
    uri = f"mongodb://127.0.0.1:{server.port}/?directConnection=true"
    ds = create_datastore("mongo", MongoSettings(type="mongo", uri=uri, database="app", timeout=2))
    await ds.open()
    yield ds
    await ds.close()


def _answer(server, reply=None, error=None, hang=False):
    """Receive the next `find` (bounded wait) and answer it; returns its command document."""
    while True:
        request = server.receives(timeout=5)
        if "find" not in request.doc:
            request.replies({"ok": 1})
            continue
        if hang:
            return request.doc
        if error is not None:
            request.command_err(code=2, errmsg=error)
        else:
            ns = f"app.{request.doc['find']}"
            request.replies({"cursor": {"id": 0, "ns": ns, "firstBatch": reply or []}})
        return request.doc


async def _with_server(coro, server, **answer):
    task = asyncio.ensure_future(coro)
    doc = await asyncio.to_thread(_answer, server, **answer)
    try:
        return doc, await task
    except BaseException:
        task.cancel()
        raise


async def test_find_sends_the_exact_filter(store, server):
    oid = ObjectId("64b7f0c2a1b2c3d4e5f60718")
    filter = {"userId": "u1", "age": {"$gte": 18, "$lt": 65}, "$or": [{"a": None}, {"b": oid}]}
    doc, rows = await _with_server(
        store.find("followers", filter, 7), server, reply=[{"_id": oid, "userId": "u1"}]
    )
    assert doc["find"] == "followers"
    assert doc["$db"] == "app"
    assert doc["limit"] == 7
    assert doc["filter"] == filter
    assert rows == [{"_id": oid, "userId": "u1"}]


async def test_server_error_is_a_dependency_error(store, server):
    with pytest.raises(DependencyError):
        await _with_server(store.find("followers", {"a": 1}, 1), server, error="boom")


async def test_no_answer_hits_the_deadline(server):
    uri = f"mongodb://127.0.0.1:{server.port}/?directConnection=true"
    settings = MongoSettings(type="mongo", uri=uri, database="app", timeout=0.3)
    ds = create_datastore("mongo", settings)
    await ds.open()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(DependencyError):
            await _with_server(ds.find("followers", {"a": 1}, 1), server, hang=True)
        assert loop.time() - start < 3
    finally:
        await ds.close()


async def test_unreachable_server():
    uri = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
    ds = create_datastore("m", MongoSettings(type="mongo", uri=uri, database="app", timeout=0.2))
    await ds.open()
    try:
        with pytest.raises(DependencyError):
            await ds.find("followers", {}, 1)
        assert not await ds.ping()
    finally:
        await ds.close()


# --- through the query rule ----------------------------------------------------------------

FOLLOWS = {
    "rule": "query",
    "db": "mongo",
    "col": "followers",
    "find": {"userId": "args.params.profileId", "followerId": "args.auth.id"},
}


def _rule(raw):
    rule, _ = compile_or_raise(QueryRule.model_validate(raw), "rule")
    return rule


def _ctx(store, params, auth=None):
    runtime = SimpleNamespace(datastores={"mongo": store}, http=None, identity=None, metrics=None)
    return Context({"params": params, "auth": auth or {"id": "u2"}}, runtime)


async def test_rule_sends_request_values_as_scalars(store, server):
    rule = _rule(FOLLOWS)
    ctx = _ctx(store, {"profileId": "u1"})
    doc, failure = await _with_server(
        rule.evaluate(ctx), server, reply=[{"_id": 1, "userId": "u1", "followerId": "u2"}]
    )
    assert doc["filter"] == {"userId": "u1", "followerId": "u2"}
    assert failure is None
    assert ctx.args["result"] == [{"_id": 1, "userId": "u1", "followerId": "u2"}]


async def test_rule_fails_on_empty_result(store, server):
    rule = _rule(FOLLOWS)
    _, failure = await _with_server(rule.evaluate(_ctx(store, {"profileId": "u1"})), server)
    assert failure is not None and not failure.error


@pytest.mark.parametrize(
    "value",
    [{"$ne": None}, {"$gt": ""}, {"$regex": ".*"}, {"$where": "1"}, ["u1"], {"x": 1}],
)
async def test_operator_injection_never_reaches_the_server(store, server, value):
    before = server.requests_count
    failure = await _rule(FOLLOWS).evaluate(_ctx(store, {"profileId": value}))
    assert failure is not None and failure.error
    await asyncio.sleep(0.1)
    assert server.requests_count == before  # not even a connection's first command
