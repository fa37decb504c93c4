"""Envoy's side: decode CheckRequest, encode CheckResponse, ext_proc, bootstrap generation."""
