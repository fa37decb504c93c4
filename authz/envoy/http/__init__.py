"""Envoy's ext_authz HTTP transport (`http_service`): the same Check as gRPC, carried as an
HTTP/1.1 authorization request and answered with prebuilt response bytes.

Only decode (request -> neutral Request) and encode (Decision -> response bytes) are new;
resolve, identify and evaluate are the Authorizer's, shared with gRPC."""
