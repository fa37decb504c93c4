"""Datastore injection through the whole Check pipeline.

Row 14, operator injection: `{"$ne": null}`, `{"$gt": ""}`, `{"$regex": ".*"}` and
`{"$where": "1"}` arrive from every request source (JSON body params, query parameters,
headers, path parameters, token claims) into every value slot of a `query` rule (implicit
`$eq`, each comparison operator, `$in`/`$nin` as a whole list and as one item, `$exists`,
inside `$or` and `$and`), on SQLite, on the real PostgreSQL and on MongoDB (the real PyMongo
client against mockupdb). Sources that can carry an object (body, claims) are denied with a
type error before any datastore call; sources that only carry text (headers, path, query) can
at most send the attack as a string, a repeated key (a list) or `v[$ne]=` (another key), and
the decision then equals the reference evaluator's on that literal value. Every command that
reached a datastore is inspected: the SQL text holds no request data (only placeholders), the
MongoDB filter holds only the operators the config wrote, and request values only as strings.

Row 37, SQL translation safety: field and collection names with `)`, `;`, quotes, comment
markers in the config are rejected with the config path named; `$like` does not exist (only
`$eq $ne $gt $gte $lt $lte $in $nin $and $or $exists`, docs/rules.md), so `%` and `_` in values
match literally; `0`/`true` from a JSON body in a string slot match nothing (values of other
classes never compare equal, docs/rules.md / datastores/filters.py), while the text "0"/"true"
from a header matches the row holding that text.

Already covered elsewhere (not repeated): `$where`/`$regex`/`$foo` in the config and the four
attack values in the one `params` slot against the in-memory store (tests/unit/rules/
test_query.py), against mockupdb (tests/unit/datastores/test_mongo.py), the filter parser's
refusals (tests/unit/datastores/test_filters.py), `where()` putting values only in
placeholders (tests/unit/datastores/test_sqlite.py).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import jwt
import pytest
import yaml

import authz.datastores.postgres as pg_module
import authz.datastores.sqlite as sqlite_module
from authz.authorizer import Authorizer
from authz.config.load import load_config_text
from authz.datastores.filters import FilterError, matches, parse, value_problem
from authz.errors import ConfigError
from authz.request import Request
from authz.runtime import Runtime
from tests.helpers import free_port, pg_dsn, pg_schema

SECRET = "datastore-injection-tests-secret-0123456789"

ATTACKS: dict[str, Any] = {
    "$ne": {"$ne": None},
    "$gt": {"$gt": ""},
    "$regex": {"$regex": ".*"},
    "$where": {"$where": "1"},
}

# id, name, age: a successful injection ($ne null, $gt "", $regex .*) would match every row
ROWS: list[dict[str, Any]] = [
    {"id": 1, "name": "alice", "age": 30},
    {"id": 2, "name": "bob", "age": 17},
    {"id": 3, "name": "0", "age": 1},
    {"id": 4, "name": "true", "age": 2},
    {"id": 5, "name": "a%c", "age": 3},
    {"id": 6, "name": "abc", "age": 4},
    {"id": 7, "name": "a_c", "age": 5},
    {"id": 8, "name": "aXc", "age": 6},
    {"id": 9, "name": "O'Brien", "age": 7},
    {"id": 10, "name": "%", "age": 8},
    {"id": 11, "name": "a\\c", "age": 9},
]

# Every kind of value slot; `V` marks where the reference goes. The operators the config
# itself writes are listed: nothing else may reach MongoDB.
V = "\x00V"
SLOTS: dict[str, tuple[dict[str, Any], frozenset[str]]] = {
    "eq": ({"name": V}, frozenset()),
    "op-eq": ({"name": {"$eq": V}}, frozenset({"$eq"})),
    "op-ne": ({"name": {"$ne": V}}, frozenset({"$ne"})),
    "op-gt": ({"name": {"$gt": V}}, frozenset({"$gt"})),
    "op-gte": ({"name": {"$gte": V}}, frozenset({"$gte"})),
    "op-lt": ({"name": {"$lt": V}}, frozenset({"$lt"})),
    "op-lte": ({"name": {"$lte": V}}, frozenset({"$lte"})),
    "in-list": ({"name": {"$in": V}}, frozenset({"$in"})),
    "in-item": ({"name": {"$in": ["nobody", V]}}, frozenset({"$in"})),
    "nin-list": ({"name": {"$nin": V}}, frozenset({"$nin"})),
    "nin-item": ({"name": {"$nin": ["nobody", V]}}, frozenset({"$nin"})),
    "exists": ({"name": {"$exists": V}}, frozenset({"$exists"})),
    "or": ({"$or": [{"name": "nobody"}, {"name": V}]}, frozenset({"$or"})),
    "and": ({"$and": [{"age": {"$gte": 0}}, {"name": V}]}, frozenset({"$and", "$gte"})),
}
# the operator whose operand the request value is (an $in/$nin item is a scalar: $eq)
SLOT_OPERATOR = {
    "eq": "$eq", "op-eq": "$eq", "op-ne": "$ne", "op-gt": "$gt", "op-gte": "$gte",
    "op-lt": "$lt", "op-lte": "$lte", "in-list": "$in", "in-item": "$eq", "nin-list": "$nin",
    "nin-item": "$eq", "exists": "$exists", "or": "$eq", "and": "$eq",
}  # fmt: skip
SOURCES = {
    "body": "args.params.v",
    "query": "args.query.v",
    "header": "args.headers.x-v",
    "path": "args.pathParams.v",
    "claim": "args.auth.v",
}
MISSING = object()  # the reference does not resolve


def _fill(template: Any, value: Any) -> Any:
    if template == V:
        return value
    if isinstance(template, dict):
        return {k: _fill(v, value) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, value) for v in template]
    return template


def _endpoint_path(slot: str, source: str) -> str:
    return f"/q/{slot}/{source}" + ("/{v}" if source == "path" else "")


def config_text(databases: dict[str, Any], db: str) -> str:
    endpoints = {}
    for slot, (template, _) in SLOTS.items():
        for source, ref in SOURCES.items():
            endpoints[f"{slot}-{source}"] = {
                "method": "POST",
                "path": _endpoint_path(slot, source),
                "rule": {"rule": "query", "db": db, "col": "users", "find": _fill(template, ref)},
            }
    # row 37: exactly one row must match (a LIKE-style match of 'a%c' would find four)
    endpoints["literal"] = {
        "method": "POST",
        "path": "/literal",
        "rule": {
            "rule": "query", "db": db, "col": "users", "find": {"name": "args.params.v"},
            "clause": {"rule": "match", "type": "number", "eval": "==",
                       "f1": "utils.length(args.result)", "f2": 1},
        },
    }  # fmt: skip
    endpoints["literal-header"] = {
        **endpoints["literal"],
        "path": "/literal-header",
        "rule": {**endpoints["literal"]["rule"], "find": {"name": "args.headers.x-v"}},
    }
    doc = {
        "project": "injection",
        "auth": {
            "secrets": [{"alg": "HS256", "secret": SECRET, "primary": True}],
            "serviceToken": {"enabled": False},
        },
        "databases": databases,
        "services": {"s": {"endpoints": endpoints}},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def token(**claims: Any) -> str:
    return jwt.encode({"id": "caller", "exp": int(time.time()) + 600, **claims}, SECRET, "HS256")


# --- what an attack looks like once it has gone through its source -----------------------


@dataclass(frozen=True)
class Attempt:
    source: str
    form: str  # "object", "text", "list", "bracket"
    attack: str  # key of ATTACKS
    received: Any  # the value the rule reads (MISSING when the reference cannot resolve)
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def attempts(slot: str) -> Iterator[Attempt]:
    base = f"/q/{slot}"
    for name, value in ATTACKS.items():
        text = json.dumps(value)
        tok = token()
        # JSON body params and claims carry the object itself
        yield Attempt(
            "body",
            "object",
            name,
            value,
            f"{base}/body",
            (("authorization", f"Bearer {tok}"),),
            json.dumps({"v": value}).encode(),
        )
        yield Attempt(
            "claim",
            "object",
            name,
            value,
            f"{base}/claim",
            (("authorization", f"Bearer {token(v=value)}"),),
            b"",
        )
        # text-only sources: the attack as a string, as `v[$op]=...`, as a repeated key
        yield Attempt(
            "header",
            "text",
            name,
            text,
            f"{base}/header",
            (("authorization", f"Bearer {tok}"), ("x-v", text)),
            b"",
        )
        yield Attempt(
            "path",
            "text",
            name,
            text,
            f"{base}/path/{quote(text, safe='')}",
            (("authorization", f"Bearer {tok}"),),
            b"",
        )
        yield Attempt(
            "query",
            "text",
            name,
            text,
            f"{base}/query?{urlencode({'v': text})}",
            (("authorization", f"Bearer {tok}"),),
            b"",
        )
        op, operand = next(iter(value.items()))
        bracket = urlencode({f"v[{op}]": "" if operand is None else str(operand)})
        yield Attempt(
            "query",
            "bracket",
            name,
            MISSING,
            f"{base}/query?{bracket}",
            (("authorization", f"Bearer {tok}"),),
            b"",
        )
        yield Attempt("query", "list", name, [text, "alice"],
                      f"{base}/query?{urlencode([('v', text), ('v', 'alice')])}",
                      (("authorization", f"Bearer {tok}"),), b"")  # fmt: skip


def reference(slot: str, received: Any) -> tuple[bool, bool]:
    """(allowed, error) by the reference evaluator: the rule's filter with `received` in it."""
    if received is MISSING:
        return False, True
    # a request value is data: checked against its slot, never read as a filter
    if value_problem(SLOT_OPERATOR[slot], received):
        return False, True
    filter = _fill(SLOTS[slot][0], received)
    try:
        expr = parse(filter)
    except FilterError:
        return False, True
    return any(matches(row, expr) for row in ROWS), False


