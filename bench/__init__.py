"""`make bench`: Envoy alone, native jwt_authn + RBAC, ext_authz to a bare gRPC floor and to
authz, on 127.0.0.1, each load bounded in time. Run as `python -m bench`."""
