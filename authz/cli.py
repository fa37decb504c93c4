"""The `authz` command line: serve, check, validate, token, test, envoy-config, import. Every
flag also reads AUTHZ_*."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authz.durations import parse_duration
from authz.errors import ConfigError, ListenError
from authz.importers.spacecloud.command import add_parser as add_import_parser

if TYPE_CHECKING:
    from authz.authorizer import Authorizer


def _env(flag: str, default: Any = None) -> Any:
    return os.environ.get("AUTHZ_" + flag.upper().replace("-", "_"), default)


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", default=_env("config"), required=_env("config") is None,
        help="config file, YAML or JSON (env AUTHZ_CONFIG)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authz", description="External authorization for Envoy with security rules."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve Check (gRPC) and /healthz, /readyz (HTTP)")
    _add_config(p)
    p.add_argument("--listen", default=_env("listen", "0.0.0.0:9001"), help="gRPC address")
    p.add_argument("--http-listen", default=_env("http-listen", "0.0.0.0:9002"))
    p.add_argument(
        "--check-http-listen", default=_env("check-http-listen", ""),
        help="also serve Check over Envoy's ext_authz HTTP transport here (off by default; "
        "docs suggest :9003)",
    )  # fmt: skip
    p.add_argument(
        "--check-http-prefix", default=_env("check-http-prefix", ""),
        help="the http_service path_prefix Envoy puts before every Check path",
    )  # fmt: skip
    p.add_argument("--workers", type=int, default=int(_env("workers", "1")))
    p.add_argument("--drain", default=_env("drain", "5s"), help="not-ready time after SIGTERM")
    p.add_argument(
        "--dry-run", action="store_true", default=_env("dry-run", "") in ("1", "true"),
        help="evaluate and log, but always allow",
    )  # fmt: skip
    p.add_argument(
        "--watch", default=_env("watch", "1s"), help="config file poll period ('0' turns it off)"
    )
    p.add_argument(
        "--decision-log", default=_env("decision-log", "off"), help="off, stdout or a file path"
    )
    p.add_argument(
        "--decision-log-sample-allows", type=float,
        default=float(_env("decision-log-sample-allows", "1")),
        help="fraction of allowed decisions logged (denials are always logged)",
    )  # fmt: skip
    p.add_argument(
        "--debug-api", action="store_true", default=_env("debug-api", "") in ("1", "true"),
        help="also serve authz.v1.Debug/Explain (rule traces; keep the port operators-only)",
    )  # fmt: skip
    p.add_argument("--log-level", default=_env("log-level", "info"))
    p.add_argument("--tls-cert", default=_env("tls-cert"), help="gRPC over TLS: cert chain (PEM)")
    p.add_argument("--tls-key", default=_env("tls-key"), help="gRPC over TLS: private key (PEM)")
    p.add_argument(
        "--client-ca", default=_env("client-ca"),
        help="gRPC mTLS: accept only callers (Envoy) with a certificate this CA signed",
    )  # fmt: skip

    p = sub.add_parser("check", help="evaluate requests from a JSON file, print decisions")
    _add_config(p)
    p.add_argument("requests", help="JSON file (object or array of objects), '-' for stdin")
    p.add_argument("--no-trace", action="store_true", help="leave the rule trace out")
    p.add_argument("--explain", action="store_true", help="print the evaluation tree as text")

    p = sub.add_parser("validate", help="validate a config; print every error")
    _add_config(p)
    p.add_argument(
        "--connect", action="store_true",
        help="also open each datastore read-only: the tables and columns the rules name exist",
    )  # fmt: skip

    p = sub.add_parser("test", help="run rule test files (requests, fixtures, expectations)")
    p.add_argument("paths", nargs="+", help="test files, or directories of *.tests.yaml")
    p.add_argument(
        "--coverage", action="store_true", help="list the rules and clauses never evaluated"
    )
    p.add_argument("--explain", action="store_true", help="print the tree of failing cases")

    p = sub.add_parser("envoy-config", help="print an Envoy bootstrap routing every endpoint")
    _add_config(p)
    p.add_argument("--authz-address", default=_env("authz-address", "127.0.0.1:9001"))
    p.add_argument(
        "--transport", choices=("grpc", "http"), default=_env("transport", "grpc"),
        help="ext_authz over gRPC (default) or HTTP (ext_proc, when needed, stays gRPC)",
    )  # fmt: skip
    p.add_argument(
        "--authz-http-address", default=_env("authz-http-address", "127.0.0.1:9003"),
        help="authz's HTTP Check address (serve --check-http-listen), for --transport http",
    )  # fmt: skip
    p.add_argument("--listen", default=_env("envoy-listen", "0.0.0.0:8000"))
    p.add_argument("--admin", default=_env("envoy-admin", "127.0.0.1:9901"))
    p.add_argument(
        "--timeout", default=_env("authz-timeout", "500ms"), help="ext_authz/ext_proc deadline"
    )
    # TLS on Envoy's listener; --client-ca makes it mTLS for auth.mtls (docs/identity.md)
    p.add_argument(
        "--tls-cert", default=_env("envoy-tls-cert"), help="server cert chain (PEM path)"
    )
    p.add_argument("--tls-key", default=_env("envoy-tls-key"), help="its private key (PEM path)")
    p.add_argument(
        "--client-ca", default=_env("envoy-client-ca"),
        help="CA bundle for client certificates: require and verify them (mTLS)",
    )  # fmt: skip

    p = sub.add_parser("token", help="mint a JWT signed by the primary key")
    _add_config(p)
    p.add_argument("--claims", default=_env("claims", "{}"), help="JSON object of claims")
    p.add_argument("--ttl", default=_env("ttl", "1h"), help="lifetime, e.g. 15m, 1h, 720h")

    p = sub.add_parser(
        "encrypt", help="encrypt a value as an `encrypt` field rule would (test data, fixtures)"
    )
    _add_config(p)
    p.add_argument(
        "--field", required=True,
        help="the rule's field path, e.g. args.query.email or res.card (bound into the cipher)",
    )  # fmt: skip
    p.add_argument("value", help="the plaintext ('-' reads one line from stdin)")
    p = sub.add_parser(
        "apikey", help="make a random API key and its auth.apiKeys line (or hash a key)"
    )
    p.add_argument(
        "--claims", default=_env("claims", "{}"), help="JSON object: the key's args.auth"
    )
    p.add_argument(
        "--hash", metavar="KEY", default=None,
        help="print the sha256 of an existing key instead ('-' reads one line from stdin)",
    )  # fmt: skip
    add_import_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = getattr(args, "log_level", "warning").upper()
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx and httpcore log each request's URL at INFO (and more at DEBUG): webhook and JWKS
    # URLs may carry a key (`?api_key=`), so they speak only of problems, at any --log-level.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    handler = {
        "serve": _serve, "check": _check, "validate": _validate, "token": _token,
        "test": _test, "envoy-config": _envoy_config, "encrypt": _encrypt, "import": _import,
        "apikey": _apikey,
    }  # fmt: skip
    try:
        return handler[args.command](args)
    except BrokenPipeError:  # `authz check ... | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ConfigError as exc:
        print(f"invalid config {args.config}:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"authz {args.command}: {exc}", file=sys.stderr)
        return 2
    except ListenError as exc:  # a busy port: one line naming the address, no traceback
        print(f"authz {args.command}: {exc}", file=sys.stderr)
        return 1


class UsageError(Exception):
    pass


def _load(args: argparse.Namespace) -> Authorizer:
    from authz.authorizer import Authorizer
    from authz.config.load import load_config

    return Authorizer(load_config(args.config))


def _validate(args: argparse.Namespace) -> int:
    from authz.validate import connect_problems, validate_file

    report = validate_file(args.config)
    tables = 0
    if args.connect and report.config is not None:
        found, tables = connect_problems(report.config)
        report.problems.extend(found)
    if report.problems:
        raise ConfigError(report.problems)
    authorizer = report.authorizer
    n = len(authorizer.endpoints)
    services = len(authorizer.config.services)
    checked = f", {tables} tables checked" if args.connect else ""
    print(
        f"{args.config}: valid ({services} services, {n} endpoints{checked}, "
        f"version {authorizer.version})"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Workers share metrics through files; must be set before prometheus_client loads.
        # The directory is ours: removed when serving ends (the workers are gone by then).
        import shutil
        import tempfile

        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
            prefix="authz-metrics-"
        )
        try:
            return _serve_options(args)
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return _serve_options(args)


def _serve_options(args: argparse.Namespace) -> int:
    from authz.server import ServeOptions
    from authz.workers import run_server

    _load(args)  # fail before binding anything (and before forking workers)
    try:
        drain = parse_duration(args.drain)
        watch = 0.0 if args.watch == "0" else parse_duration(args.watch)
    except ValueError as exc:
        raise UsageError(f"--drain/--watch: {exc}") from None
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if not 0 <= args.decision_log_sample_allows <= 1:
        raise UsageError("--decision-log-sample-allows must be between 0 and 1")
    _check_grpc_tls(args)
    options = ServeOptions(
        config=args.config, listen=args.listen, http_listen=args.http_listen,
        workers=args.workers, drain=drain, dry_run=args.dry_run, watch=watch,
        decision_log=args.decision_log,
        decision_log_sample_allows=args.decision_log_sample_allows,
        debug_api=args.debug_api, check_http_listen=args.check_http_listen,
        check_http_prefix=args.check_http_prefix, tls_cert=args.tls_cert,
        tls_key=args.tls_key, client_ca=args.client_ca,
    )  # fmt: skip
    prefix = args.check_http_prefix
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        raise UsageError("--check-http-prefix must start with '/' and not end with it")
    return run_server(options)


def _check_grpc_tls(args: argparse.Namespace) -> None:
    """`serve`'s TLS files, checked before anything is bound: readable PEM, complete set."""
    files = {"tls_cert": args.tls_cert, "tls_key": args.tls_key, "client_ca": args.client_ca}
    if not any(files.values()):
        return
    if not (args.tls_cert and args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together (and --client-ca needs both)")
    for name, path in files.items():
        if path is None:
            continue
        try:
            head = Path(path).read_bytes()[:4096]
        except OSError as exc:
            raise UsageError(f"--{name.replace('_', '-')}: {path}: {exc.strerror}") from None
        if b"-----BEGIN " not in head:
            raise UsageError(f"--{name.replace('_', '-')}: {path} is not PEM")


def _token(args: argparse.Namespace) -> int:
    authorizer = _load(args)
    try:
        claims = json.loads(args.claims)
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        raise UsageError(f"--claims/--ttl: {exc}") from None
    if not isinstance(claims, dict):
        raise UsageError("--claims must be a JSON object")
    print(authorizer.runtime.identity.mint(claims, ttl))
    return 0


def _apikey(args: argparse.Namespace) -> int:
    from authz.identity.apikeys import config_line, digest, new_key

    if args.hash is not None:
        key = sys.stdin.readline().rstrip("\n") if args.hash == "-" else args.hash
        if not key:
            raise UsageError("--hash: the key is empty")
        print(digest(key))
        return 0
    try:
        claims = json.loads(args.claims)
    except ValueError as exc:
        raise UsageError(f"--claims: {exc}") from None
    if not isinstance(claims, dict):
        raise UsageError("--claims must be a JSON object")
    key = new_key()
    print(f"key: {key}")
    print("# give the key to its client; put only this line under auth.apiKeys.keys:")
    print(config_line(digest(key), claims))
    return 0


def _encrypt(args: argparse.Namespace) -> int:
    from authz.rules.compiling import CompileContext
    from authz.rules.fields import compile_field

    authorizer = _load(args)
    keyring = authorizer.runtime.keyring
    if keyring is None or not keyring.can_encrypt:
        raise UsageError("the config has no crypto key to encrypt with (crypto.keys)")
    cc = CompileContext(config=authorizer.config)
    field = compile_field(args.field, cc, "--field")
    if field is None:
        raise UsageError("; ".join(cc.errors))
    value = sys.stdin.readline().rstrip("\n") if args.value == "-" else args.value
    print(keyring.encrypt(value, field.aad))
    return 0


def _check(args: argparse.Namespace) -> int:
    from authz.checkfile import read_requests, run_checks

    authorizer = _load(args)
    try:
        text = sys.stdin.read() if args.requests == "-" else Path(args.requests).read_text()
        items, single = read_requests(text)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if args.explain:
        from authz.explain import explain_requests

        print(asyncio.run(explain_requests(authorizer, items)))
        return 0
    results = asyncio.run(run_checks(authorizer, items, trace=not args.no_trace))
    print(json.dumps(results[0] if single else results, indent=2, default=str))
    return 0


def _test(args: argparse.Namespace) -> int:
    from authz.ruletest.report import run_tests

    return run_tests(args.paths, coverage=args.coverage, explain=args.explain)


def _import(args: argparse.Namespace) -> int:
    from authz.importers.spacecloud.command import run

    return run(args)


def _envoy_config(args: argparse.Namespace) -> int:
    from authz.envoy.bootstrap import BootstrapOptions, render_bootstrap
    from authz.envoy.tls import ListenerTls

    authorizer = _load(args)
    try:
        options = BootstrapOptions(
            authz=args.authz_address, listen=args.listen, admin=args.admin,
            timeout=parse_duration(args.timeout), transport=args.transport,
            authz_http=args.authz_http_address,
            tls=ListenerTls.of(args.tls_cert, args.tls_key, args.client_ca),
        )  # fmt: skip
        text = render_bootstrap(authorizer, options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(text, end="")
    return 0