def request(a: Attempt) -> Request:
    headers = {**({"content-type": "application/json"} if a.body else {}), **dict(a.headers)}
    return Request.from_target("POST", a.target, headers=headers, body=a.body, request_id="inj")


# --- the three backends, each recording what reached it ----------------------------------


@dataclass
class Backend:
    name: str
    authorizer: Authorizer
    finds: list[dict[str, Any]]  # filters that reached the datastore
    sql: list[tuple[str, list[Any]]]  # SQL text and bound values (SQL backends)
    mongo: list[dict[str, Any]]  # `find` commands MongoDB received


async def _start(databases: dict[str, Any], db: str, tmp_path, monkeypatch) -> Backend:
    config = load_config_text(config_text(databases, db), base_dir=tmp_path)
    authorizer = Authorizer(config, Runtime(config))
    await authorizer.runtime.start()
    backend = Backend(db, authorizer, [], [], [])
    store = authorizer.runtime.datastores[db]
    inner = store.find_template

    async def recording_find(col, template, values, limit):
        backend.finds.append(template.build(values)[0])  # the filter a query rule sends
        return await inner(col, template, values, limit)

    store.find_template = recording_find
    for module in (sqlite_module, pg_module):
        where, params = module.where, module.params

        def recording_where(*args, _where=where, **kwargs):
            clause, params = _where(*args, **kwargs)
            backend.sql.append((clause, list(params)))
            return clause, params

        def recording_params(d, stmt, *args, _params=params):
            bound = _params(d, stmt, *args)
            backend.sql.append((stmt.sql, list(bound)))  # the statement a query rule runs
            return bound

        monkeypatch.setattr(module, "where", recording_where)
        monkeypatch.setattr(module, "params", recording_params)
    return backend


