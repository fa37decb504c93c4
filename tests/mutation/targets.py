"""The security core `make mutate` covers, and the tests run against each module's mutants:
its unit tests first (fast kills), then the fast property and adversarial tests. Integration
tests (real Envoy, servers, PostgreSQL) are left out: too slow for one run per mutant."""

from __future__ import annotations

_U = "tests/unit/"
_RULES = [_U + "rules/test_rule_semantics.py", "tests/property/test_rules_reference.py"]
_MATCH, _LOGIC = _U + "rules/test_match.py", _U + "rules/test_logic.py"
_FIELDS, _DOCUMENTS = _U + "rules/test_fields.py", _U + "test_documents.py"
_PLAN, _REFS = _U + "test_plan.py", _U + "rules/test_refs.py"
_PARSE, _VERIFY = _U + "identity/test_parse.py", _U + "identity/test_verify.py"
_KEYS, _JWKS = _U + "identity/test_keys.py", _U + "identity/test_jwks.py"
_REQUEST, _NAMES = _U + "test_request.py", _U + "test_param_names.py"
_DECODE, _EXTPROC = _U + "envoy/test_decode.py", _U + "envoy/test_extproc.py"
_HTTP = _U + "envoy/http/"  # the HTTP transport

TARGETS: dict[str, list[str]] = {
    "authz/rules/match.py": [_MATCH, _LOGIC, *_RULES],
    "authz/rules/logic.py": [_LOGIC, _MATCH, *_RULES],
    "authz/rules/refs.py": [_REFS, _U + "rules/test_functions.py", _MATCH, *_RULES],
    "authz/rules/fields.py": [_FIELDS, _DOCUMENTS, _PLAN],
    "authz/documents.py": [_DOCUMENTS, _FIELDS, _PLAN],
    "authz/identity/parse.py": [_PARSE, _VERIFY, _U + "identity/test_extract.py"],
    "authz/identity/verify.py": [
        _VERIFY, _PARSE, _U + "identity/test_claims.py", _KEYS, _U + "identity/test_cache.py",
        _U + "identity/test_mint.py", _JWKS,
    ],
    "authz/identity/keys.py": [_KEYS, _VERIFY, _U + "identity/test_mint.py", _JWKS],
    "authz/identity/jwks.py": [_JWKS, _KEYS],
    "authz/request.py": [_REQUEST, _NAMES, _DECODE, "tests/property/test_pipeline.py"],
    "authz/param_names.py": [_NAMES, _REQUEST, _DECODE],
    "authz/plan.py": [_PLAN, _EXTPROC],
    "authz/envoy/extproc.py": [_EXTPROC, _PLAN],
    "authz/envoy/http/decode.py": [_HTTP + "test_decode.py", _HTTP + "test_server.py"],
}  # fmt: skip
