"""No secret ever reaches authz's output: stdout, stderr, the decision log.

A full sequence runs through a real Envoy (envoy/envoy.yaml) in front of config/example.yaml
plus a `probe` service of rules that handle secrets the way real configs do (an API key
compared with one from the environment; a password checked, then hashed; an email
encrypted). It runs twice: decision log on stdout (with info logs), then in a file (with
debug logs). The sequence: allowed and denied requests with real tokens, a wrong API key,
tokens that are expired, badly signed or garbage, field rules that hash, encrypt and decrypt,
a body that is not JSON, a tampered envelope, a query rule on SQLite, a webhook and a JWKS
whose URLs carry a key in their query (`?api_key=`).

Then every byte authz wrote is searched for: each token sent and each service token authz
minted (whole, and their signatures alone), the HS secret, the AES key (base64 and raw), the
API keys, the keys in the webhook and JWKS URLs, and the plaintext of every hashed,
encrypted or decrypted value.
"""

from __future__ import annotations

import base64
import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from authz.config.schema import CryptoSettings
from authz.crypto import Keyring
from tests.helpers import free_port
from tests.integration.harness import (
    AES_KEY,
    EXAMPLE_CONFIG,
    SECRET,
    AuthzServer,
    Envoy,
    Process,
    authz_env,
    bearer,
    make_envoy_config,
    start_echo,
    start_envoy,
    token,
)
from tests.soak.__main__ import LocalServer, jwks_body

pytestmark = pytest.mark.integration

API_KEY = "probe-api-key-" + uuid.uuid4().hex  # the partner's key, from the environment
WRONG_KEY = "probe-wrong-key-" + uuid.uuid4().hex  # a client's near miss
# a secret header whose name says nothing (no "key"/"token"/"secret" word masks it)
INTERNAL = "probe-internal-" + uuid.uuid4().hex
HOOK_URL_KEY = "probe-hook-key-" + uuid.uuid4().hex  # in the webhook URL's query
JWKS_URL_KEY = "probe-jwks-key-" + uuid.uuid4().hex  # in the JWKS URL's query
KEYRING = Keyring.from_settings(CryptoSettings(keys=[{"id": "k1", "key": AES_KEY}]))

# Endpoints resolved by path (Envoy's fallback route, with ext_proc on).
PROBE = {
    "endpoints": {
        "partner": {
            "method": "GET",
            "path": "/probe/partner",
            "rule": {"rule": "match", "type": "string", "eval": "==",
                     "f1": "args.headers.x-api-key", "f2": "${PROBE_API_KEY}",
                     "error": "bad api key"},
        },
        "internal": {
            "method": "GET",
            "path": "/probe/internal",
            "rule": {"rule": "match", "type": "string", "eval": "==",
                     "f1": "args.headers.x-internal-pass", "f2": "${PROBE_INTERNAL}"},
        },
        "signup": {
            "method": "POST",
            "path": "/probe/signup",
            "rule": {"rule": "and", "clauses": [
                {"rule": "match", "type": "string", "eval": "!=",
                 "f1": "args.params.password", "f2": "args.params.username",
                 "error": "the password must differ from the user name"},
                {"rule": "hash", "fields": ["args.params.password"]},
                {"rule": "encrypt", "fields": ["args.params.email"]},
            ]},
        },
    }
}  # fmt: skip


def secret(prefix: str) -> str:
    """A value that is unique to this run, so that finding it anywhere means it leaked."""
    return f"{prefix}-{uuid.uuid4().hex}"


@dataclass
class Stand:
    name: str
    authz: AuthzServer
    envoy: Envoy
    echo: Any
    output: Path  # authz's stdout + stderr
    decision_log: Path | None  # the decision log file, when not on stdout

    def written(self) -> str:
        """Everything authz wrote (call after it has exited)."""
        text = self.output.read_text(encoding="utf-8", errors="replace")
        if self.decision_log is not None:
            text += self.decision_log.read_text(encoding="utf-8", errors="replace")
        return text

    def decision_lines(self) -> list[dict[str, Any]]:
        source = self.decision_log or self.output
        out = []
        for line in source.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out


@dataclass
class Sent:
    """What the sequence sent and got, and the strings that must never be in authz's output."""

    secrets: dict[str, str] = field(default_factory=dict)  # what -> value
    request_ids: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)  # what -> status

    def keep(self, what: str, value: str) -> str:
        self.secrets[what] = value
        return value


