import asyncio
import base64
import copy
import hashlib
import hmac
from types import SimpleNamespace
from typing import Any

import pytest

from authz.config.schema import Config, CryptoKey, CryptoSettings
from authz.crypto import Keyring
from authz.documents import (
    FieldChange,
    ResponseAction,
    apply_response,
    replay,
    request_changes,
    response_plan,
)
from authz.errors import AuthzError, ConfigError, RequestError, ResponseError
from authz.rules.base import Context
from tests.unit.rules.ruletools import compile_dict

KEY = base64.b64encode(bytes(range(32))).decode()
HASH_KEY = bytes(range(50, 82))
CONFIG = Config(project="t", crypto=CryptoSettings(keys=[CryptoKey(id="k1", key=KEY)]))
KEYED = Config(
    project="t",
    crypto=CryptoSettings(
        keys=[CryptoKey(id="k1", key=KEY)], hashKey=base64.b64encode(HASH_KEY).decode()
    ),
)
KEYRING = Keyring.from_settings(CONFIG.crypto)
RUNTIME = SimpleNamespace(keyring=KEYRING)
PASSWORD_B64 = "XohImNooBHFR0OVvjcYpJ3NgPQ1qq73WKhHvch0VQtg="

TRUE = {"rule": "match", "eval": "==", "type": "bool", "f1": True, "f2": True}
FALSE = {"rule": "match", "eval": "==", "type": "bool", "f1": True, "f2": False}
ERROR = {"rule": "match", "eval": "==", "type": "bool", "f1": "args.missing", "f2": True}


def run(rule: dict[str, Any], args: dict[str, Any], runtime: Any = RUNTIME, config: Any = CONFIG):
    compiled, _ = compile_dict(rule, config)
    ctx = Context(args, runtime)
    return asyncio.run(compiled.evaluate(ctx)), ctx


def make_args(params: Any = None, **extra: Any) -> dict[str, Any]:
    args = {"auth": {"id": "u1", "role": "user"}, "query": {}, "headers": {}}
    args["params"] = {} if params is None else params
    args.update(extra)
    return args


def force(field: str, value: Any, **kw: Any) -> dict[str, Any]:
    return {"rule": "force", "field": field, "value": value, **kw}


def remove(*fields: str, **kw: Any) -> dict[str, Any]:
    return {"rule": "remove", "fields": list(fields), **kw}


def undo_all(ctx: Context) -> None:
    ctx.rollback(0)


# --- force -----------------------------------------------------------------------------------


def test_force_sets_a_field_from_a_reference():
    args = make_args({"userId": "someone-else", "amount": 5})
    failure, ctx = run(force("args.params.userId", "args.auth.id"), args)
    assert failure is None
    assert args["params"] == {"userId": "u1", "amount": 5}
    assert [c.op() for c in ctx.changes] == [
        {"op": "set", "target": "params", "path": ["userId"], "value": "u1"}
    ]


def test_force_creates_missing_parents_and_undo_removes_them():
    args = make_args({"a": {}})
    failure, ctx = run(force("args.params.a.b.c.d", 7), args)
    assert failure is None
    assert args["params"] == {"a": {"b": {"c": {"d": 7}}}}
    undo_all(ctx)
    assert args["params"] == {"a": {}}


def test_force_replaces_a_null_parent():
    args = make_args({"user": None})
    failure, ctx = run(force("args.params.user.id", "args.auth.id"), args)
    assert failure is None and args["params"] == {"user": {"id": "u1"}}
    undo_all(ctx)
    assert args["params"] == {"user": None}


def test_force_indexes_arrays_by_numeric_segments():
    args = make_args({"items": [{"sku": "a"}, {"sku": "b"}]})
    failure, _ = run(force("args.params.items.1.sku", "z"), args)
    assert failure is None
    assert args["params"]["items"] == [{"sku": "a"}, {"sku": "z"}]


