"""`authz import spacecloud`: a Space Cloud project's remote services, secrets, AES key and
databases as an authz config (and an Envoy bootstrap), with a report of everything that could
not be carried over exactly (docs/migrating-from-space-cloud.md)."""