def _config(log_dir: Path, hook_port: int, jwks_port: int) -> Path:
    raw = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    # a webhook and a JWKS with a key in the URL (the echo upstream answers the webhook)
    hook = {"rule": "webhook", "url": f"http://127.0.0.1:{hook_port}/hook?api_key={HOOK_URL_KEY}"}
    hook_endpoint = {"method": "GET", "path": "/probe/hook", "rule": hook}
    raw["services"]["probe"] = {"endpoints": {**PROBE["endpoints"], "hook": hook_endpoint}}
    jwks = f"http://127.0.0.1:{jwks_port}/jwks?access_token={JWKS_URL_KEY}"
    raw["auth"]["secrets"].append({"jwksUrl": jwks, "alg": "RS256"})
    path = log_dir / "secrets.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=["stdout", "file"])
def stand(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[Stand]:
    (d := log_dir / request.param).mkdir()
    echo, jwks = start_echo(), LocalServer(jwks_body())
    config = _config(d, echo.port, jwks.port)
    decision_log = None if request.param == "stdout" else d / "decisions.jsonl"
    level = "info" if request.param == "stdout" else "debug"
    grpc_port, http_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "authz", "serve", "--config", str(config),
           "--listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}",
           "--drain", "0s", "--log-level", level,
           "--decision-log", str(decision_log or "stdout")]  # fmt: skip
    proc = Process(
        "authz", cmd, d, authz_env({"PROBE_API_KEY": API_KEY, "PROBE_INTERNAL": INTERNAL})
    )
    envoy = None
    try:
        proc.wait_http_ok(f"http://127.0.0.1:{http_port}/readyz")
        envoy_config = make_envoy_config(
            authz_ports=grpc_port, upstream_port=echo.port, listen_port=free_port(),
            admin_port=free_port(),
        )  # fmt: skip
        envoy = start_envoy(envoy_config, d)
        yield Stand(
            request.param, AuthzServer(proc, grpc_port, http_port), envoy, echo,
            proc.log_path, decision_log,
        )  # fmt: skip
    finally:
        if envoy is not None:
            envoy.process.stop()
        proc.stop()
        echo.stop()
        jwks.stop()


