"""authz: external authorization for Envoy with Space Cloud-style security rules."""

__version__ = "0.1.0"
