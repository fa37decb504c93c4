"""Configuration: schema, environment interpolation, loading with path-exact errors.

Import from the modules (`authz.config.load`, `authz.config.schema`): this package imports
nothing itself, so the settings modules of other packages can use `authz.config.base`.
"""