@pytest.mark.parametrize(
    "params",
    [{"items": [{"sku": "a"}]}, {"items": "scalar"}, {"items": [1, 2]}, {"items": 5}],
)
def test_force_that_cannot_be_placed_is_an_error(params):
    args = make_args(copy.deepcopy(params))
    failure, ctx = run(force("args.params.items.3.sku", "z"), args)
    assert failure is not None and failure.error
    assert args["params"] == params and ctx.changes == []


def test_force_unresolvable_reference_is_an_error_never_text():
    args = make_args({"userId": "x"})
    failure, ctx = run(force("args.params.userId", "args.auth.missing"), args)
    assert failure is not None and failure.error
    assert "args.auth.missing" in failure.reason
    assert args["params"] == {"userId": "x"} and ctx.changes == []


def test_force_literal_values_are_copied_per_request():
    compiled, _ = compile_dict(force("args.params.meta", {"tags": ["a"]}), CONFIG)
    rules = [compiled, compile_dict(remove("args.params.meta.tags.0"), CONFIG)[0]]
    for _ in range(2):
        args = make_args()
        ctx = Context(args, RUNTIME)
        for rule in rules:
            assert asyncio.run(rule.evaluate(ctx)) is None
        assert args["params"] == {"meta": {"tags": []}}


def test_force_values_from_references_are_copied():
    args = make_args()
    rule = {"rule": "and", "clauses": [force("args.params.who", "args.auth"),
                                       remove("args.params.who.role")]}  # fmt: skip
    failure, _ = run(rule, args)
    assert failure is None
    assert args["params"] == {"who": {"id": "u1"}}
    assert args["auth"] == {"id": "u1", "role": "user"}


def test_force_removes_keys_that_differ_only_in_case():
    args = make_args({"UserId": "evil", "USERID": "evil2", "other": 1})
    failure, ctx = run(force("args.params.userId", "args.auth.id"), args)
    assert failure is None
    assert args["params"] == {"other": 1, "userId": "u1"}
    undo_all(ctx)
    assert args["params"] == {"UserId": "evil", "USERID": "evil2", "other": 1}


def test_force_headers_and_query():
    args = make_args(headers={"x-user": "spoofed"}, query={"tag": "a"})
    rule = {
        "rule": "and",
        "clauses": [
            force("args.headers.X-User", "args.auth.id"),
            force("args.headers.x-level", 7),
            force("args.query.tag", ["a", 1, True]),
        ],
    }
    failure, ctx = run(rule, args)
    assert failure is None
    assert args["headers"] == {"x-user": "u1", "x-level": "7"}
    assert args["query"] == {"tag": ["a", "1", "true"]}
    assert {(c.target, c.path[0]) for c in ctx.changes} == {
        ("headers", "x-user"),
        ("headers", "x-level"),
        ("query", "tag"),
    }


@pytest.mark.parametrize(
    "value",
    [{"a": 1}, None, "line\r\nx-admin: 1", "\tadmin", " u1", "u1 ", "u1\t", "a\tb", "a\x7fb"],
)
def test_force_header_with_a_bad_value_from_the_request_is_an_error(value):
    args = make_args({"v": value})
    failure, _ = run(force("args.headers.x-user", "args.params.v"), args)
    assert failure is not None and failure.error
    assert args["headers"] == {}


@pytest.mark.parametrize("value", ["u1 admin", "Ada, Lovelace", "é ü", "", "!~"])
def test_force_header_keeps_a_value_every_reader_reads_alike(value):
    args = make_args({"v": value})
    failure, _ = run(force("args.headers.x-user", "args.params.v"), args)
    assert failure is None and args["headers"] == {"x-user": value}


def test_force_with_a_clause():
    rule = force("args.params.owner", "args.auth.id", clause=TRUE)
    args = make_args()
    assert run(rule, args)[0] is None and args["params"] == {"owner": "u1"}

    args = make_args()
    failure, ctx = run({**rule, "clause": FALSE}, args)
    assert failure is None and args["params"] == {} and ctx.changes == []

    args = make_args()
    failure, ctx = run({**rule, "clause": ERROR, "error": "masked"}, args)
    assert failure is not None and failure.error and failure.message == "masked"
    assert args["params"] == {} and ctx.changes == []


