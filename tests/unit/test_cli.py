import json
from pathlib import Path

import jwt
import pytest

from authz.cli import main

SECRET = "0123456789abcdef0123456789abcdef-cli"


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("CLI_SECRET", SECRET)
    p = tmp_path / "c.yaml"
    p.write_text(
        """
project: demo
auth: {secrets: [{alg: HS256, secret: "${CLI_SECRET}", primary: true}]}
services:
  s:
    endpoints:
      me:
        method: POST
        path: /me/{id}
        rule: {rule: match, eval: "==", type: string, f1: args.auth.id, f2: args.pathParams.id}
"""
    )
    return p


def test_validate_ok(config, capsys):
    assert main(["validate", "--config", str(config)]) == 0
    assert "valid (1 services, 1 endpoints" in capsys.readouterr().out


def test_validate_prints_every_error(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("project: p\nx: 1\nservices: {s: {endpoints: {e: {rule: {rule: nope}}}}}\n")
    assert main(["validate", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert "<root>: unknown key 'x'" in err and "rule: unknown rule 'nope'" in err


def test_config_from_environment(config, monkeypatch, capsys):
    monkeypatch.setenv("AUTHZ_CONFIG", str(config))
    from authz import cli

    assert cli.main(["validate"]) == 0


def test_token_is_signed_by_the_primary_key(config, capsys):
    assert main(["token", "--config", str(config), "--claims", '{"id":"u1"}', "--ttl", "2h"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"])
    assert claims["id"] == "u1" and claims["exp"] - claims["iat"] == 7200


@pytest.mark.parametrize("claims", ["[1]", "{bad"])
def test_token_rejects_bad_claims(config, claims, capsys):
    assert main(["token", "--config", str(config), "--claims", claims]) == 2
    assert "claims" in capsys.readouterr().err


def test_check_evaluates_a_list_offline(config, tmp_path, capsys):
    tok = jwt.encode({"id": "u1"}, SECRET, algorithm="HS256")
    reqs = [
        {"method": "POST", "path": "/me/u1", "headers": {"Authorization": f"Bearer {tok}"},
         "body": {"a": 1}},
        {"method": "POST", "path": "/me/u2", "headers": {"Authorization": f"Bearer {tok}"}},
        {"service": "s", "endpoint": "me", "method": "POST", "path": "/me/u1"},
        {"service": "s", "endpoint": "me", "method": "GET", "path": "/me/u1"},
    ]  # fmt: skip
    f = tmp_path / "r.json"
    f.write_text(json.dumps(reqs))
    assert main(["check", "--config", str(config), str(f)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(d["allowed"], d["status"]) for d in out] == [
        (True, 200),
        (False, 403),
        (False, 401),
        (False, 403),
    ]
    assert out[0]["params"] is None  # the rule reads no params, so the body is not parsed
    assert out[1]["trace"][0]["result"] == "fail"


def test_check_single_object_gives_single_object(config, tmp_path, capsys):
    f = tmp_path / "r.json"
    f.write_text('{"method": "POST", "path": "/me/x"}')
    assert main(["check", "--config", str(config), str(f), "--no-trace"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["allowed"] is False and "trace" not in out


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ("[1]", "array of objects"),
     ('{"pth": "/"}', "unknown key"), ('{"path": "x"}', "path must be")],
)  # fmt: skip
def test_check_bad_input_is_a_clear_error(config, tmp_path, capsys, content, message):
    f = tmp_path / "r.json"
    f.write_text(content)
    assert main(["check", "--config", str(config), str(f)]) == 2
    assert message in capsys.readouterr().err


AES_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # base64 of 32 bytes


def test_encrypt_gives_an_envelope_the_rule_decrypts(config, capsys):
    from authz.config.schema import CryptoSettings
    from authz.crypto import Keyring

    config.write_text(config.read_text() + f"crypto: {{keys: [{{id: k1, key: {AES_KEY}}}]}}\n")
    assert main(["encrypt", "--config", str(config), "--field", "res.card.no", "4111"]) == 0
    envelope = capsys.readouterr().out.strip()
    assert envelope.startswith("v1.k1.") and "4111" not in envelope
    keyring = Keyring.from_settings(CryptoSettings(keys=[{"id": "k1", "key": AES_KEY}]))
    assert keyring.decrypt(envelope, "card.no") == "4111"  # bound to the field, not the root


@pytest.mark.parametrize(
    ("field", "crypto", "message"),
    [
        ("args.nope.x", True, "a field path is"),
        ("args.params.x", False, "no crypto key"),
    ],
)
def test_encrypt_bad_input_is_a_clear_error(config, capsys, field, crypto, message):
    if crypto:
        config.write_text(config.read_text() + f"crypto: {{keys: [{{id: k1, key: {AES_KEY}}}]}}\n")
    assert main(["encrypt", "--config", str(config), "--field", field, "v"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("preset", [False, True])
def test_serve_workers_metrics_directory_is_removed_unless_given(
    config, tmp_path, monkeypatch, preset
):
    # --workers share metrics through a directory: one authz made is removed when serving
    # ends; one the operator set is theirs and stays
    import os

    import authz.workers

    given = tmp_path / "metrics"
    given.mkdir()
    if preset:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(given))
    else:
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    seen: list[str] = []

    def fake_run_server(options):
        seen.append(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        (Path(seen[0]) / "counter_1.db").write_bytes(b"x")  # what a worker leaves
        return 0

    monkeypatch.setattr(authz.workers, "run_server", fake_run_server)
    assert main(["serve", "--config", str(config), "--workers", "2", "--watch", "0"]) == 0
    assert Path(seen[0]).exists() is preset
    assert (os.environ.get("PROMETHEUS_MULTIPROC_DIR") == str(given)) is preset


@pytest.mark.parametrize(("which", "workers"), [("grpc", 1), ("http", 1), ("grpc", 2)])
def test_serve_on_a_busy_port_is_one_line(config, which, workers):
    """No traceback: one line naming the address, and a failing exit status."""
    import os
    import socket
    import subprocess
    import sys

    from tests.helpers import free_port

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = f"127.0.0.1:{busy.getsockname()[1]}"
    free = f"127.0.0.1:{free_port()}"
    grpc_addr, http_addr = (taken, free) if which == "grpc" else (free, taken)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "authz", "serve", "--config", str(config), "--listen",
             grpc_addr, "--http-listen", http_addr, "--watch", "0", "--drain", "0s",
             "--workers", str(workers)],
            capture_output=True, text=True, timeout=60, env={**os.environ, "CLI_SECRET": SECRET},
        )  # fmt: skip
    finally:
        busy.close()
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"authz serve: cannot listen on {taken}: "), line


def test_apikey_prints_a_new_key_and_its_config_line(capsys):
    import hashlib

    import yaml

    assert main(["apikey", "--claims", '{"id": "billing"}']) == 0
    out = capsys.readouterr().out.splitlines()
    key = out[0].removeprefix("key: ")
    assert key.startswith("azk_") and len(key) > 40
    entry = yaml.safe_load(out[-1])[0]
    assert entry == {
        "sha256": hashlib.sha256(key.encode()).hexdigest(),
        "claims": {"id": "billing"},
    }
    assert key not in out[-1]


def test_apikey_hash(capsys, monkeypatch):
    import io

    assert main(["apikey", "--hash", "test"]) == 0
    assert capsys.readouterr().out.strip() == (
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("test\n"))
    assert main(["apikey", "--hash", "-"]) == 0
    assert capsys.readouterr().out.strip().startswith("9f86d0")
    assert main(["apikey", "--claims", "[1]"]) == 2
    assert main(["apikey", "--hash", ""]) == 2


def test_check_explain_shows_the_identity_and_args_auth(tmp_path, capsys, monkeypatch):
    import hashlib

    from tests.unit.identity.certs import issue, make_ca

    spiffe = "spiffe://example.org/sa/billing"
    config = tmp_path / "c.yaml"
    digest = hashlib.sha256(b"azk_k-0123456789").hexdigest()
    config.write_text(f"""
project: demo
auth:
  secrets: [{{alg: HS256, secret: "{SECRET}", primary: true}}]
  apiKeys: {{keys: [{{sha256: {digest}, claims: {{id: billing}}}}]}}
  mtls: {{}}
services:
  s:
    endpoints:
      e: {{path: /e, identity: [apiKey, mtls], rule: {{rule: authenticated}}}}
""")
    pem = issue(make_ca(), "billing", uris=(spiffe,)).pem
    requests = tmp_path / "r.json"
    requests.write_text(json.dumps([
        {"path": "/e", "headers": {"x-api-key": "azk_k-0123456789"}},
        {"path": "/e", "peer": {"principal": spiffe, "certificate": pem}},
        {"path": "/e", "peer": {"principal": 1}},
    ]))  # fmt: skip
    assert main(["check", "--config", str(config), str(requests), "--explain"]) == 2
    assert "peer must be an object of strings" in capsys.readouterr().err
    requests.write_text(json.dumps(json.loads(requests.read_text())[:2]))
    assert main(["check", "--config", str(config), str(requests), "--explain"]) == 0
    out = capsys.readouterr().out
    assert 'identity: apiKey  args.auth = {"id": "billing"}' in out
    assert 'identity: mtls  args.auth = {"dns": [], "fingerprint": ' in out
    assert f'"id": "{spiffe}"' in out
    assert main(["check", "--config", str(config), str(requests)]) == 0
    decisions = json.loads(capsys.readouterr().out)
    assert [d["identity"] for d in decisions] == ["apiKey", "mtls"]
    assert decisions[1]["auth"]["spiffe"] == spiffe
