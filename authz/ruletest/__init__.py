"""`authz test`: rule test files (requests + fixtures + expected decisions), see
docs/rule-tests.md.

Every case runs against a fresh Authorizer (so result caches never leak between cases) whose
runtime is hermetic: datastores are in-memory stores filled from the case's fixtures, and the
HTTP client answers webhooks from canned replies (an httpx transport; nothing leaves the
process). Tokens are minted from `claims` with the config's primary key.
"""
