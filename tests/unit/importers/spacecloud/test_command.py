"""`authz import spacecloud` end to end on fixtures written from Space Cloud's types: both input
forms, every reported item, several projects, secrets kept out of the config, bad input."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import time
from pathlib import Path

import jwt
import pytest
import yaml

from authz.authorizer import Authorizer
from authz.checkfile import run_checks
from authz.cli import main
from authz.config.load import load_config
from authz.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures"
SECRET_VALUES = [
    "store-secret-that-is-long-enough-0123456789",
    "pw-of-db",
    "mongo-pw",
    "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
]


def run(tmp_path: Path, *inputs: str, extra: tuple[str, ...] = ()) -> tuple[int, dict]:
    out = {name: tmp_path / name for name in ("authz.yaml", "authz.env", "envoy.yaml", "r.json")}
    code = main(["import", "spacecloud", *inputs, "--out", str(out["authz.yaml"]),
                 "--env-out", str(out["authz.env"]), "--envoy", str(out["envoy.yaml"]),
                 "--report", str(out["r.json"]), *extra])  # fmt: skip
    return code, out


def read_env(path: Path) -> dict[str, str]:
    """What `set -a; . FILE` puts in a clean shell's environment."""
    dump = subprocess.run(["env", "-i", "sh", "-c", 'set -a; . "$1"; env -0', "sh", str(path)],
                          capture_output=True, check=True, timeout=10).stdout  # fmt: skip
    pairs = (item.decode().partition("=") for item in dump.split(b"\0") if item)
    return {k: v for k, _, v in pairs if k.startswith("AUTHZ_")}


def items(report: Path) -> list[dict]:
    return json.loads(report.read_text())["items"]


def test_get_all_directory_is_carried_and_validates(tmp_path: Path) -> None:
    code, out = run(tmp_path, str(FIXTURES / "getall"))
    assert code == 0, items(out["r.json"])
    assert {i["kind"] for i in items(out["r.json"])} == {"note"}
    env = read_env(out["authz.env"])
    config = load_config(out["authz.yaml"], env)
    assert set(config.services["catalog"].endpoints) == {
        "open", "closed", "mine", "item", "lookup", "write"
    }  # fmt: skip
    assert config.services["catalog"].endpoints["item"].path == "/v1/items/{itemId}"
    assert config.databases["pg"].type == "postgres" and config.databases["mgo"].type == "mongo"
    assert [k.legacy for k in config.crypto.keys] == [None, "spacecloud-cfb"]
    assert yaml.safe_load(out["envoy.yaml"].read_text())["static_resources"]


def test_secrets_only_in_the_env_file_which_is_private(tmp_path: Path) -> None:
    _, out = run(tmp_path, str(FIXTURES / "getall"))
    text = out["authz.yaml"].read_text()
    for value in SECRET_VALUES:
        assert value not in text
    env = read_env(out["authz.env"])
    assert env["AUTHZ_SC_SECRET_K1"] == SECRET_VALUES[0]
    assert env["AUTHZ_SC_AES_KEY"] == SECRET_VALUES[3]
    assert "options=-csearch_path%3Dshop" in env["AUTHZ_DB_PG"]  # Space Cloud's schema
    assert stat.S_IMODE(out["authz.env"].stat().st_mode) == 0o600


def test_rs256_private_key_goes_to_the_env_file(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()  # fmt: skip
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo).decode()  # fmt: skip
    src = tmp_path / "in.yaml"
    src.write_text(yaml.safe_dump({"projects": {"p": {"projectConfig": {"id": "p", "secrets": [
        {"alg": "RS256", "kid": "r", "isPrimary": True, "publicKey": public,
         "privateKey": private}]}}}}))  # fmt: skip
    code, out = run(tmp_path, str(src))
    assert code == 0
    text = out["authz.yaml"].read_text()
    assert "PRIVATE KEY" not in text and "${AUTHZ_SC_SECRET_R_PRIVATE_KEY}" in text
    env = read_env(out["authz.env"])
    assert env["AUTHZ_SC_SECRET_R_PRIVATE_KEY"] == private
    authorizer = Authorizer(load_config(out["authz.yaml"], env))
    minted = authorizer.runtime.identity.mint({"id": "u"}, 60)
    assert jwt.decode(minted, public, algorithms=["RS256"], options={"verify_iss": False})["id"]


