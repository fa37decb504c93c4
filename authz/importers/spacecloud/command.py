"""`authz import spacecloud FILE|DIR...`: read, convert, check, then write everything at once.

Exit codes: 0 everything carried over, 3 something reported (the table on stderr says what),
2 stopped (bad input, several projects without --project): nothing written.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from authz.errors import ConfigError
from authz.importers.spacecloud.report import ImportStopped

if TYPE_CHECKING:
    from authz.importers.spacecloud.convert import Result

EXIT_OK, EXIT_STOPPED, EXIT_REPORTED = 0, 2, 3
# Stands in for a secret to be rotated while the rest of the config is checked.
_ROTATED_STAND_IN = "x" * 64


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("import", help="turn another system's configuration into an authz config")
    kinds = p.add_subparsers(dest="source", required=True)
    p = kinds.add_parser("spacecloud", help="a Space Cloud project (space-cli get all, or the "
                         "gateway config file)")  # fmt: skip
    p.add_argument("inputs", nargs="+", metavar="FILE|DIR", help="Space Cloud YAML/JSON")
    for flag, default, text in (
        ("project", None, "the project to import when the input has several"),
        ("out", "authz.yaml", "the authz config to write"),
        ("env-out", "authz.env", "secret values (written mode 0600)"),
        ("envoy", None, "also write an Envoy bootstrap for the config"),
        ("report", None, "also write the report as JSON"),
        ("authz-address", "127.0.0.1:9001", "authz's gRPC address, for --envoy"),
        ("listen", "0.0.0.0:8000", "Envoy's listener, for --envoy"),
    ):
        env = "AUTHZ_IMPORT_" + flag.upper().replace("-", "_")
        p.add_argument(f"--{flag}", default=os.environ.get(env, default), help=f"{text} ({env})")


def run(args: argparse.Namespace) -> int:
    from authz.importers.spacecloud.convert import convert_project
    from authz.importers.spacecloud.source import read_projects

    try:
        projects = read_projects(args.inputs)
        pid = _pick(projects, args.project)
        result = convert_project(projects[pid])
        out = Path(args.out)
        text = render_config(result, args)
        envoy = _check(text, result, out.parent, args)
    except ImportStopped as exc:
        print(f"authz import spacecloud: {exc}", file=sys.stderr)
        print("nothing was written", file=sys.stderr)
        return EXIT_STOPPED
    code = EXIT_OK if result.report.complete else EXIT_REPORTED
    written = [str(out), args.env_out, *([args.envoy] if args.envoy else [])]
    try:
        out.write_text(text, encoding="utf-8")
        write_env(Path(args.env_out), result.env)
        if args.envoy:
            Path(args.envoy).write_text(envoy, encoding="utf-8")
        if args.report:
            summary = {"project": pid, "exit": code, "written": written, "rotate": result.rotate}
            Path(args.report).write_text(result.report.to_json(summary), encoding="utf-8")
    except OSError as exc:
        print(f"authz import spacecloud: cannot write {exc.filename}: {exc.strerror}",
              file=sys.stderr)  # fmt: skip
        return EXIT_STOPPED
    result.report.print_table(sys.stderr)
    print(f"project {pid}: wrote {', '.join(written)}", file=sys.stderr)
    if result.rotate:
        print(f"the config validates once {', '.join(result.rotate)} "
              "hold(s) a long enough secret", file=sys.stderr)  # fmt: skip
    print(f"next: set -a; . {args.env_out}; set +a; authz validate --config {out}",
          file=sys.stderr)  # fmt: skip
    return code


def _pick(projects: dict[str, Any], wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in projects:
            raise ImportStopped(f"no project {wanted!r} (found: {', '.join(sorted(projects))})")
        return wanted
    if len(projects) > 1:
        raise ImportStopped(f"several projects ({', '.join(sorted(projects))}): pick one with "
                            "--project")  # fmt: skip
    return next(iter(projects))


def render_config(result: Result, args: argparse.Namespace) -> str:
    header = (
        f"# Imported from Space Cloud by `authz import spacecloud` (project "
        f"{result.config['project']}).\n"
        f"# Secret values are in {args.env_out}: `set -a; . {args.env_out}; set +a` first.\n"
    )
    body = yaml.dump(result.config, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return header + body


class _Dumper(yaml.SafeDumper):
    """PEM keys and other multi-line values as `|` blocks, the way people write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _check(text: str, result: Result, base_dir: Path, args: argparse.Namespace) -> str:
    """Validate what will be written (a secret to rotate replaced by a stand-in) and render the
    Envoy bootstrap from it: a config the import cannot vouch for is not written."""
    from authz.authorizer import Authorizer
    from authz.config.load import load_config_text
    from authz.envoy.bootstrap import BootstrapOptions, render_bootstrap

    env = {**result.env, **{var: _ROTATED_STAND_IN for var in result.rotate}}
    try:
        config = load_config_text(text, env, name=args.out, base_dir=base_dir)
        authorizer = Authorizer(config)
        if not args.envoy:
            return ""
        return render_bootstrap(
            authorizer, BootstrapOptions(authz=args.authz_address, listen=args.listen)
        )
    except ConfigError as exc:
        raise ImportStopped(
            "the imported config would not validate:\n  " + "\n  ".join(exc.errors)
        ) from None
    except ValueError as exc:
        raise ImportStopped(f"cannot render the Envoy config: {exc}") from None


def write_env(path: Path, env: dict[str, str]) -> None:
    """`NAME='value'` lines for `set -a; . FILE`, created 0600 (and kept 0600 if it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("# Secret values of the imported config. Keep this file private.\n")
        for name, value in env.items():
            f.write(f"{name}={shlex.quote(value)}\n")
