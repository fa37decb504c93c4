"""`python -m tests.mutation [MODULE ...] [--survivors]` (what `make mutate` runs).

Each mutant (tests/mutation/operators.py) of each module of TARGETS is written into a temporary
copy of the tree (one copy per job; the working tree is never changed) and that module's tests
run against it with `pytest -x`: a failing run kills the mutant. MUTATE_SECONDS bounds the whole
run (default 3600; mutants not reached are reported as such), MUTATE_JOBS the parallel jobs
(default 2). Mutants recorded in tests/mutation/equivalent.txt are not run. The summary goes to
tests/mutation/last-summary.json; `--survivors` reruns only the mutants it does not list as
killed (the survivors and new mutants).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.mutation.operators import Mutant, mutants
from tests.mutation.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
EQUIVALENT = HERE / "equivalent.txt"
SUMMARY = HERE / "last-summary.json"
_COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", ".*_cache", ".hypothesis", ".run", "build", "*.egg-info"
)


def load_equivalent() -> dict[str, str]:
    """key -> why, from the lines `KEY  # WHY` of equivalent.txt."""
    found: dict[str, str] = {}
    for line in EQUIVALENT.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, why = line.rpartition("  # ")
            found[key.strip()] = why.strip()
    return found


@dataclass
class Tally:
    mutants: int = 0
    killed: int = 0
    survived: list[Mutant] = field(default_factory=list)
    killed_keys: list[str] = field(default_factory=list)
    equivalent: int = 0
    not_run: int = 0
    timeouts: int = 0

    def score(self) -> float:
        judged = self.killed + len(self.survived)
        return 100.0 if judged == 0 else 100.0 * self.killed / judged


class Workspace:
    """One temporary copy of the tree that one job writes its mutants into."""

    def __init__(self, index: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"authz-mutate-{index}-"))
        shutil.copytree(ROOT, self.dir / "tree", ignore=_COPY_IGNORE)
        self.tree = self.dir / "tree"
        self.originals: dict[str, str] = {}

    def run(self, mutant: Mutant | None, module: str, tests: list[str], timeout: float) -> str:
        """'passed', 'failed' or 'timeout' for the tests against the mutant (None: the original)."""
        target = self.tree / module
        original = self.originals.setdefault(module, target.read_text())  # as copied
        if mutant is not None:
            target.write_text(mutant.source)
        _drop_bytecode(target)
        env = {**os.environ, "HYPOTHESIS_PROFILE": "mutate", "PYTHONDONTWRITEBYTECODE": ""}
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
               f"--basetemp={self.dir / 'tmp'}", *tests]  # fmt: skip
        try:
            proc = subprocess.run(cmd, cwd=self.tree, env=env, capture_output=True, timeout=timeout)
            return "passed" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            return "timeout"
        finally:
            target.write_text(original)
            _drop_bytecode(target)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _drop_bytecode(source: Path) -> None:
    """A mutant and the original can share size and mtime: never let Python reuse the .pyc."""
    for pyc in (source.parent / "__pycache__").glob(source.stem + ".*.pyc"):
        pyc.unlink(missing_ok=True)


class Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done, self.killed, self.survived = total, 0, 0, 0
        self.lock = threading.Lock()
        self.start = time.monotonic()

    def record(self, outcome: str) -> None:
        with self.lock:
            self.done += 1
            self.killed += outcome != "passed"
            self.survived += outcome == "passed"
            elapsed = time.monotonic() - self.start
            sys.stderr.write(
                f"\r[{self.done}/{self.total}] killed {self.killed} survived {self.survived}"
                f" {elapsed:.0f}s "
            )
            sys.stderr.flush()


def main(argv: list[str]) -> int:
    budget = float(os.environ.get("MUTATE_SECONDS", "3600"))
    jobs = int(os.environ.get("MUTATE_JOBS", "2"))
    only_survivors = "--survivors" in argv
    wanted = [a for a in argv if not a.startswith("--")]
    modules = [m for m in TARGETS if not wanted or any(w in m for w in wanted)]
    previous = json.loads(SUMMARY.read_text()) if only_survivors and SUMMARY.exists() else {}
    equivalent = load_equivalent()
    deadline = time.monotonic() + budget

    tallies = {m: Tally() for m in modules}
    queue: list[tuple[str, Mutant]] = []
    for module in modules:
        for mutant in mutants(module, (ROOT / module).read_text()):
            tallies[module].mutants += 1
            if mutant.key in equivalent:
                tallies[module].equivalent += 1
            elif only_survivors and mutant.key in previous.get(module, {}).get("killed", []):
                tallies[module].killed += 1  # killed in the previous run
                tallies[module].killed_keys.append(mutant.key)
            else:
                queue.append((module, mutant))

    workspaces = [Workspace(i) for i in range(jobs)]
    free = list(workspaces)
    lock = threading.Lock()
    timeouts = _baselines(workspaces[0], modules)
    progress = Progress(len(queue))

    def one(item: tuple[str, Mutant]) -> None:
        module, mutant = item
        tally = tallies[module]
        if time.monotonic() > deadline:
            with lock:
                tally.not_run += 1
            return
        with lock:
            ws = free.pop()
        try:
            outcome = ws.run(mutant, module, TARGETS[module], timeouts[module])
        finally:
            with lock:
                free.append(ws)
        with lock:
            if outcome == "passed":
                tally.survived.append(mutant)
            else:
                tally.killed += 1
                tally.killed_keys.append(mutant.key)
                tally.timeouts += outcome == "timeout"
        progress.record(outcome)

    try:
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, queue))
    finally:
        for ws in workspaces:
            ws.remove()
    sys.stderr.write("\n")
    print(report(tallies, time.monotonic() - progress.start))
    summary = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {}
    for m, t in tallies.items():
        if not t.not_run:
            summary[m] = {"survived": [s.key for s in t.survived], "killed": t.killed_keys}
    SUMMARY.write_text(json.dumps(summary, indent=1))
    short = [m for m, t in tallies.items() if t.score() < 97.0 or t.not_run]
    return 1 if short else 0


def _baselines(ws: Workspace, modules: list[str]) -> dict[str, float]:
    """Each module's tests must pass unmutated; a mutant gets 3x their time (+10 s) to finish."""
    timeouts: dict[str, float] = {}
    for module in modules:
        start = time.monotonic()
        if ws.run(None, module, TARGETS[module], 600) != "passed":
            raise SystemExit(f"the tests of {module} fail without a mutant: fix them first")
        timeouts[module] = 3 * (time.monotonic() - start) + 10
    return timeouts


