"""The fuzz targets inside `make test`: every saved input (corpus, seeds and the reproducers
of past crashes, which must stay fixed) plus a few hundred seeded random mutations, in
process; then each target for ~2 s under atheris when it is installed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.fuzz.__main__ import CORPUS, CRASHES, have_atheris, run_target
from tests.fuzz.targets import TARGETS, seeds

RANDOM_INPUTS = 300


def saved_inputs(name: str) -> list[Path]:
    paths = sorted((CORPUS / name).glob("*")) if (CORPUS / name).is_dir() else []
    return paths + sorted(CRASHES.glob(f"{name}-*"))


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[pos % len(buf)] = rng.randrange(256)
        elif op == 1:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2:
            del buf[pos : pos + rng.randint(1, 16)]
        else:
            buf[pos:pos] = rng.choice([b"\xff", b"[", b"{", b"\x00", b"1e999", b'"', b"\\u"])
    return bytes(buf)


@pytest.mark.parametrize("name", list(TARGETS))
def test_saved_and_random_inputs(name: str) -> None:
    target = TARGETS[name]
    for path in saved_inputs(name):
        target(path.read_bytes())  # a finding raises with the file in the traceback
    rng = random.Random(f"smoke-{name}")
    pool = seeds(name)
    for _ in range(RANDOM_INPUTS):
        target(mutate(rng, rng.choice(pool)))


@pytest.mark.skipif(not have_atheris(), reason="atheris is not installed")
@pytest.mark.parametrize("name", list(TARGETS))
def test_atheris_runs_briefly_without_findings(name: str) -> None:
    result = run_target(name, 2, merge=False)
    assert not result["crashed"], result.get("log")
    assert int(result["executions"]) > 0  # type: ignore[call-overload]