def test_later_rules_see_forced_values():
    check = {"rule": "match", "eval": "==", "type": "string", "f1": "args.params.owner",
             "f2": "u1"}  # fmt: skip
    rule = {"rule": "and", "clauses": [force("args.params.owner", "args.auth.id"), check]}
    assert run(rule, make_args({"owner": "evil"}))[0] is None
    assert run({"rule": "and", "clauses": [check]}, make_args({"owner": "evil"}))[0] is not None


# --- remove ----------------------------------------------------------------------------------


def test_remove_nested_and_missing_fields():
    args = make_args({"user": {"name": "a", "password": "p"}, "amount": 3})
    fields = ["args.params.user.password", "args.params.amount", "args.params.nope.deeper"]
    failure, ctx = run(remove(*fields, "args.params.user.name.x"), args)
    assert failure is None
    assert args["params"] == {"user": {"name": "a"}}
    assert [c.op()["op"] for c in ctx.changes] == ["remove", "remove"]
    undo_all(ctx)
    assert args["params"] == {"user": {"name": "a", "password": "p"}, "amount": 3}


def test_remove_array_element_and_undo_restores_position():
    args = make_args({"items": ["a", "b", "c"]})
    failure, ctx = run(remove("args.params.items.1", "args.params.items.9"), args)
    assert failure is None and args["params"]["items"] == ["a", "c"]
    undo_all(ctx)
    assert args["params"]["items"] == ["a", "b", "c"]


def test_remove_also_removes_keys_differing_only_in_case():
    args = make_args({"Password": "p1", "PASSWORD": "p2", "user": {"Password": "p3"},
                      "User": {"password": "p4", "name": "n"}, "keep": 1})  # fmt: skip
    failure, _ = run(remove("args.params.password", "args.params.user.password"), args)
    assert failure is None
    assert args["params"] == {"user": {}, "User": {"name": "n"}, "keep": 1}


def test_remove_headers_and_query():
    args = make_args(headers={"x-internal": "1", "a": "b"}, query={"debug": "1"})
    failure, _ = run(remove("args.headers.X-Internal", "args.query.debug"), args)
    assert failure is None
    assert args["headers"] == {"a": "b"} and args["query"] == {}


def test_remove_with_a_clause():
    rule = remove("args.params.ssn", clause=TRUE)
    args = make_args({"ssn": "1"})
    assert run(rule, args)[0] is None and args["params"] == {}
    args = make_args({"ssn": "1"})
    assert run({**rule, "clause": FALSE}, args)[0] is None and args["params"] == {"ssn": "1"}
    args = make_args({"ssn": "1"})
    failure, _ = run({**rule, "clause": ERROR}, args)
    assert failure is not None and failure.error and args["params"] == {"ssn": "1"}


# --- encrypt / decrypt / hash ------------------------------------------------------------------


def test_encrypt_then_decrypt_nested_field():
    args = make_args({"user": {"email": "a@b.c"}})
    failure, _ = run({"rule": "encrypt", "fields": ["args.params.user.email"]}, args)
    assert failure is None
    envelope = args["params"]["user"]["email"]
    assert envelope.startswith("v1.k1.")
    assert KEYRING.decrypt(envelope, "user.email") == "a@b.c"  # AAD: path below the root
    failure, _ = run({"rule": "decrypt", "fields": ["args.params.user.email"]}, args)
    assert failure is None and args["params"]["user"]["email"] == "a@b.c"


def test_encrypt_in_arrays_and_headers():
    args = make_args({"cards": [{"pan": "4111"}]}, headers={"x-ssn": "123"})
    rule = {"rule": "encrypt", "fields": ["args.params.cards.0.pan", "args.headers.x-ssn"]}
    assert run(rule, args)[0] is None
    assert KEYRING.decrypt(args["params"]["cards"][0]["pan"], "cards.0.pan") == "4111"
    assert KEYRING.decrypt(args["headers"]["x-ssn"], "x-ssn") == "123"


