"""The Grafana dashboard and the Prometheus alerts in deploy/monitoring/ name only metrics a
running `authz serve` really serves on /metrics (scraped, not read from the source), and
the alerts docs/monitoring.md promises are there."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import EXAMPLE_CONFIG, ROOT, start_authz

pytestmark = pytest.mark.integration

MONITORING = ROOT / "deploy" / "monitoring"
_NAME = re.compile(r"\b(authz[a-zA-Z0-9_:]*)")
# The series each metric type serves, besides its family name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def _alerts() -> dict:
    return yaml.safe_load((MONITORING / "alerts.yaml").read_text())


def _rules() -> list[dict]:
    return [rule for group in _alerts()["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dash = json.loads((MONITORING / "dashboard.json").read_text())
    return [t["expr"] for panel in dash["panels"] for t in panel["targets"]]


def _names(exprs: list[str]) -> set[str]:
    return {m for expr in exprs for m in _NAME.findall(expr)}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> set[str]:
    """Every series name /metrics serves (families with no sample yet included)."""
    server = start_authz(EXAMPLE_CONFIG, tmp_path_factory.mktemp("monitoring"))
    try:
        text = httpx.get(f"http://127.0.0.1:{server.http_port}/metrics", timeout=5).text
    finally:
        server.process.stop()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_every_metric_the_dashboard_and_alerts_name_is_served(served: set[str]) -> None:
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    exprs = _dashboard_exprs() + [rule["expr"] for rule in _rules()]
    used = _names(exprs)
    assert "authz_checks_total" in used and "authz_check_duration_seconds_bucket" in used
    missing = sorted(n for n in used if n not in served and n not in recorded)
    assert not missing, f"named in deploy/monitoring/ but not on /metrics: {missing}"


def test_the_alerts_cover_what_operators_need() -> None:
    alerts = {rule["alert"]: rule for rule in _rules() if "alert" in rule}
    assert set(alerts) >= {
        "AuthzDenialRateSpike", "AuthzDatastoreFailing", "AuthzAnswering503",
        "AuthzConfigReloadFailed", "AuthzCheckLatencyHigh", "AuthzTokenFailureSpike",
    }  # fmt: skip
    threshold = next(r for r in _rules() if r.get("record", "").endswith("threshold_seconds"))
    assert threshold["expr"] == "vector(0.005)"  # 5 ms unless the operator sets another
    for rule in alerts.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_the_monitoring_page_answers_for_every_panel() -> None:
    dash = json.loads((MONITORING / "dashboard.json").read_text())
    page = (ROOT / "docs" / "monitoring.md").read_text()
    for panel in dash["panels"]:
        assert f"**{panel['title']}**" in page, panel["title"]
    for rule in _rules():
        if "alert" in rule:
            assert f"`{rule['alert']}`" in page, rule["alert"]


def test_the_names_check_can_fail(served: set[str]) -> None:
    assert _names(["rate(authz_checks_totl[5m])"]) - served == {"authz_checks_totl"}
