"""`python -m tests.fuzz [TARGET ...]` (what `make fuzz` runs): each target under atheris for
FUZZ_SECONDS (default 60). New coverage-increasing inputs are merged into
tests/fuzz/corpus/<target>/, crashes saved to tests/fuzz/crashes/; a summary goes to
tests/fuzz/last-summary.json. Exit status 1 when any target found something."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.fuzz.targets import TARGETS, seeds

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CORPUS = HERE / "corpus"
CRASHES = HERE / "crashes"
SUMMARY = HERE / "last-summary.json"
_RUNS = re.compile(rb"Done (\d+) runs in")
_STAT_RUNS = re.compile(rb"#(\d+)\s")


def have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def seed_corpus(name: str) -> Path:
    corpus = CORPUS / name
    corpus.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(seeds(name)):
        path = corpus / f"seed-{i}"
        if not path.exists():
            path.write_bytes(data)
    return corpus


def save_new_inputs(work: Path, corpus: Path, keep: int = 200) -> None:
    """libFuzzer writes only coverage-increasing inputs to the work dir; keep the smallest
    `keep` of them, named by content hash. (libFuzzer's -merge=1 re-executes argv[0], which
    does not work for a `python -m` target.)"""
    new = sorted((p for p in work.iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
    for path in new[:keep]:
        data = path.read_bytes()
        target = corpus / hashlib.sha1(data).hexdigest()
        if not target.exists():
            target.write_bytes(data)


def run_target(name: str, seconds: float, merge: bool = True) -> dict[str, object]:
    """Fuzz one target in a child process (atheris never returns); bounded in time."""
    corpus = seed_corpus(name)
    CRASHES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as work:
        args = [sys.executable, "-m", "tests.fuzz.worker", name, work, str(corpus),
                f"-max_total_time={max(1, int(seconds))}", "-timeout=10", "-rss_limit_mb=2048",
                "-max_len=65536", f"-artifact_prefix={CRASHES}/{name}-",
                "-print_final_stats=1"]  # fmt: skip
        start = time.monotonic()
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, timeout=seconds + 120)
        elapsed = time.monotonic() - start
        out = proc.stdout + proc.stderr
        if merge:
            save_new_inputs(Path(work), corpus)
    runs = _RUNS.findall(out) or _STAT_RUNS.findall(out)
    result = {
        "target": name,
        "seconds": round(elapsed, 1),
        "executions": int(runs[-1]) if runs else 0,
        "exit": proc.returncode,
        "crashed": proc.returncode != 0,
        "corpus": len(list(corpus.iterdir())),
    }
    if proc.returncode != 0:
        tail = out.decode("utf-8", errors="replace").splitlines()[-40:]
        result["log"] = "\n".join(tail)
    return result


def main(argv: list[str]) -> int:
    if not have_atheris():
        print("make fuzz needs atheris, which is not installed in this environment "
              "(`.venv/bin/pip install atheris`; it ships wheels for CPython 3.11 on Linux "
              "x86-64). Nothing was fuzzed.", file=sys.stderr)  # fmt: skip
        return 2
    seconds = float(os.environ.get("FUZZ_SECONDS", "60"))
    names = argv or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        print(f"unknown fuzz targets {unknown}; known: {list(TARGETS)}", file=sys.stderr)
        return 2
    results = []
    for name in names:
        print(f"==> fuzzing {name} for {seconds:.0f}s", flush=True)
        result = run_target(name, seconds)
        results.append(result)
        status = "CRASH" if result["crashed"] else "ok"
        print(f"    {status}: {result['executions']} executions, corpus {result['corpus']}")
        if result["crashed"]:
            print(result.get("log", ""))
    summary = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "secondsPerTarget": seconds, "targets": results}  # fmt: skip
    SUMMARY.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    crashes = sum(1 for r in results if r["crashed"])
    total = sum(int(r["executions"]) for r in results)  # type: ignore[call-overload]
    print(f"fuzz: {total} executions, {crashes} crashing targets; summary in {SUMMARY}")
    return 1 if crashes else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