@pytest.mark.parametrize("kind", ["encrypt", "decrypt", "hash"])
@pytest.mark.parametrize("value", [5, None, True, {"a": "b"}, ["a"]])
def test_non_string_values_are_a_400(kind, value):
    args = make_args({"f": value})
    with pytest.raises(RequestError, match="must be a string"):
        run({"rule": kind, "fields": ["args.params.f"]}, args)


@pytest.mark.parametrize("kind", ["encrypt", "decrypt", "hash"])
def test_missing_fields_are_skipped(kind):
    args = make_args({"other": "x"})
    failure, ctx = run({"rule": kind, "fields": ["args.params.f", "args.params.a.b"]}, args)
    assert failure is None and args["params"] == {"other": "x"} and ctx.changes == []


@pytest.mark.parametrize("kind", ["encrypt", "hash"])
def test_keys_differing_only_in_case_are_rejected(kind):
    args = make_args({"Password": "plain"})
    with pytest.raises(RequestError, match="differ only in case"):
        run({"rule": kind, "fields": ["args.params.password"]}, args)


def test_decrypting_a_tampered_or_moved_value_is_a_400():
    args = make_args({"a": KEYRING.encrypt("secret", "b")})
    with pytest.raises(RequestError, match="cannot be decrypted") as info:
        run({"rule": "decrypt", "fields": ["args.params.a"]}, args)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("plain", ["a\r\nx-admin: 1", "\tadmin", "admin "])
def test_decrypt_into_a_header_rejects_what_an_upstream_reads_otherwise(plain):
    args = make_args(headers={"x-v": KEYRING.encrypt(plain, "x-v")})
    with pytest.raises(RequestError, match="valid header value"):
        run({"rule": "decrypt", "fields": ["args.headers.x-v"]}, args)


def test_hash_base64_hex_and_keyed():
    args = make_args({"password": "password", "pin": "password"})
    rule = {"rule": "hash", "fields": ["args.params.password"]}
    assert run(rule, args)[0] is None and args["params"]["password"] == PASSWORD_B64
    assert run({**rule, "fields": ["args.params.pin"], "encoding": "hex"}, args)[0] is None
    assert args["params"]["pin"] == hashlib.sha256(b"password").hexdigest()

    args = make_args({"password": "password"})
    keyed = SimpleNamespace(keyring=Keyring.from_settings(KEYED.crypto))
    assert run(rule, args, keyed, KEYED)[0] is None
    expected = hmac.new(HASH_KEY, b"password", hashlib.sha256).digest()
    assert args["params"]["password"] == base64.b64encode(expected).decode()


def test_hash_without_crypto_config_is_plain_sha256():
    args = make_args({"password": "password"})
    failure, _ = run({"rule": "hash", "fields": ["args.params.password"]}, args, None, None)
    assert failure is None and args["params"]["password"] == PASSWORD_B64


def test_keyed_hash_never_falls_back_to_unkeyed():
    with pytest.raises(AuthzError):
        run({"rule": "hash", "fields": ["args.params.p"]}, make_args({"p": "x"}), None, KEYED)


def test_encrypt_without_a_keyring_is_an_internal_error():
    with pytest.raises(AuthzError):
        run({"rule": "encrypt", "fields": ["args.params.p"]}, make_args({"p": "x"}), None)


@pytest.mark.parametrize("kind", ["encrypt", "decrypt", "hash"])
def test_transform_with_a_clause(kind):
    rule = {"rule": kind, "fields": ["args.params.p"], "clause": FALSE}
    value = KEYRING.encrypt("x", "p") if kind == "decrypt" else "x"
    args = make_args({"p": value})
    assert run(rule, args)[0] is None and args["params"] == {"p": value}
    failure, _ = run({**rule, "clause": ERROR}, args)
    assert failure is not None and failure.error and args["params"] == {"p": value}
    assert run({**rule, "clause": TRUE}, args)[0] is None and args["params"] != {"p": value}


