"""Importers: turn another system's configuration into an authz config."""
