"""`authz test`: runs every case of every file and reports passes, failures and, asked for,
rule coverage and the evaluation tree of each failure."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz.config.schema import Config
from authz.rules.base import Rule
from authz.ruletest.fixtures import default_stores
from authz.ruletest.run import CaseResult, run_case
from authz.ruletest.spec import TestFileError, find_files, load_suite


def rule_paths(rule: Rule) -> list[str]:
    """Every rule and clause of a compiled rule tree, by config path, parents first."""
    out, stack = [], [rule]
    while stack:
        r = stack.pop()
        out.append(r.path)
        stack.extend(reversed(r.children()))
    return out


def all_rule_paths(config: Config) -> list[str]:
    from authz.authorizer import Authorizer

    return [p for ep in Authorizer(config).endpoints if ep.rule for p in rule_paths(ep.rule)]


@dataclass
class Totals:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    bad_files: int = 0


def run_tests(
    paths: Iterable[str],
    out: Callable[[str], None] = print,
    *,
    coverage: bool = False,
    explain: bool = False,
) -> int:
    """Run every case of every file; exit code 0 (all passed), 1 (failures), 2 (bad files)."""
    return asyncio.run(_run(find_files(paths), out, coverage, explain))


async def _run(files: list[Path], out: Callable[[str], None], coverage: bool, explain: bool) -> int:
    from authz.explain import explain_lines

    totals = Totals()
    seen: dict[Path, tuple[Config, set[str]]] = {}  # per config file: traced rule paths
    stores = default_stores()
    if not files:
        out("no rule test files found")
        totals.bad_files += 1
    for path in files:
        try:
            suite = load_suite(path)
        except TestFileError as exc:
            totals.bad_files += 1
            out(f"ERROR {path}:")
            out("\n".join(f"  {e}" for e in exc.errors))
            continue
        out(f"{path} (config {suite.spec.config})")
        traced = seen.setdefault(suite.config_path, (suite.config, set()))[1]
        for n, case in enumerate(suite.spec.cases):
            try:
                result, paths = await run_case(suite, case, n, stores)
            except TestFileError as exc:
                totals.bad_files += 1
                out("\n".join(f"  ERROR {e}" for e in exc.errors))
                continue
            traced.update(paths)
            _report(result, totals, out, explain_lines if explain else None)
    summary = f"{totals.passed} passed, {totals.failed} failed"
    if coverage:
        for config_path, (config, traced) in seen.items():
            _coverage(config_path, config, traced, out)
    out(summary + (f", {totals.skipped} skipped" if totals.skipped else ""))
    if totals.bad_files:
        return 2
    return 1 if totals.failed else 0


def _report(result: CaseResult, totals: Totals, out: Callable[[str], None], explain: Any) -> None:
    if result.outcome == "skip":
        totals.skipped += 1
        out(f"  SKIP  {result.name}: {'; '.join(result.problems)}")
        return
    if result.outcome == "pass":
        totals.passed += 1
        out(f"  PASS  {result.name}")
        return
    totals.failed += 1
    out(f"  FAIL  {result.name}")
    for line in result.problems:
        out(f"        {line}")
    d = result.decision
    if d is not None and explain is not None:
        out("\n".join(f"        {line}" for line in explain(d, result.rule)))
    elif d is not None:
        out(f"        decision: {'allowed' if d.allowed else f'denied {d.status}'} ({d.reason})")


def _coverage(path: Path, config: Config, traced: set[str], out: Callable[[str], None]) -> None:
    everything = all_rule_paths(config)
    missed = [p for p in everything if p not in traced]
    hit = len(everything) - len(missed)
    out(f"coverage of {_shown(path)}: {hit}/{len(everything)} rules and clauses evaluated")
    if missed:
        out("  never evaluated:")
        out("\n".join(f"    {p}" for p in missed))


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is under it (output that reads the
    same on every machine), else as it is."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