# --- and / or --------------------------------------------------------------------------------


def test_and_keeps_the_changes_of_all_clauses():
    args = make_args({"a": 1, "secret": "s"})
    rule = {"rule": "and", "clauses": [force("args.params.b", 2), remove("args.params.secret")]}
    failure, ctx = run(rule, args)
    assert failure is None and args["params"] == {"a": 1, "b": 2}
    assert len(request_changes(ctx.changes)) == 2


def test_or_rolls_back_a_failing_clause():
    args = make_args({"role": "user", "password": "pw", "x": 1})
    first = {"rule": "and", "clauses": [
        force("args.params.role", "admin"), remove("args.params.x"),
        {"rule": "hash", "fields": ["args.params.password"]}, remove("res.ssn"), FALSE,
    ]}  # fmt: skip
    second = {"rule": "and", "clauses": [force("args.params.via", "second"), TRUE]}
    failure, ctx = run({"rule": "or", "clauses": [first, second]}, args)
    assert failure is None
    assert args["params"] == {"role": "user", "password": "pw", "x": 1, "via": "second"}
    assert [c.op() for c in ctx.changes] == [
        {"op": "set", "target": "params", "path": ["via"], "value": "second"}
    ]
    assert response_plan(ctx.changes) == []


def test_or_with_an_erroring_field_clause_denies_outright():
    # docs/rules.md: a field rule whose clause cannot be evaluated denies the request; inside `or`
    # the next clause must not be tried, or masking could be switched off silently.
    args = make_args({"ssn": "1"})
    rule = {"rule": "or", "clauses": [remove("args.params.ssn", clause=ERROR), {"rule": "allow"}]}
    failure, _ = run(rule, args)
    assert failure is not None and failure.error and failure.fatal
    assert args["params"] == {"ssn": "1"}


def test_or_with_an_unresolvable_force_value_denies_outright():
    args = make_args({})
    rule = {"rule": "or", "clauses": [force("args.params.x", "args.auth.nope"), {"rule": "allow"}]}
    failure, _ = run(rule, args)
    assert failure is not None and failure.fatal and args["params"] == {}


def test_a_clause_that_fails_keeps_none_of_its_own_changes():
    clause = {"rule": "and", "clauses": [force("args.params.tmp", 1), FALSE]}
    args = make_args()
    failure, ctx = run(force("args.params.x", 2, clause=clause), args)
    assert failure is None and args["params"] == {} and ctx.changes == []


# --- the response plan -------------------------------------------------------------------------


def test_response_rules_are_planned_not_applied():
    args = make_args()
    rule = {"rule": "and", "clauses": [
        force("res.owner", "args.auth.id"), remove("res.user.password"),
        {"rule": "encrypt", "fields": ["res.user.email"]},
        {"rule": "hash", "fields": ["res.pin"], "encoding": "hex"},
    ]}  # fmt: skip
    failure, ctx = run(rule, args)
    assert failure is None and args["params"] == {}
    plan = response_plan(ctx.changes)
    assert [a.to_json() for a in plan] == [
        {"op": "force", "path": ["owner"], "value": "u1"},
        {"op": "remove", "path": ["user", "password"]},
        {"op": "encrypt", "path": ["user", "email"]},
        {"op": "hash", "path": ["pin"], "encoding": "hex"},
    ]
    body = {"user": {"password": "p", "Password": "p2", "email": "e@x"}, "pin": "password"}
    apply_response(plan, body)
    assert body["owner"] == "u1" and body["user"].keys() == {"email"}
    assert KEYRING.decrypt(body["user"]["email"], "user.email") == "e@x"
    assert body["pin"] == hashlib.sha256(b"password").hexdigest()