@contextlib.asynccontextmanager
async def sqlite_backend(tmp_path, monkeypatch):
    conn = sqlite3.connect(tmp_path / "app.db")
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, age INTEGER)")
    conn.executemany("INSERT INTO users VALUES (:id, :name, :age)", ROWS)
    conn.commit()
    conn.close()
    databases = {"sq": {"type": "sqlite", "path": "app.db", "timeout": "2s"}}
    backend = await _start(databases, "sq", tmp_path, monkeypatch)
    yield backend
    await backend.authorizer.runtime.close()


@contextlib.asynccontextmanager
async def pg_backend(tmp_path, monkeypatch):
    with pg_schema("authz_inj") as (admin, schema):
        admin.execute("CREATE TABLE users (id int PRIMARY KEY, name text, age int)")
        with admin.cursor() as cur:
            cur.executemany("INSERT INTO users VALUES (%(id)s, %(name)s, %(age)s)", ROWS)
        dsn = pg_dsn(schema)
        databases = {"pg": {"type": "postgres", "dsn": dsn, "timeout": "2s", "poolSize": 2}}
        backend = await _start(databases, "pg", tmp_path, monkeypatch)
        try:
            yield backend
        finally:
            await backend.authorizer.runtime.close()


@contextlib.asynccontextmanager
async def mongo_backend(tmp_path, monkeypatch):
    from mockupdb import MockupDB

    server = MockupDB(
        port=free_port(),
        auto_ismaster={"ismaster": True, "minWireVersion": 0, "maxWireVersion": 21},
    )
    server.run()
    received: list[dict[str, Any]] = []

    def respond(request) -> bool:
        doc = request.doc
        if {"hello", "ismaster", "isMaster"} & set(doc):
            return False  # the handshake: auto_ismaster
        if "find" not in doc:
            return request.ok()  # ping, endSessions, ...
        received.append(doc)
        # answer as MongoDB would: the reference semantics over the same rows
        rows = [r for r in ROWS if matches(r, doc["filter"])][: doc.get("limit") or None]
        ns = f"{doc['$db']}.{doc['find']}"
        return request.replies({"cursor": {"id": 0, "ns": ns, "firstBatch": rows}})

    server.autoresponds(respond)
    uri = f"mongodb://127.0.0.1:{server.port}/?directConnection=true"
    databases = {"mg": {"type": "mongo", "uri": uri, "database": "app", "timeout": "2s"}}
    try:
        backend = await _start(databases, "mg", tmp_path, monkeypatch)
        backend.mongo = received
        try:
            yield backend
        finally:
            await backend.authorizer.runtime.close()
    finally:
        server.stop()