def test_env_file_is_made_private_even_if_it_existed(tmp_path: Path) -> None:
    existing = tmp_path / "authz.env"
    existing.write_text("old")
    existing.chmod(0o644)
    run(tmp_path, str(FIXTURES / "getall"))
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600


def test_every_rule_kind_keeps_its_name(tmp_path: Path) -> None:
    _, out = run(tmp_path, str(FIXTURES / "getall"))
    raw = yaml.safe_load(out["authz.yaml"].read_text())
    kinds: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("rule"), str):
                kinds.add(node["rule"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(raw["services"])
    assert kinds == {
        "allow",
        "deny",
        "authenticated",
        "and",
        "or",
        "match",
        "query",
        "force",
        "remove",
        "encrypt",
        "decrypt",
        "hash",
    }  # fmt: skip (webhook: gateway.yaml)
    write = raw["services"]["catalog"]["endpoints"]["write"]["rule"]["clauses"][4]
    assert write == {"rule": "and", "clauses": [
        {"rule": "hash", "fields": ["args.params.password"]},
        {"rule": "hash", "fields": ["res.token"], "encoding": "hex"},
    ]}  # fmt: skip


def test_header_operations_become_field_rules_on_headers(tmp_path: Path) -> None:
    _, out = run(tmp_path, str(FIXTURES / "getall"))
    mine = yaml.safe_load(out["authz.yaml"].read_text())["services"]["catalog"]["endpoints"]
    assert mine["mine"]["rule"] == {"rule": "and", "clauses": [
        {"rule": "authenticated"},
        {"rule": "force", "field": "args.headers.x-user", "value": "args.auth.id"},
        {"rule": "force", "field": "args.headers.x-src", "value": "space-cloud"},
        {"rule": "remove", "fields": ["args.headers.x-debug"]},
    ]}  # fmt: skip


def test_header_operations_reach_the_decision(tmp_path: Path) -> None:
    secret = "h" * 40
    src = tmp_path / "in.yaml"
    src.write_text(yaml.safe_dump({"projects": {"p": {
        "projectConfig": {"id": "p", "secrets": [{"kid": "k", "secret": secret}]},
        "remoteServices": {"svc": {"id": "svc", "endpoints": {"e": {
            "method": "GET", "path": "/e", "rule": {"rule": "authenticated"},
            "headers": [{"key": "x-user", "value": "auth.id"}, {"key": "x-debug", "op": "del"}],
        }}}},
    }}}))  # fmt: skip
    code, out = run(tmp_path, str(src))
    assert code == 0
    authorizer = Authorizer(load_config(out["authz.yaml"], read_env(out["authz.env"])))
    tok = jwt.encode({"id": "u7", "exp": int(time.time()) + 60}, secret, "HS256",
                     headers={"kid": "k"})  # fmt: skip
    request = {"method": "GET", "path": "/e", "headers": {"authorization": f"Bearer {tok}",
               "x-user": "spoofed", "x-debug": "1"}}  # fmt: skip
    (got,) = asyncio.run(run_checks(authorizer, [request], trace=False))
    assert got["allowed"] is True
    assert got["headers"]["x-user"] == "u7" and "x-debug" in got["headers_to_remove"]


def test_gateway_config_reports_every_item(tmp_path: Path) -> None:
    code, out = run(tmp_path, str(FIXTURES / "gateway.yaml"), extra=("--project", "alpha"))
    assert code == 3
    found = items(out["r.json"])
    wheres = [i["where"].split(": ", 1)[-1] for i in found if i["kind"] != "note"]
    expected = [
        "projectConfig.secrets[0].secret",  # too short: rotate
        "projectConfig.secrets[1].iss",  # two issuers
        "dbConfigs.local", "dbConfigs.ms", "dbConfigs.pg.conn", "dbConfigs.sql",
        "api.endpoints.ext.kind", "api.endpoints.gql.kind",
        "api.endpoints.hook.rule.claims", "api.endpoints.hook.rule.requestTemplate",
        "api.endpoints.hook.rule.outputFormat", "api.endpoints.hook.rule",
        "api.endpoints.odd.rule.clauses[0]", "api.endpoints.odd.rule.clauses[1].f2",
        "api.endpoints.odd.rule.clauses[2].fields", "api.endpoints.odd.rule.clauses[3].clause.type",
        "api.endpoints.odd.rule.clauses[4].db",
        "api.endpoints.tmpl.requestTemplate", "api.endpoints.tmpl.responseTemplate",
        "api.endpoints.tmpl.outputFormat", "api.endpoints.tmpl.claims",
        "api.endpoints.tmpl.headers[0].value", "api.endpoints.tmpl.headers[1].value",
        "projects.alpha.dbRules",
    ]  # fmt: skip
    for where in expected:
        assert any(w.endswith(where) for w in wheres), (where, wheres)
    assert len(wheres) == len(expected)
    assert {i["kind"] for i in found} == {"rotate", "not-carried", "differs", "note"}


def test_short_secret_must_be_rotated_before_the_config_validates(tmp_path: Path) -> None:
    _, out = run(tmp_path, str(FIXTURES / "gateway.yaml"), extra=("--project", "alpha"))
    assert json.loads(out["r.json"].read_text())["rotate"] == ["AUTHZ_SC_SECRET_SHORT"]
    env = read_env(out["authz.env"])
    with pytest.raises(ConfigError, match="at least 32"):
        Authorizer(load_config(out["authz.yaml"], env))
    env["AUTHZ_SC_SECRET_SHORT"] = "a-rotated-secret-of-at-least-32-bytes-0123"
    config = Authorizer(load_config(out["authz.yaml"], env)).config
    mine = config.services["api"].endpoints["mine"]
    assert mine.path == "/v1/users/{id}/orders"  # {auth.id}: the token's id, checked by a guard
    assert mine.rule.clauses[0].f1 == "args.pathParams.id"
    assert mine.rule.clauses[0].f2 == "args.auth.id"


def test_several_projects_need_project(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out = run(tmp_path, str(FIXTURES / "gateway.yaml"))
    assert code == 2
    assert "several projects (alpha, beta)" in capsys.readouterr().err
    assert not any(p.exists() for p in out.values())
    code, out = run(tmp_path, str(FIXTURES / "gateway.yaml"), extra=("--project", "beta"))
    assert code == 0
    config = load_config(out["authz.yaml"], read_env(out["authz.env"]))
    assert config.project == "beta" and set(config.services) == {"ping"}


def test_unknown_project_stops(tmp_path: Path) -> None:
    code, out = run(tmp_path, str(FIXTURES / "gateway.yaml"), extra=("--project", "gamma"))
    assert code == 2 and not out["authz.yaml"].exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("not-yaml.yaml", "not valid YAML or JSON (line 2)"),
        ("unknown-type.yaml", "unknown type 'widgets'"),
        ("missing-fields.yaml", "a `match` rule needs eval, f2"),
    ],
)
def test_bad_input_stops_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, name: str, message: str
) -> None:
    code, out = run(tmp_path, str(FIXTURES / "bad" / name))
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "nothing was written" in err and "Traceback" not in err
    assert not any(p.exists() for p in out.values())


def test_missing_input_stops(tmp_path: Path) -> None:
    code, out = run(tmp_path, str(tmp_path / "nope"))
    assert code == 2 and not out["authz.yaml"].exists()


def test_config_refusing_to_validate_is_not_written(tmp_path: Path) -> None:
    # An encrypt rule without Space Cloud's aesKey: the import cannot vouch for the result.
    src = tmp_path / "in.yaml"
    src.write_text(yaml.safe_dump({"projects": {"p": {
        "projectConfig": {"id": "p", "secrets": [{"secret": "s" * 40, "isPrimary": True}]},
        "remoteServices": {"svc": {"id": "svc", "endpoints": {"e": {
            "method": "POST", "path": "/e",
            "rule": {"rule": "encrypt", "fields": ["args.params.x"]}}}}},
    }}}))  # fmt: skip
    code, out = run(tmp_path, str(src))
    assert code == 2 and not out["authz.yaml"].exists()