def test_response_plan_survives_json_round_trip():
    args = make_args()
    rule = {"rule": "and", "clauses": [force("res.meta", {"by": "args.auth.id"}),
                                       {"rule": "decrypt", "fields": ["res.email"]}]}  # fmt: skip
    _, ctx = run(rule, args)
    wire = [a.to_json() for a in response_plan(ctx.changes)]
    plan = [ResponseAction.from_json(d, KEYRING) for d in wire]
    with pytest.raises(ResponseError):  # `meta` cannot be set in a list body
        apply_response(plan, [{"email": "x"}])
    body = {"email": KEYRING.encrypt("e@x", "email")}
    apply_response(plan, body)
    assert body == {"meta": {"by": "args.auth.id"}, "email": "e@x"}


def test_a_value_encrypted_on_the_request_decrypts_on_the_response():
    args = make_args({"profile": {"email": "e@x"}})
    run({"rule": "encrypt", "fields": ["args.params.profile.email"]}, args)
    stored = copy.deepcopy(args["params"])  # what the upstream saved and returns later
    _, ctx = run({"rule": "decrypt", "fields": ["res.profile.email"]}, make_args())
    apply_response(response_plan(ctx.changes), stored)
    assert stored == {"profile": {"email": "e@x"}}


def test_request_ops_replay_to_the_same_document():
    original = {"a": {"b": 1}, "list": [1, 2, 3], "Secret": "s", "pw": "password"}
    args = make_args(copy.deepcopy(original))
    rule = {"rule": "and", "clauses": [
        force("args.params.a.c.d", "args.auth.id"), force("args.params.a.c.e", 2),
        remove("args.params.list.0", "args.params.secret", "args.params.a.c.d"),
        {"rule": "hash", "fields": ["args.params.pw"]}, force("args.params.a.b", [9]),
    ]}  # fmt: skip
    failure, ctx = run(rule, args)
    assert failure is None
    replayed = copy.deepcopy(original)
    replay(replayed, [c.op() for c in request_changes(ctx.changes) if c.target == "params"])
    assert replayed == args["params"]
    assert all(isinstance(c, FieldChange) for c in ctx.changes)