BACKENDS = {"sqlite": sqlite_backend, "postgres": pg_backend, "mongo": mongo_backend}


@pytest.fixture(params=list(BACKENDS))
async def backend(request, tmp_path, monkeypatch):
    async with BACKENDS[request.param](tmp_path, monkeypatch) as b:
        yield b


def _operators(filter: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(filter, dict):
        for k, v in filter.items():
            if isinstance(k, str) and k.startswith("$"):
                found.add(k)
            found |= _operators(v)
    elif isinstance(filter, list):
        for v in filter:
            found |= _operators(v)
    return found


def _leaves(filter: Any) -> Iterator[Any]:
    if isinstance(filter, dict):
        for v in filter.values():
            yield from _leaves(v)
    elif isinstance(filter, list):
        for v in filter:
            yield from _leaves(v)
    else:
        yield filter


async def _attack_all_slots(backend: Backend) -> dict[str, list[int]]:
    """Every slot x source x form x attack; returns {source/form: [tried, denied]}."""
    counts: dict[str, list[int]] = {}
    for slot, (_, config_ops) in SLOTS.items():
        for a in attempts(slot):
            n_finds, n_sql, n_mongo = len(backend.finds), len(backend.sql), len(backend.mongo)
            d = await backend.authorizer.check(request(a))
            what = f"{slot} {a.source}/{a.form} {a.attack}: {d.status} {d.reason}"
            if a.form == "bracket":
                # `v[$ne]` is `v` to PHP and Express's qs: another spelling of the name the rule
                # reads, refused before anything runs (SECURITY.md, "One interpretation")
                assert (d.allowed, d.status) == (False, 400), what
                assert len(backend.finds) == n_finds and len(backend.mongo) == n_mongo, what
                tried_denied = counts.setdefault("query/bracket", [0, 0])
                tried_denied[0] += 1
                tried_denied[1] += 1
                continue
            allowed, error = reference(slot, a.received)
            assert d.allowed is allowed, what
            assert d.status in (200, 403), what  # never a 5xx, never a token problem
            entry = counts.setdefault(f"{a.source}/{a.form}", [0, 0])
            entry[0] += 1
            entry[1] += not d.allowed
            if a.form == "object":
                assert not d.allowed and error, what  # row 14: type error, deny
                assert "not a scalar" in d.reason or "must be" in d.reason, what
            if error:  # refused before the datastore: nothing was sent anywhere
                assert len(backend.finds) == n_finds, what
                assert len(backend.mongo) == n_mongo, what
                continue
            # it reached the datastore: only the config's operators, request data as a string
            (sent,) = backend.finds[n_finds:]
            assert _operators(sent) == config_ops, what
            strings = [x for x in _leaves(sent) if isinstance(x, str) and "$" in x]
            received = a.received if isinstance(a.received, list) else [a.received]
            assert all(s in received for s in strings), what
            for clause, params in backend.sql[n_sql:]:
                assert "$" not in clause and "nobody" not in clause, what
                assert not any(isinstance(x, str) and x in clause for x in received), what
                assert any(x in params for x in received), what
            for cmd in backend.mongo[n_mongo:]:
                assert _operators(cmd["filter"]) == config_ops, what
                assert all(isinstance(x, str | int) for x in _leaves(cmd["filter"])), what
            if backend.name != "mg":
                assert len(backend.sql) == n_sql + 1, what
            else:
                assert len(backend.mongo) == n_mongo + 1, what
    return counts


async def test_operator_injection_from_every_source_into_every_slot(backend: Backend):
    counts = await _attack_all_slots(backend)
    # every object-shaped attack was denied, on every slot
    n = len(SLOTS) * len(ATTACKS)
    assert counts["body/object"] == [n, n]
    assert counts["claim/object"] == [n, n]
    assert counts["query/bracket"] == [n, n]
    print(f"\n{backend.name}: {counts}")


# --- row 37 ------------------------------------------------------------------------------


LITERALS = [
    # (how it arrives, value, ids that must match exactly)
    ("body", "a%c", {5}),
    ("body", "a_c", {7}),
    ("body", "%", {10}),
    ("body", "_", set()),
    ("body", "a\\c", {11}),
    ("body", "O'Brien", {9}),
    ("body", "x' OR '1'='1", set()),
    ("body", "alice'; DROP TABLE users; --", set()),
    ("body", 0, set()),  # a number never equals the text "0"
    ("body", True, set()),  # a bool never equals the text "true"
    ("body", 1, set()),
    ("header", "0", {3}),  # header text is a string: literal
    ("header", "true", {4}),
    ("header", "a%c", {5}),
]


async def test_values_match_literally(backend: Backend):
    store = backend.authorizer.runtime.datastores[backend.name]
    tok = token()
    for source, value, ids in LITERALS:
        what = f"{source} {value!r}"
        n_sql = len(backend.sql)
        rows = await store.find("users", {"name": value}, 100)
        assert {r["id"] for r in rows} == ids, what
        assert {r["id"] for r in ROWS if matches(r, {"name": value})} == ids, what  # reference
        if source == "body":
            req = Request.from_target(
                "POST", "/literal",
                headers={"authorization": f"Bearer {tok}", "content-type": "application/json"},
                body=json.dumps({"v": value}).encode(),
            )  # fmt: skip
        else:
            headers = {"authorization": f"Bearer {tok}", "x-v": value}
            req = Request.from_target("POST", "/literal-header", headers=headers)
        d = await backend.authorizer.check(req)
        assert d.allowed is (len(ids) == 1), f"{what}: {d.reason}"
        assert d.status in (200, 403), what
        for clause, params in backend.sql[n_sql:]:  # no pattern operator; the value bound
            upper = clause.upper()
            assert not any(w in upper for w in ("LIKE", "GLOB", "SIMILAR", "~", "REGEXP")), what
            if isinstance(value, str):
                assert value in params, what


def _config_with_find(find: dict[str, Any], col: str = "users") -> str:
    doc = {
        "project": "p",
        "auth": {"serviceToken": {"enabled": False}},
        "databases": {"sq": {"type": "sqlite", "path": "x.db"}},
        "services": {
            "s": {
                "endpoints": {
                    "e": {"rule": {"rule": "query", "db": "sq", "col": col, "find": find}}
                }
            }
        },
    }
    return yaml.safe_dump(doc)


BAD_NAMES = ["a)", "a;", "a'b", 'a"b', "a`b", "a b", "a--b", "a/*b*/", "name) OR (1=1",
             "name;DROP TABLE users", "a[0]", "a.$b", "é", "a\nb", ""]  # fmt: skip
PREFIX = "services.s.endpoints.e.rule"


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize(
    ("where", "build"),
    [
        ("find.{n}", lambda n: {n: "x"}),
        ("find.{n}", lambda n: {n: {"$in": ["x"]}}),
        ("find.$or[1].{n}", lambda n: {"$or": [{"a": 1}, {n: "x"}]}),
        ("find.$and[0].{n}", lambda n: {"$and": [{n: {"$gt": 1}}]}),
    ],
)
def test_bad_field_names_are_config_errors_naming_the_path(name, where, build):
    with pytest.raises(ConfigError) as exc:
        Authorizer(load_config_text(_config_with_find(build(name))))
    path = f"{PREFIX}.{where.format(n=name)}"
    assert any(e.startswith(path + ":") and "invalid field name" in e for e in exc.value.errors), (
        exc.value.errors
    )


@pytest.mark.parametrize("col", ["users)", "users;", "users'", 'users"', "u sers", "a.b.c", ""])
def test_bad_collection_names_are_config_errors(col):
    with pytest.raises(ConfigError) as exc:
        Authorizer(load_config_text(_config_with_find({"a": 1}, col=col)))
    assert any(e.startswith(f"{PREFIX}.col:") for e in exc.value.errors), exc.value.errors


OUTSIDE = [
    ({"name": {"$like": "a%"}}, "find.name.$like"),
    ({"name": {"$ilike": "a_"}}, "find.name.$ilike"),
    ({"name": {"$regex": "^a"}}, "find.name.$regex"),
    ({"name": {"$not": {"$eq": 1}}}, "find.name.$not"),
    ({"name": {"$elemMatch": {"$gt": 1}}}, "find.name.$elemMatch"),
    ({"name": {"$type": "string"}}, "find.name.$type"),
    ({"$where": "1"}, "find.$where"),
    ({"$expr": {"$eq": [1, 1]}}, "find.$expr"),
    ({"$text": {"$search": "a"}}, "find.$text"),
    ({"$function": {"body": "return true", "args": [], "lang": "js"}}, "find.$function"),
    ({"$nor": [{"a": 1}]}, "find.$nor"),
]


@pytest.mark.parametrize(("find", "where"), OUTSIDE, ids=[w for _, w in OUTSIDE])
def test_operators_outside_the_language_are_config_errors(find, where):
    with pytest.raises(ConfigError) as exc:
        Authorizer(load_config_text(_config_with_find(find)))
    path = f"{PREFIX}.{where}:"
    assert any(e.startswith(path) and "unknown operator" in e for e in exc.value.errors), (
        exc.value.errors
    )
