"""One atheris run of one target: `python -m tests.fuzz.worker TARGET [libFuzzer args]`.
Run by `python -m tests.fuzz`; exits like libFuzzer (0: nothing found)."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["authz"]):
    from tests.fuzz import targets


def main() -> None:
    name = sys.argv[1]
    target = targets.TARGETS[name]

    def one(data: bytes) -> None:
        target(data)

    sys.setrecursionlimit(2000)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