def report(tallies: dict[str, Tally], seconds: float) -> str:
    lines = [f"{'module':<28} {'mutants':>7} {'killed':>6} {'survived':>8} {'equiv':>5}"
             f" {'not run':>7} {'killed %':>8}"]  # fmt: skip
    for module, t in tallies.items():
        name = module.removeprefix("authz/")
        lines.append(f"{name:<28} {t.mutants:>7} {t.killed:>6} {len(t.survived):>8}"
                     f" {t.equivalent:>5} {t.not_run:>7} {t.score():>7.1f}%")  # fmt: skip
    total = Tally(
        mutants=sum(t.mutants for t in tallies.values()),
        killed=sum(t.killed for t in tallies.values()),
        survived=[s for t in tallies.values() for s in t.survived],
        equivalent=sum(t.equivalent for t in tallies.values()),
        not_run=sum(t.not_run for t in tallies.values()),
    )
    lines.append(f"{'total':<28} {total.mutants:>7} {total.killed:>6} {len(total.survived):>8}"
                 f" {total.equivalent:>5} {total.not_run:>7} {total.score():>7.1f}%")  # fmt: skip
    lines.append(f"wall time {seconds:.0f}s")
    if total.survived:
        lines.append("\nsurvivors (kill with a test, or record in tests/mutation/equivalent.txt):")
        lines.extend(f"  {s}" for s in sorted(total.survived, key=lambda s: (s.path, s.line)))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
