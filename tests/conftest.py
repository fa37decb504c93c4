"""Hypothesis profiles. `make test` runs `ci`: derandomized (the same examples every run, so a
failure reproduces) and without an example database (nothing written into the tree that would
change later runs). HYPOTHESIS_PROFILE=explore (`make explore`) draws ten times as many random
examples; `mutate` (`make mutate`) a quarter, still derandomized. Tests scale their example
counts with `tests.helpers.examples`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

_COMMON = {"database": None, "deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=100, derandomize=True, **_COMMON)
settings.register_profile("explore", max_examples=1000, derandomize=False, **_COMMON)
settings.register_profile("mutate", max_examples=25, derandomize=True, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
# Hypothesis also caches what it finds in the code under test: outside the tree, like the rest.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "authz-hypothesis")