# --- compilation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (force("args.auth.id", 1), "a field path is"),
        (force("args.params", 1), "a field path is"),
        (force("params.x", 1), "a field path is"),
        (force("res", 1), "a field path is"),
        (force("args.query.a.b", 1), "args.query is flat"),
        (force("args.headers.a.b", 1), "args.headers is flat"),
        (force("args.headers.bad name", 1), "invalid header name"),
        (force("args.headers.x", {"a": 1}), "not a valid headers value"),
        (force("args.headers.x", " admin"), "not a valid headers value"),
        (force("args.params[args.auth.id]", 1), "computed keys"),
        (force("args.params.a..b", 1), "invalid field path"),
        (remove("args.params.ok", "args.result.x"), "fields[1]"),
        ({"rule": "encrypt", "fields": ["args.params.x"]}, "'encrypt' needs crypto.keys"),
        ({"rule": "decrypt", "fields": ["res.x"]}, "'decrypt' needs crypto.keys"),
    ],
)
def test_config_errors(rule, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        compile_dict(rule, Config(project="t"))


def test_encrypt_needs_a_current_key_decrypt_may_use_legacy_only():
    legacy = Config(project="t", crypto=CryptoSettings(
        keys=[CryptoKey(id="sc", key=KEY, legacy="spacecloud-cfb")]))  # fmt: skip
    with pytest.raises(ConfigError, match="current key"):
        compile_dict({"rule": "encrypt", "fields": ["args.params.x"]}, legacy)
    compile_dict({"rule": "decrypt", "fields": ["args.params.x"]}, legacy)


def test_compile_marks_field_rules_targets_and_reads():
    rule = {"rule": "and", "clauses": [
        force("args.headers.x-user", "args.auth.id"), remove("res.secret"),
        {"rule": "hash", "fields": ["args.params.password"]},
    ]}  # fmt: skip
    _, cc = compile_dict(rule, CONFIG)
    assert cc.field_targets == {"headers", "res", "params"}
    assert {"headers", "params", "auth"} <= cc.reads
    _, plain = compile_dict(TRUE, CONFIG)
    assert plain.field_targets == set()


def test_trace_never_shows_values():
    compiled, _ = compile_dict(force("args.params.token", "args.auth.id"), CONFIG)
    ctx = Context(make_args(), RUNTIME, trace=True)
    from authz.rules.base import run as run_rule

    assert asyncio.run(run_rule(compiled, ctx)) is None
    assert ctx.trace[-1].detail == "set args.params.token" and "u1" not in ctx.trace[-1].detail


def traced(rule: dict[str, Any], args: dict[str, Any], runtime: Any = RUNTIME):
    compiled, _ = compile_dict(rule, CONFIG)
    ctx = Context(args, runtime, trace=True)
    failure = asyncio.run(compiled.evaluate(ctx))
    return failure, ctx.detail


@pytest.mark.parametrize(
    ("rule", "params", "detail"),
    [
        (remove("args.params.a", "args.params.b", "args.params.c"), {"a": 1, "b": 2},
         "removed 2 field(s)"),
        (remove("args.params.c"), {"a": 1}, "removed 0 field(s)"),
        ({"rule": "encrypt", "fields": ["args.params.a", "args.params.b"]}, {"a": "x", "b": "y"},
         "encrypted 2 field(s)"),
        ({"rule": "hash", "fields": ["args.params.a", "args.params.c"]}, {"a": "x"},
         "hashed 1 field(s)"),
        ({"rule": "decrypt", "fields": ["args.params.c"]}, {"a": "x"}, "decrypted 0 field(s)"),
        (force("args.params.a", "secret"), {}, "set args.params.a"),
    ],
)  # fmt: skip
def test_the_trace_says_how_many_fields_were_changed(rule, params, detail):
    failure, shown = traced(rule, make_args(params))
    assert failure is None and shown == detail


def test_force_into_a_part_that_is_not_an_object_is_an_error():
    failure, _ = run(force("args.params.x", 1), make_args(params=["a"]))
    assert failure is not None and failure.error and failure.fatal
    assert failure.reason == "args.params is not an object"


def test_a_list_is_a_query_value_but_not_a_header_value():
    args = make_args(params={"tags": ["a", "b"]})
    assert run(force("args.query.t", "args.params.tags"), args)[0] is None
    assert args["query"]["t"] == ["a", "b"]
    failure, _ = run(force("args.headers.x-t", "args.params.tags"), args)
    assert failure is not None and failure.error
    assert failure.reason == "value args.params.tags is not a valid headers value"


def test_a_field_path_with_a_bracketed_literal_key():
    args = make_args({"a": {"b c": 1}, "list": ["x", "y"]})
    assert run(remove("args.params.a['b c']", "args.params.list[0]"), args)[0] is None
    assert args["params"] == {"a": {}, "list": ["y"]}


def test_field_rules_list_their_clause():
    with_clause, _ = compile_dict(force("args.params.a", 1, clause=TRUE), CONFIG)
    assert [c.kind for c in with_clause.children()] == ["match"]
    assert compile_dict(force("args.params.a", 1), CONFIG)[0].children() == ()


def test_encrypting_a_response_field_needs_no_hash_key():
    # (the keyring is checked when the response is encrypted; a keyed hash needs it now)
    _, ctx = run({"rule": "encrypt", "fields": ["res.a"]}, make_args(), None, KEYED)
    assert [a.to_json()["op"] for a in ctx.changes] == ["encrypt"]
    with pytest.raises(AuthzError, match=r"^the crypto keyring is not loaded$"):
        run({"rule": "hash", "fields": ["res.a"]}, make_args(), None, KEYED)


def test_a_field_path_that_names_no_field_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        compile_dict(force("args.params", 1), CONFIG)
    assert e.value.errors == [
        "rule.field: a field path is args.params.*, args.query.*, args.headers.* or res.*, "
        "got 'args.params'"
    ]


def test_transforms_compile_without_a_config():
    # rule tests and unit tests compile without one: the keys are checked when they run
    rule, _ = compile_dict({"rule": "encrypt", "fields": ["args.params.a"]})
    assert rule.kind == "encrypt"
