"""The mutator of `make mutate` (tests/mutation/operators.py): each operator makes the mutants
it claims, decorated functions included, and leaves annotations, docstrings and
`if TYPE_CHECKING:` alone."""

from __future__ import annotations

import textwrap

from tests.mutation.operators import mutants

SOURCE = textwrap.dedent(
    '''
    """Docstring 1."""
    import operator
    from typing import TYPE_CHECKING

    if TYPE_CHECKING:
        LIMIT = 5

    OPS = {"<": operator.lt, "==": operator.eq}


    @decorated
    def check(a: int, b: list[int] = None) -> bool:
        """Docstring 2."""
        if a < 8 and not b:
            raise ValueError("x")
        if a == 0:
            return
        return a >= 1
    '''
)


def test_the_mutants_of_each_operator():
    found = {(m.scope, m.before, m.after) for m in mutants("m.py", SOURCE)}
    assert found == {
        ("<module>", "{'<': operator.lt}", "{'<': operator.le}"),
        ("<module>", "{'==': operator.eq}", "{'==': operator.ne}"),
        ("<module>", "{'<': operator.lt, '==': operator.eq}",
         "{'<': operator.eq, '==': operator.lt}"),
        ("check", "a < 8 and (not b)", "a < 8 or not b"),
        ("check", "a < 8", "a <= 8"),
        ("check", "8", "9"),
        ("check", "not b", "b"),
        ("check", "raise ValueError('x')", "pass"),
        ("check", "a == 0", "a != 0"),
        ("check", "0", "1"),
        ("check", "return", "pass"),
        ("check", "a >= 1", "a > 1"),
        ("check", "1", "2"),
        ("check", "return a >= 1", "return None"),
    }  # fmt: skip


def test_a_mutant_is_the_whole_module_with_one_change():
    for m in mutants("m.py", SOURCE):
        compile(m.source, "m.py", "exec")
        assert m.source.count("Docstring") == 2
    flipped = next(m for m in mutants("m.py", SOURCE) if m.after == "a <= 8")
    assert "a <= 8 and (not b)" in flipped.source and "a == 0" in flipped.source
    assert str(flipped) == "m.py:15 check: `a < 8` -> `a <= 8`"