def _sequence(stand: Stand) -> Sent:
    sent = Sent()
    sent.keep("HS secret", SECRET)
    sent.keep("AES key (base64)", AES_KEY)
    sent.keep("AES key (raw)", base64.b64decode(AES_KEY).decode())
    sent.keep("partner API key", API_KEY)
    sent.keep("a wrong API key", WRONG_KEY)
    sent.keep("internal pass", INTERNAL)
    sent.keep("webhook URL key", HOOK_URL_KEY)
    sent.keep("JWKS URL key", JWKS_URL_KEY)
    wrong_internal = sent.keep("a wrong internal pass", secret("probe-internal-guess"))

    user = sent.keep("user token", token({"id": "u1", "role": "user", "orders": ["o-1"]}))
    admin = sent.keep("admin token", token({"id": "a1", "role": "admin"}))
    expired = sent.keep("expired token", token({"id": "u1"}, ttl=-3600))
    forged = token({"id": "a1", "role": "admin"}, secret="not-the-secret-" + "x" * 32)
    sent.keep("badly signed token", forged)
    garbage = sent.keep("garbage token", secret("garbage-token"))
    for what in ("user token", "admin token", "expired token", "badly signed token"):
        sent.keep(f"{what} signature", sent.secrets[what].rsplit(".", 1)[1])

    email, password = secret("alice") + "@example.org", secret("pw")
    email2, password2 = secret("bob") + "@example.org", secret("pw2")
    looked_up = secret("carol") + "@example.org"
    sent.keep("registered email", email)
    sent.keep("registered password", password)
    sent.keep("probe email", email2)
    sent.keep("probe password", password2)
    sent.keep("decrypted email", looked_up)
    envelope = KEYRING.encrypt(looked_up, "query.email")
    tampered = envelope[:-6] + ("A" if envelope[-6] != "A" else "B") + envelope[-5:]
    bad_json = f'{{"email": "{email}", "password": "{password}", '.encode()

    key = bearer(user)  # every rule but `allow` needs a token
    # (what, method, path, headers, body, expected status)
    steps: list[tuple[str, str, str, dict[str, str], Any, int]] = [
        ("own order", "GET", "/v1/orders/o-1", bearer(user), None, 200),
        ("someone else's order", "GET", "/v1/orders/o-9", bearer(user), None, 403),
        ("admin endpoint as a user", "GET", "/v1/admin/stats", bearer(user), None, 403),
        ("admin endpoint as an admin", "GET", "/v1/admin/stats", bearer(admin), None, 200),
        ("expired token", "GET", "/v1/orders", bearer(expired), None, 401),
        ("badly signed token", "GET", "/v1/orders", bearer(forged), None, 401),
        ("garbage token", "GET", "/v1/orders", bearer(garbage), None, 401),
        ("token without scheme", "GET", "/v1/orders", {"authorization": user}, None, 401),
        ("register", "POST", "/v1/users", bearer(user), {"email": email, "password": password},
         200),
        ("register, bad token", "POST", "/v1/users", bearer(forged),
         {"email": email, "password": password}, 401),
        ("register, body not JSON", "POST", "/v1/users",
         {**bearer(user), "content-type": "application/json"}, bad_json, 400),
        ("lookup decrypts", "GET", f"/v1/users/lookup?email={envelope}", bearer(user), None, 200),
        ("lookup, tampered envelope", "GET", f"/v1/users/lookup?email={tampered}", bearer(user),
         None, 502),
        ("private profile", "GET", "/v1/profiles/u3", bearer(user), None, 403),
        ("partner, right key", "GET", "/probe/partner", {**key, "x-api-key": API_KEY}, None, 200),
        ("partner, wrong key", "GET", "/probe/partner", {**key, "x-api-key": WRONG_KEY}, None, 403),
        ("internal, right pass", "GET", "/probe/internal",
         {**key, "x-internal-pass": INTERNAL}, None, 200),
        ("internal, wrong pass", "GET", "/probe/internal",
         {**key, "x-internal-pass": wrong_internal}, None, 403),
        ("signup", "POST", "/probe/signup", bearer(user),
         {"username": "bob", "email": email2, "password": password2}, 200),
        ("signup, password = user name", "POST", "/probe/signup", bearer(user),
         {"username": password2, "email": email2, "password": password2}, 403),
        ("webhook", "GET", "/probe/hook", bearer(user), None, 200),
    ]  # fmt: skip
    with httpx.Client(timeout=10) as client:
        for what, method, path, headers, body, _ in steps:
            rid = str(uuid.uuid4())
            kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {}
            if isinstance(body, dict):
                kwargs["json"] = body
            resp = client.request(
                method, stand.envoy.url(path), headers={**headers, "x-request-id": rid}, **kwargs
            )
            sent.request_ids.append(rid)
            sent.statuses[what] = resp.status_code
            if what == "lookup decrypts":
                assert resp.json()["query"]["email"] == looked_up  # decrypted for the client
        # a client-chosen request id with line separators: still one record, one line
        rid = f'{uuid.uuid4()}\u2028{{"allowed":true}}\u0085x'
        resp = client.get(
            stand.envoy.url("/v1/orders/o-9"),
            headers={**bearer(user), "x-request-id": rid.encode()},
        )
        assert resp.status_code == 403
        sent.request_ids.append(rid)
    hooks = [seen for seen in stand.echo.requests if seen["path"] == "/hook"]
    assert [seen["query"] for seen in hooks] == [{"api_key": HOOK_URL_KEY}]  # the key was used
    for i, seen in enumerate(stand.echo.requests):  # service tokens authz minted
        if "x-sc-token" in seen["headers"]:
            minted = seen["headers"]["x-sc-token"].removeprefix("Bearer ")
            sent.keep(f"service token {i}", minted)
            sent.keep(f"service token {i} signature", minted.rsplit(".", 1)[1])
    expected = {what: status for what, *_, status in steps}
    assert sent.statuses == expected, {
        k: (v, expected[k]) for k, v in sent.statuses.items() if v != expected[k]
    }
    return sent


def test_no_token_key_or_plaintext_in_any_output(stand: Stand) -> None:
    sent = _sequence(stand)
    minted = [k for k in sent.secrets if k.startswith("service token")]
    assert minted, "the upstream got no service token"
    assert stand.authz.process.stop() == 0, stand.authz.process.log()  # flushes the log
    written = stand.written()

    # the decision log did record the sequence: one line per request
    lines = {rec.get("requestId"): rec for rec in stand.decision_lines()}
    missing = [rid for rid in sent.request_ids if rid not in lines]
    assert not missing, f"{len(missing)} requests have no decision log line"

    leaked = sorted(what for what, value in sent.secrets.items() if value in written)
    print(
        f"\n[{stand.name}] {len(sent.request_ids)} requests, {len(written)} bytes of authz "
        f"output searched for {len(sent.secrets)} secrets: leaked {leaked or 'none'}"
    )
    assert not leaked, f"in authz's output ({stand.output}): {leaked}"
