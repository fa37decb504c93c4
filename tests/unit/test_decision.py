"""authz.decision: the hand-written constructor behaves as the generated one did."""

from __future__ import annotations

import dataclasses

from authz.decision import Decision

LISTS = (
    "headers",
    "headers_to_remove",
    "query_parameters_to_set",
    "query_parameters_to_remove",
    "response_headers_to_add",
)


def test_defaults_are_fresh_lists_and_keywords_work():
    a, b = Decision(True), Decision(False, 403, "r", "m", "s", "e", "rid")
    for name in LISTS:
        assert getattr(a, name) == [] and getattr(a, name) is not getattr(b, name)
    a.headers.append(("k", "v"))
    assert Decision(True).headers == []
    d = Decision(allowed=True, headers=[("k", "v")], dry_run=True, plan={"v": 1})
    assert (d.status, d.reason, d.message, d.request_id) == (200, "", None, "")
    assert d.headers == [("k", "v")] and d.dry_run and d.plan == {"v": 1}


def test_every_field_is_a_constructor_parameter_in_field_order():
    values = {f.name: object() for f in dataclasses.fields(Decision)}
    d = Decision(*values.values())
    assert all(getattr(d, name) is v for name, v in values.items())
    assert Decision(**values) == d
    assert dataclasses.replace(d, status=418).status == 418
